"""Transcription: audio files to MIDI files with one loaded model.

Models: :func:`load_transcriber` loads a registered or logged model (through
:mod:`pianotx.tracking`, imported only for MLflow URIs), an export of ``pianotx export``,
or the bundled model, with the feature and decoding config and the context length it
carries; :func:`transcribe_file` turns one audio file into a MIDI file with the one
feature function of :mod:`pianotx.features`, running the model in overlapping windows
(:mod:`pianotx.windows`); :func:`transcribe_files` does a batch.

A file is transcribed as a stream (:meth:`Transcriber.file_notes`): its features are
computed block by block as it is decoded, each batch of windows runs as soon as its
features are there, and the notes are decoded from the model's output as it comes
(:class:`pianotx.decoding.NoteStream`). Memory then stays flat in the audio's length
(neither its samples, its features nor its probability rolls are ever held whole), and
the notes are those of the whole-array path (:meth:`Transcriber.notes`) exactly.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pianotx.audio import AUDIO_EXTENSIONS, AudioError
from pianotx.callable_module import make_callable
from pianotx.config import ChunkConfig, DecodingConfig, FeatureConfig, from_dict, model_metadata, to_dict
from pianotx.decoding import NoteStream, decode_rolls, join_notes
from pianotx.errors import PianotxError
from pianotx.features import FeatureBlocks, stream_file_features
from pianotx.files import OutputError, atomic_path, write_json_atomic
from pianotx.locations import DEFAULT_URI, MODEL_NAME, Store, cache_dir, resolve_store
from pianotx.midi import Notes, write_midi
from pianotx.windows import predict_rolls, stream_rolls

BUNDLED_DIR = Path(__file__).resolve().parent / "bundled"
BUNDLED_MODEL = BUNDLED_DIR / f"{MODEL_NAME}.keras"


MODEL_SCHEMES = ("models", "runs", "mlflow-artifacts", "file")  # MLflow URIs pianotx loads


class ModelError(PianotxError, ValueError):
    """A model argument that names no usable model (the message says which and why)."""


# Context frames for models that do not say (saved before they did): the chunk length they
# were trained on.
DEFAULT_CONTEXT = ChunkConfig.chunk_frames

# How a transcription runs the model: output frames kept per window, and windows per call
# (see pianotx.windows.predict_rolls).
WINDOW_FRAMES = 2048
BATCH_WINDOWS = 4


@dataclass(frozen=True)
class Transcriber:
    """A loaded model with the settings it was trained with.

    Attributes:
        model: a ``keras.Model`` mapping (batch, time, n_bins) to (batch, time, 88).
        features: the feature config it was trained on (the one feature function).
        decoding: how its probabilities become notes (tuned with it, or overridden).
        source: the URI or path it came from.
        context: warm-up frames run and discarded on each side of a window: its training
            chunk length, since a bidirectional model trained on chunks of that length
            draws on up to that much context either way.
        architecture: the :class:`~pianotx.config.ModelConfig` it was built from, as a
            dict (``None`` for a model saved without it): what a search fine-tuning it
            keeps (:mod:`pianotx.tuning.initial`).
        label: how to name it to a person ("the bundled model", "models:/piano/Production
            (piano version 2)"); empty: :attr:`source`.
    """

    model: Any
    features: FeatureConfig
    decoding: DecodingConfig
    source: str
    context: int = DEFAULT_CONTEXT
    architecture: dict[str, Any] | None = None
    label: str = ""

    @property
    def name(self) -> str:
        """Which model this is, for a person: :attr:`label`, else :attr:`source`."""
        return self.label or self.source

    def probabilities(
        self, features: np.ndarray, progress: Callable[[float], None] | None = None
    ) -> dict[str, np.ndarray]:
        """(n_frames, n_bins) features -> ``{"frames": (n_frames, 88)[, "onsets": ...]}``
        probabilities (onsets when the model has an onset head); ``progress`` is called
        with the fraction done."""
        return predict_rolls(
            self.model.predict_on_batch, features, WINDOW_FRAMES, self.context, BATCH_WINDOWS, progress
        )

    def notes(self, features: np.ndarray, progress: Callable[[float], None] | None = None) -> Notes:
        """(n_frames, n_bins) features -> notes, decoded with this model's settings
        (onsets start notes when the model has them)."""
        rolls = self.probabilities(features, progress)
        return decode_rolls(rolls, self.features.frame_rate, self.decoding)

    def stream_notes(
        self, n_frames: int, blocks: FeatureBlocks, progress: Callable[[float], None] | None = None
    ) -> Notes:
        """:meth:`notes` of features that arrive block by block (``(start, rows)``, in
        order, ``n_frames`` in all): each batch of windows runs once its features are
        there and its probabilities are decoded at once, so only the windows in flight
        and the frames of the notes still sounding are held. The notes equal
        :meth:`notes`' on the same features exactly; ``progress`` is called with the
        fraction of windows done."""
        stream = NoteStream(self.features.frame_rate, self.decoding)
        rolls = stream_rolls(
            self.model.predict_on_batch, n_frames, blocks, WINDOW_FRAMES, self.context, BATCH_WINDOWS, progress
        )
        parts = [stream.push_rolls(rows) for _, rows in rolls]
        return join_notes([*parts, stream.finish()])

    def file_notes(self, audio: str | Path, progress: Callable[[float], None] | None = None) -> tuple[Notes, int]:
        """The notes of an audio file, transcribed as a stream: the file decoded, its
        features computed, the model run and its output decoded block by block, in
        memory that does not grow with the file's length. The notes are those of
        :meth:`notes` on :func:`pianotx.features.file_features` of the file, exactly.

        Args:
            audio: the audio file.
            progress: called with the fraction of the work done: the mean of the
                fractions of the file through the features and through the model,
                never going back, 1.0 at the end.

        Returns:
            (notes, n_samples of the file at the model's sample rate).

        Raises:
            AudioError: as :func:`pianotx.audio.load_audio`.
        """
        done = {"features": 0.0, "model": 0.0}
        shown = [0.0]

        def report(part: str, fraction: float) -> None:
            done[part] = fraction
            value = max(shown[0], (done["features"] + done["model"]) / 2)
            if progress is not None and value > shown[0]:
                progress(value)
            shown[0] = value

        def consume(n_frames: int, blocks: FeatureBlocks) -> Notes:
            done["model"] = 0.0  # a file read a second time (its header's length was wrong)
            return self.stream_notes(n_frames, blocks, lambda f: report("model", f))

        notes, n_samples = stream_file_features(audio, self.features, consume, lambda f: report("features", f))
        report("features", 1.0)
        return notes, n_samples

    def with_decoding(self, **changes: Any) -> Transcriber:
        """The same model with some decoding settings replaced (``None`` values ignored).

        Raises:
            ConfigError: an unknown setting or a value :class:`DecodingConfig` refuses.
        """
        given = {k: v for k, v in changes.items() if v is not None}
        decoding = from_dict(DecodingConfig, to_dict(self.decoding) | given, "decoding options")
        return dataclasses.replace(self, decoding=decoding)


def from_metadata(model: Any, meta: dict[str, Any], source: str) -> Transcriber:
    """A :class:`Transcriber` from a model and the metadata it was saved with.

    Raises:
        ConfigError: the metadata's feature or decoding config is malformed.
    """
    features = from_dict(FeatureConfig, meta["features"], f"{source} features")
    decoding = from_dict(DecodingConfig, meta.get("decoding"), f"{source} decoding")
    context = int(meta.get("context_frames", DEFAULT_CONTEXT))
    architecture = meta.get("model") if isinstance(meta.get("model"), dict) else None
    return Transcriber(model, features, decoding, source, context, architecture)


def load_local(path: str | Path) -> Transcriber:
    """A model exported by ``pianotx export``: ``NAME.keras`` beside ``NAME.json``.

    Raises:
        ModelError: either file is missing, the ``.json`` is not a pianotx model
            description, or the ``.keras`` is not a Keras model file.
    """
    import keras

    path = Path(path)
    if path.is_dir():
        path = path / "piano.keras"
    meta_path = path.with_suffix(".json")
    if not path.is_file() or not meta_path.is_file():
        raise ModelError(f"{path}: no model here (expected {path.name} and {meta_path.name})")
    try:
        meta = json.loads(meta_path.read_text())
        meta["features"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ModelError(f"{meta_path}: not a pianotx model description ({exc})") from exc
    if not zipfile.is_zipfile(path):
        raise ModelError(f"{path}: not a Keras model file (a .keras file is a zip archive)")
    import pianotx.model  # noqa: F401 - registers pianotx's layers and losses for loading

    try:
        model = keras.models.load_model(path, compile=False)
    except Exception as exc:  # Keras raises many types on a damaged or crafted file
        raise ModelError(f"{path}: Keras cannot load it ({_reason(exc)})") from exc
    return from_metadata(model, meta, str(path))


def _reason(exc: BaseException) -> str:
    """The first line of an exception's message, with its type: what Keras says is wrong
    (a safe-mode refusal, a missing layer), without its traceback or config dump."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    first = lines[0] if lines else "no reason given"
    return f"{type(exc).__name__}: {first[:300]}"


def _is_local(uri: str) -> bool:
    return uri.endswith(".keras") or (Path(uri).is_dir() and (Path(uri) / "piano.keras").is_file())


def _check_model_uri(uri: str) -> None:
    """Refuse what no loader takes: other URI schemes, paths holding no model.

    Raises:
        ModelError: naming the argument and what is accepted.
    """
    accepted = "give models:/NAME/STAGE, models:/NAME@ALIAS, runs:/ID/model or a .keras file"
    if ":/" in uri:
        scheme = uri.split(":/", 1)[0]
        if scheme not in MODEL_SCHEMES:
            raise ModelError(f"{uri}: pianotx cannot load a model from {scheme}: URIs; {accepted}")
    elif not (Path(uri) / "MLmodel").is_file():
        raise ModelError(f"{uri}: no model there; {accepted}")


def load_transcriber(uri: str | None, tracking_uri: str | None = None) -> Transcriber:
    """The model named by ``uri``; with none, ``models:/piano/Production`` when the store
    has it, else the small model bundled with the package.

    ``uri`` may be ``models:/NAME/STAGE``, ``models:/NAME@ALIAS``, ``models:/NAME/VERSION``,
    ``runs:/RUN_ID/model``, an MLflow model folder, or a ``.keras`` file exported by
    ``pianotx export`` (with its ``.json``). MLflow is imported only when the store is
    consulted: a ``.keras`` file, or no model with no store yet, never touches it.

    Raises:
        ModelError: a local model that is missing or malformed, or a URI of a kind
            MLflow does not load models from.
        TrackingError: an MLflow URI that does not resolve.
    """
    if uri is not None and _is_local(uri):
        return load_local(uri)
    if uri is not None:
        _check_model_uri(uri)
    store = resolve_store(tracking_uri)
    if uri is None and not store.exists:
        return load_bundled()
    cached = _from_cache(store, uri or DEFAULT_URI)
    if isinstance(cached, Transcriber):
        return cached
    if cached == "none":
        return load_bundled()
    from pianotx import tracking

    before = _store_state(store)
    if uri is None and not tracking.has_model(store, DEFAULT_URI):
        _to_cache(store, DEFAULT_URI, before, None)
        return load_bundled()
    uri = uri or DEFAULT_URI
    model, meta = tracking.load_model(store, uri)
    transcriber = dataclasses.replace(from_metadata(model, meta, uri), label=_registered_label(store, uri))
    _to_cache(store, uri, before, transcriber)
    return transcriber


BUNDLED_LABEL = "the bundled model"


def load_bundled() -> Transcriber:
    """The model shipped inside the package."""
    return dataclasses.replace(load_local(BUNDLED_MODEL), label=BUNDLED_LABEL)


def _registered_label(store: Store, uri: str) -> str:
    """``uri`` with the registered version it resolves to (``models:/piano/Production
    (piano version 2)``); ``uri`` alone where it names no registered version."""
    from pianotx import tracking

    try:
        found = tracking.model_version(store, uri)
    except Exception:  # a name for a person: never a reason to fail
        found = {}
    if "model_version" not in found:
        return uri
    return f"{uri} ({found['model_name']} version {found['model_version']})"


# Resolved MLflow URIs of a local store are kept as exports under the cache folder, each
# valid for the state of the store's file it was resolved from (its size and mtime: any
# registration, stage move or logged run changes them): a repeated `pianotx transcribe
# --model models:/...` then loads the export without importing MLflow.
MODEL_CACHE = "models"
CACHE_STATE = "state.json"


def _store_state(store: Store) -> dict[str, int] | None:
    """The state of a local store's SQLite file (None: not a local store)."""
    db = store.local_path
    if db is None or not db.is_file():
        return None
    stat = db.stat()
    return {"mtime_ns": stat.st_mtime_ns, "size": stat.st_size}


def _cache_folder(store: Store, uri: str) -> Path:
    db = store.local_path
    key = hashlib.sha256(f"{db.resolve() if db else store.tracking_uri}\n{uri}".encode()).hexdigest()[:24]
    return cache_dir() / MODEL_CACHE / key


def _from_cache(store: Store, uri: str) -> Transcriber | str | None:
    """The cached model of ``uri`` if the store is as it was when it was resolved;
    ``"none"`` where ``uri`` then resolved to no model; None: not cached (or stale)."""
    if not uri.startswith(("models:/", "runs:/")):
        return None
    state = _store_state(store)
    folder = _cache_folder(store, uri)
    try:
        saved = json.loads((folder / CACHE_STATE).read_text())
    except (OSError, ValueError):
        return None
    if state is None or saved.get("store") != state:
        return None
    if not saved.get("model"):
        return "none"
    try:
        return dataclasses.replace(load_local(folder / "piano.keras"), source=uri, label=str(saved.get("label") or uri))
    except ModelError:
        return None


def _to_cache(store: Store, uri: str, before: dict[str, int] | None, transcriber: Transcriber | None) -> None:
    """Keep ``transcriber`` (None: no model) as what ``uri`` resolves to, if the store
    did not change while it was loaded. A cache that cannot be written is skipped."""
    if before is None or _store_state(store) != before or not uri.startswith(("models:/", "runs:/")):
        return
    folder = _cache_folder(store, uri)
    try:
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        if transcriber is not None:
            export(transcriber, folder)
        label = transcriber.label if transcriber is not None else ""
        write_json_atomic(
            folder / CACHE_STATE, {"uri": uri, "store": before, "model": transcriber is not None, "label": label}
        )
    except OSError:
        shutil.rmtree(folder, ignore_errors=True)


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


def export(transcriber: Transcriber, out_dir: Path, name: str = MODEL_NAME) -> Path:
    """Write ``NAME.keras`` and ``NAME.json`` (feature and decoding config) to ``out_dir``.

    Only an earlier export of the same name is replaced (see :func:`check_export_target`).
    """
    import keras

    check_export_target(out_dir, name)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{name}.keras"
    plain = keras.Model.from_config(transcriber.model.get_config())  # uncompiled: no optimizer state
    plain.set_weights(transcriber.model.get_weights())
    extra = {"model": transcriber.architecture} if transcriber.architecture else {}
    meta = model_metadata(
        transcriber.features, transcriber.decoding, transcriber.context, source=transcriber.source, **extra
    )
    with atomic_path(target) as tmp:
        plain.save(tmp)
        write_json_atomic(out_dir / f"{name}.json", meta)
    return target


@dataclass(frozen=True)
class FileResult:
    """What became of one input: its MIDI file, a one-line error, or why it was skipped."""

    audio: Path
    midi: Path | None
    notes: int = 0
    audio_seconds: float = 0.0
    seconds: float = 0.0  # processing time
    error: str = ""
    skipped: str = ""  # the MIDI file is there and pianotx did not write it


# Every MIDI file pianotx writes carries a text meta event starting with this, naming the
# model; a file without one is the user's and is never replaced without --overwrite.
MIDI_MARK = "pianotx "


def midi_mark(transcriber: Transcriber) -> str:
    """The text meta event written into each transcription: which model made it."""
    from pianotx import __version__

    return f"{MIDI_MARK}{__version__} transcription with {transcriber.name}"


def written_by_pianotx(path: Path) -> bool:
    """Whether the MIDI file ``path`` carries pianotx's mark (see :data:`MIDI_MARK`)."""
    import mido

    try:
        midi = mido.MidiFile(str(path))
    except Exception:  # not a MIDI file pianotx could have written
        return False
    return any(
        message.is_meta and message.type == "text" and message.text.startswith(MIDI_MARK)
        for track in midi.tracks[:1]
        for message in track
    )


def output_path(audio: Path, out_dir: Path | None) -> Path:
    """Where the MIDI of ``audio`` goes: ``OUT_DIR/NAME.mid``, or beside the audio."""
    return (out_dir or audio.parent) / f"{audio.stem}.mid"


def transcribe_file(
    transcriber: Transcriber,
    audio: Path,
    out_dir: Path | None,
    overwrite: bool = False,
    progress: Callable[[float], None] | None = None,
) -> FileResult:
    """Transcribe one file to :func:`output_path` (its folder created if needed).

    A MIDI file already there is replaced only when pianotx wrote it (its mark) or
    ``overwrite`` is set; otherwise the input is skipped before any work.

    Args:
        transcriber: the loaded model.
        audio: the audio file.
        out_dir: where ``NAME.mid`` goes; ``None``: beside ``audio``.
        overwrite: replace a MIDI file pianotx did not write.
        progress: called with the fraction of the file done (see
            :meth:`Transcriber.file_notes`).

    Never raises for a bad file: the result carries a one-line ``error`` instead.
    """
    start = time.perf_counter()
    target = output_path(audio, out_dir)
    step = progress or (lambda _fraction: None)
    if not overwrite and target.exists() and not written_by_pianotx(target):
        return FileResult(audio, None, skipped=f"{target} is there and pianotx did not write it")
    try:
        notes, n_samples = transcriber.file_notes(audio, step)
        target.parent.mkdir(parents=True, exist_ok=True)
        write_midi(notes, target, text=midi_mark(transcriber))
    except AudioError as exc:
        return FileResult(audio, None, error=str(exc))
    except OSError as exc:
        return FileResult(audio, None, error=f"cannot write {target} ({exc.strerror or exc})")
    except Exception as exc:  # one bad file must not stop the batch
        return FileResult(audio, None, error=f"{type(exc).__name__}: {exc}")
    seconds = n_samples / transcriber.features.sample_rate
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


def check_out_dir(out_dir: Path | None) -> None:
    """Refuse an output folder that is a file or lies under one (nothing is created).

    Raises:
        OutputError: naming the path.
    """
    if out_dir is None:
        return
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError(f"{out_dir}: cannot create output folder (File exists)")
    for folder in out_dir.resolve().parents:
        if folder.exists() and not folder.is_dir():
            raise OutputError(f"{out_dir}: cannot create output folder ({folder} is a file)")


def transcribe_files(
    inputs: list[Path],
    out_dir: Path | None = None,
    model: str | None = None,
    tracking_uri: str | None = None,
    decoding: dict[str, Any] | None = None,
    report: Callable[[FileResult], None] = lambda _result: None,
    progress: bool = False,
    overwrite: bool = False,
    announce: Callable[[Transcriber], None] = lambda _transcriber: None,
) -> list[FileResult]:
    """``pianotx transcribe``: load ``model`` once (see :func:`load_transcriber`), with
    ``decoding`` settings overriding its own (``None`` values ignored), ``announce`` it,
    and :func:`transcribe_batch` the audio files of ``inputs`` (folders searched) with it.

    Raises:
        OutputError: ``out_dir`` is a file or under one; no audio file in ``inputs``.
        FileNotFoundError, ValueError, TrackingError: the model cannot be loaded, or a
            decoding value is refused.
    """
    check_out_dir(out_dir)
    files = expand_inputs(inputs)
    if not files:
        raise OutputError("no audio files found in " + ", ".join(map(str, inputs)))
    transcriber = load_transcriber(model, tracking_uri).with_decoding(**(decoding or {}))
    announce(transcriber)
    return transcribe_batch(transcriber, files, out_dir, report, progress, overwrite)


def transcribe_batch(
    transcriber: Transcriber,
    files: list[Path],
    out_dir: Path | None,
    report: Callable[[FileResult], None] = lambda _result: None,
    progress: bool = False,
    overwrite: bool = False,
) -> list[FileResult]:
    """Transcribe audio ``files`` (see :func:`expand_inputs`) with one model.

    Two inputs that would write the same MIDI file are an error for the second (the
    first is kept); each file's outcome goes to ``report`` as soon as it is known. The
    output folder is created only when a MIDI file is written into it.

    Args:
        transcriber: the loaded model.
        files: audio files.
        out_dir: where ``NAME.mid`` goes (checked by :func:`check_out_dir`); ``None``:
            beside each input.
        report: called with each :class:`FileResult`, in order (while the bars are
            shown, what it prints to ``sys.stdout`` or ``sys.stderr`` appears above them).
        progress: show a bar over the files and one within the current file on the
            terminal.
        overwrite: replace MIDI files pianotx did not write (see :func:`transcribe_file`).

    Returns:
        One result per audio file, in order.
    """
    from rich.progress import Progress

    results, targets = [], set()
    with Progress(transient=True, disable=not progress) as bar:
        task = bar.add_task(f"{len(files)} file{'s' if len(files) != 1 else ''}", total=len(files))
        within = bar.add_task("", total=1.0, visible=False)
        for path in files:
            target = output_path(path, out_dir).resolve()
            if target in targets:
                result = FileResult(path, None, error=f"{target} is already written by another input of this batch")
            else:
                targets.add(target)
                bar.reset(within, total=1.0, description=path.name, visible=True)
                result = transcribe_file(
                    transcriber, path, out_dir, overwrite, lambda done: bar.update(within, completed=done)
                )
                bar.update(within, visible=False)
            bar.advance(task)
            results.append(result)
            report(result)
    return results


# `pianotx.transcribe(...)` is the API function (see pianotx.callable_module).
make_callable(__name__, "transcribe")
