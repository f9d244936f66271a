"""Transcription of long audio in overlapping windows, with no seam.

The LSTM needs warm-up context: probabilities are up to ~0.1 off near the start of an
input. So the input is cut into windows that each keep ``window`` output frames and
also run ``context`` frames on each side that are computed and discarded (clipped at
the very start and end of the input). The kept ranges tile ``[0, n_frames)``.

Pure helpers: :func:`plan_windows` (where to cut), :func:`batch_windows` (equal-length
batches for a batched predict), :func:`stitch` (kept parts back into one roll).
:func:`predict_frames` runs a model over them with bounded memory.

Models: :func:`load_transcriber` loads a registered or logged model (through
:mod:`pianotx.tracking`), an export of ``pianotx export``, or the bundled model, with
the feature and decoding config it carries; :func:`transcribe_file` turns one audio
file into a MIDI file with the one feature function of :mod:`pianotx.features`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pianotx.audio import AUDIO_EXTENSIONS, AudioError, load_audio
from pianotx.config import N_KEYS, FeatureConfig, from_dict, to_dict
from pianotx.decoding import DecodingConfig, decode
from pianotx.features import compute_features
from pianotx.files import OutputError, atomic_path, write_json_atomic
from pianotx.midi import write_midi


@dataclass(frozen=True)
class Window:
    """One model input and the part of its output that is kept (absolute frames).

    ``start <= keep_start < keep_stop <= stop``; output row ``i`` of the window is
    absolute frame ``start + i``.
    """

    start: int  # first input frame fed to the model
    stop: int  # one past the last input frame
    keep_start: int  # first output frame kept
    keep_stop: int  # one past the last output frame kept


def plan_windows(n_frames: int, window: int, context: int) -> list[Window]:
    """Cut ``n_frames`` into windows keeping ``window`` frames each (the last fewer).

    Args:
        n_frames: input length in frames (>= 0).
        window: kept frames per window (>= 1).
        context: warm-up frames run and discarded on each side (>= 0); none before
            frame 0 or after the last frame.

    Returns:
        Windows in order; kept ranges ``[i * window, min((i + 1) * window, n_frames))``
        tile ``[0, n_frames)`` with no gap or overlap. ``n_frames == 0`` gives ``[]``.
    """
    if n_frames < 0 or window < 1 or context < 0:
        raise ValueError("need n_frames >= 0, window >= 1, context >= 0")
    windows = []
    for keep_start in range(0, n_frames, window):
        keep_stop = min(keep_start + window, n_frames)
        windows.append(
            Window(
                start=max(keep_start - context, 0),
                stop=min(keep_stop + context, n_frames),
                keep_start=keep_start,
                keep_stop=keep_stop,
            )
        )
    return windows


def batch_windows(features: np.ndarray, windows: list[Window]) -> np.ndarray:
    """Window inputs stacked for a batched predict, zero-padded at the end.

    Zero features are silence (see :class:`pianotx.config.FeatureConfig`). Padding comes
    after each window's input, so a forward (causal) LSTM's outputs for the real frames
    are unchanged; :func:`stitch` ignores the padded rows.

    Args:
        features: (n_frames, n_features) array.
        windows: from :func:`plan_windows` for ``n_frames``.

    Returns:
        (len(windows), max window length, n_features) array of ``features``' dtype;
        ``(0, 0, n_features)`` for no windows.
    """
    length = max((w.stop - w.start for w in windows), default=0)
    batch = np.zeros((len(windows), length, features.shape[1]), features.dtype)
    for i, w in enumerate(windows):
        batch[i, : w.stop - w.start] = features[w.start : w.stop]
    return batch


def stitch(
    windows: list[Window],
    outputs: Iterable[np.ndarray],
    n_frames: int,
    n_keys: int = N_KEYS,
) -> np.ndarray:
    """Kept parts of each window's output, copied into one roll.

    Args:
        windows: from :func:`plan_windows`.
        outputs: one per window, in order: (stop - start, n_keys) array, or longer
            (padded rows after the window's input, as from :func:`batch_windows`, are
            ignored). A batched (n_windows, length, n_keys) array works too.
        n_frames: length of the result.
        n_keys: width of each output.

    Returns:
        (n_frames, n_keys) float32.

    Raises:
        ValueError: the number of outputs differs from the number of windows, or an
            output is too short or has the wrong width.
    """
    roll = np.zeros((n_frames, n_keys), np.float32)
    for i, (w, out) in enumerate(zip(windows, outputs, strict=True)):
        out = np.asarray(out)
        if out.ndim != 2 or out.shape[0] < w.stop - w.start or out.shape[1] != n_keys:
            raise ValueError(f"output {i} has shape {out.shape}, need ({w.stop - w.start}, {n_keys})")
        roll[w.keep_start : w.keep_stop] = out[w.keep_start - w.start : w.keep_stop - w.start]
    return roll


def predict_frames(
    predict_batch: Callable[[np.ndarray], np.ndarray],
    features: np.ndarray,
    window: int = 2048,
    context: int = 512,
    batch_size: int = 8,
) -> np.ndarray:
    """Frame probabilities of a whole piece, computed window by window.

    Working memory is bounded by ``batch_size`` windows whatever the piece's length.

    Args:
        predict_batch: maps (batch, frames, n_bins) float32 to (batch, frames, 88),
            e.g. a Keras model's ``predict_on_batch``.
        features: (n_frames, n_bins) float32.
        window: output frames kept per window.
        context: warm-up frames computed and discarded on each side of a window. The
            default is the training chunk length: a bidirectional model trained on
            512-frame chunks draws on up to that much context either way (measured: with
            256 a bundled model's outputs moved by up to 0.2 on real music).
        batch_size: windows per call of ``predict_batch``.

    Returns:
        (n_frames, 88) float32 probabilities.
    """
    windows = plan_windows(len(features), window, context)
    outputs: list[np.ndarray | None] = [None] * len(windows)
    # Only windows of one length share a batch: padding a shorter one would feed a
    # bidirectional model's backward pass frames that do not exist (0.55 off at the end).
    by_length: dict[int, list[int]] = {}
    for i, w in enumerate(windows):
        by_length.setdefault(w.stop - w.start, []).append(i)
    for indices in by_length.values():
        for k in range(0, len(indices), batch_size):
            group = indices[k : k + batch_size]
            batch = np.asarray(predict_batch(batch_windows(features, [windows[i] for i in group])))
            for i, out in zip(group, batch):
                outputs[i] = out
    return stitch(windows, outputs, len(features))


BUNDLED_DIR = Path(__file__).resolve().parent / "bundled"
BUNDLED_MODEL = BUNDLED_DIR / "piano.keras"
DEFAULT_URI = "models:/piano/Production"


@dataclass(frozen=True)
class Transcriber:
    """A loaded model with the feature and decoding settings it was trained with."""

    model: Any  # keras.Model
    features: FeatureConfig
    decoding: DecodingConfig
    source: str  # the URI or path it came from

    def probabilities(self, features: np.ndarray) -> np.ndarray:
        """(n_frames, n_bins) features -> (n_frames, 88) frame probabilities."""
        return predict_frames(self.model.predict_on_batch, features)


def _from_metadata(model: Any, meta: dict[str, Any], source: str) -> Transcriber:
    features = from_dict(FeatureConfig, meta["features"], f"{source} features")
    decoding = from_dict(DecodingConfig, meta.get("decoding"), f"{source} decoding")
    return Transcriber(model, features, decoding, source)


def load_local(path: str | Path) -> Transcriber:
    """A model exported by ``pianotx export``: ``NAME.keras`` beside ``NAME.json``."""
    import keras

    path = Path(path)
    if path.is_dir():
        path = path / "piano.keras"
    meta_path = path.with_suffix(".json")
    if not path.is_file() or not meta_path.is_file():
        raise FileNotFoundError(f"{path}: no model here (expected {path.name} and {meta_path.name})")
    try:
        meta = json.loads(meta_path.read_text())
        meta["features"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{meta_path}: not a pianotx model description ({exc})") from exc
    return _from_metadata(keras.models.load_model(path, compile=False), meta, str(path))


def load_transcriber(uri: str | None, store: Any) -> Transcriber:
    """The model named by ``uri``; with none, ``models:/piano/Production`` when the store
    has it, else the small model bundled with the package.

    ``uri`` may be ``models:/NAME/STAGE``, ``models:/NAME@ALIAS``, ``models:/NAME/VERSION``,
    ``runs:/RUN_ID/model``, an MLflow model folder, or a ``.keras`` file exported by
    ``pianotx export`` (with its ``.json``).
    """
    from pianotx import tracking

    if uri is None:
        if tracking.has_model(store, DEFAULT_URI):
            uri = DEFAULT_URI
        else:
            return load_local(BUNDLED_MODEL)
    if uri.endswith(".keras") or (Path(uri).is_dir() and (Path(uri) / "piano.keras").is_file()):
        return load_local(uri)
    model, meta = tracking.load_model(store, uri)
    return _from_metadata(model, meta, uri)


def is_export(meta_path: Path) -> bool:
    """Whether ``meta_path`` is the ``.json`` of a pianotx export (it names features)."""
    try:
        return isinstance(json.loads(meta_path.read_text()).get("features"), dict)
    except (OSError, ValueError, AttributeError):
        return False


def check_export_target(out_dir: Path, name: str) -> None:
    """Refuse to write ``NAME.keras``/``NAME.json`` over files pianotx did not export.

    Raises:
        OutputError: ``out_dir`` is a file or under one, or ``NAME.keras`` or ``NAME.json``
            exists without ``NAME.json`` being a pianotx model description.
    """
    for folder in (out_dir, *out_dir.parents):
        if folder.exists() and not folder.is_dir():
            raise OutputError(f"{out_dir}: {folder} is a file, not a folder")
    model, meta = out_dir / f"{name}.keras", out_dir / f"{name}.json"
    if (model.exists() or meta.exists()) and not is_export(meta):
        taken = model if model.exists() else meta
        raise OutputError(f"{taken}: exists and is not a pianotx export; choose another folder or --name")


def export(transcriber: Transcriber, out_dir: Path, name: str = "piano") -> Path:
    """Write ``NAME.keras`` and ``NAME.json`` (feature and decoding config) to ``out_dir``.

    Only an earlier export of the same name is replaced (see :func:`check_export_target`).
    """
    import keras

    check_export_target(out_dir, name)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{name}.keras"
    plain = keras.Model.from_config(transcriber.model.get_config())  # uncompiled: no optimizer state
    plain.set_weights(transcriber.model.get_weights())
    meta = {
        "features": to_dict(transcriber.features),
        "decoding": to_dict(transcriber.decoding),
        "source": transcriber.source,
    }
    with atomic_path(target) as tmp:
        plain.save(tmp)
        write_json_atomic(out_dir / f"{name}.json", meta)
    return target


@dataclass(frozen=True)
class FileResult:
    audio: Path
    midi: Path | None
    notes: int = 0
    audio_seconds: float = 0.0
    seconds: float = 0.0  # processing time
    error: str = ""


def transcribe_file(transcriber: Transcriber, audio: Path, out_dir: Path | None) -> FileResult:
    """Transcribe one file to ``OUT_DIR/NAME.mid`` (beside the audio when no folder).

    Never raises for a bad file: the result carries a one-line ``error`` instead.
    """
    start = time.perf_counter()
    target = (out_dir or audio.parent) / f"{audio.stem}.mid"
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        samples = load_audio(audio, transcriber.features.sample_rate)
        features = compute_features(samples, transcriber.features)
        notes = decode(transcriber.probabilities(features), transcriber.features.frame_rate, transcriber.decoding)
        write_midi(notes, target)
    except AudioError as exc:
        return FileResult(audio, None, error=str(exc))
    except OSError as exc:
        return FileResult(audio, None, error=f"cannot write {target} ({exc.strerror or exc})")
    except Exception as exc:  # one bad file must not stop the batch
        return FileResult(audio, None, error=f"{type(exc).__name__}: {exc}")
    seconds = len(samples) / transcriber.features.sample_rate
    return FileResult(audio, target, len(notes), seconds, time.perf_counter() - start)


def expand_inputs(paths: list[Path]) -> list[Path]:
    """Files as given; folders replaced by the audio files under them (sorted)."""
    out: list[Path] = []
    for path in paths:
        if path.is_dir():
            out += sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS)
        else:
            out.append(path)
    return out
