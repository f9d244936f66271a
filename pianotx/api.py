"""The Python API: thin fronts to what the command line calls, for notebooks and scripts.

``import pianotx`` stays cheap: these are loaded on first use (see ``pianotx/__init__.py``)
and TensorFlow is imported only when a model is loaded.

Example::

    import pianotx

    notes = pianotx.transcribe("song.wav")             # the default model, as `pianotx transcribe`
    notes.intervals[:3], notes.pitches[:3]             # seconds, MIDI pitches
    model = pianotx.load_model("models:/piano@champion")
    notes = pianotx.transcribe(samples, model=model, sample_rate=44100)
    scores = pianotx.evaluate("data/default", model="models:/piano/Production")
    scores["mean"]["note_f1"]
    data = pianotx.Dataset("data/default")
    data.splits, data.pieces("test")[0]["name"]
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pianotx.config import FeatureConfig

if TYPE_CHECKING:
    from pianotx.midi import Notes
    from pianotx.store import Manifest
    from pianotx.transcribe import Transcriber


def load_model(uri: str | None = None, tracking_uri: str | None = None) -> Transcriber:
    """A model, as ``pianotx transcribe --model`` takes it.

    Args:
        uri: ``models:/NAME/STAGE``, ``models:/NAME@ALIAS``, ``models:/NAME/VERSION``,
            ``runs:/RUN_ID/model``, a ``.keras`` export, or ``None``:
            ``models:/piano/Production`` when registered, else the bundled model.
        tracking_uri: the MLflow store (default: ``MLFLOW_TRACKING_URI``, else ``mlruns/``).

    Returns:
        A :class:`~pianotx.transcribe.Transcriber`: the Keras model (``.model``), its
        feature and decoding config, and ``.name`` (which model it is).

    Raises:
        ModelError, TrackingError: no such model.
    """
    from pianotx.transcribe import load_transcriber

    return load_transcriber(uri, tracking_uri)


def transcribe(
    audio: str | Path | np.ndarray,
    model: str | Transcriber | None = None,
    sample_rate: int | None = None,
) -> Notes:
    """Notes of one recording.

    Args:
        audio: an audio file (any format ``pianotx transcribe`` reads), or samples:
            (n,) mono or (n, channels), float in [-1, 1], with ``sample_rate``.
        model: a loaded model (:func:`load_model`), a URI as :func:`load_model` takes,
            or ``None`` for the default model.
        sample_rate: the samples' rate in Hz (only with samples).

    Returns:
        :class:`~pianotx.midi.Notes`: ``intervals`` (n, 2) onset and offset seconds,
        ``pitches`` (n,) MIDI numbers, ``velocities`` (n,).

    Raises:
        AudioError: the file cannot be read.
        ValueError: samples without ``sample_rate``, or not 1-D / 2-D.
    """
    from pianotx.features import compute_features, file_features
    from pianotx.transcribe import Transcriber

    transcriber = model if isinstance(model, Transcriber) else load_model(model)
    if isinstance(audio, (str, Path)):
        features, _ = file_features(Path(audio), transcriber.features)
    else:
        features = compute_features(_prepared(audio, sample_rate, transcriber.features), transcriber.features)
    return transcriber.notes(features)


def _prepared(samples: np.ndarray, sample_rate: int | None, features: FeatureConfig) -> np.ndarray:
    """Samples as the feature function takes them: mono float32 at the model's rate,
    resampled with the resampler files are read with."""
    samples = np.asarray(samples, dtype=np.float32)
    if sample_rate is None:
        raise ValueError("transcribe: samples need their sample_rate")
    if samples.ndim == 2:
        samples = samples.mean(axis=1, dtype=np.float32)
    elif samples.ndim != 1:
        raise ValueError(f"transcribe: samples must be (n,) or (n, channels), not shape {samples.shape}")
    if sample_rate != features.sample_rate:
        import soxr

        from pianotx.audio import QUALITY

        samples = soxr.resample(samples, sample_rate, features.sample_rate, quality=QUALITY).astype(np.float32)
    return samples


def evaluate(
    dataset: str | Path, model: str | None = None, split: str | None = None, log: bool = False
) -> dict[str, Any]:
    """``pianotx evaluate``: mir_eval scores of a model on a dataset split.

    Args:
        dataset: a folder built by ``pianotx data build``.
        model: a model URI or ``.keras`` export (``None``: the default model).
        split: ``train``, ``validation`` or ``test`` (``None``: ``test``).
        log: also log an ``evaluation`` run to MLflow, as the command does.

    Returns:
        ``{"per_piece": [...], "mean": {"note_f1": ..., "frame_f1": ..., ...}, ...}``.
    """
    from pianotx.evaluate import evaluate_model

    report, _run_id = evaluate_model(dataset, model, split, None, None, log)
    return report


class Dataset:
    """A dataset built by ``pianotx data build``, opened read-only.

    Example::

        data = pianotx.Dataset("data/default")
        data.splits                       # {"train": 1152, "validation": 72, "test": 18}
        piece = data.pieces("test")[0]
        features, frames, onsets = data.arrays(piece)
        data.notes(piece)                 # its aligned reference notes

    Raises:
        DatasetError: no dataset there, or one of another version.
    """

    def __init__(self, folder: str | Path):
        from pianotx.store import load_manifest

        self.folder = Path(folder)
        self.manifest: Manifest = load_manifest(self.folder)

    def __repr__(self) -> str:
        return f"Dataset({str(self.folder)!r}, {self.splits})"

    @property
    def features(self) -> FeatureConfig:
        """The feature config every piece was computed with."""
        return self.manifest.features

    @cached_property
    def splits(self) -> dict[str, int]:
        """Included pieces per split."""
        return {split: len(self.manifest.pieces(split)) for split in ("train", "validation", "test")}

    def pieces(self, split: str | None = None) -> list[dict[str, Any]]:
        """The records of the included pieces (of one split, or all): name, split,
        source, audio, alignment, ..."""
        return self.manifest.pieces(split)

    def arrays(self, piece: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """A whole piece: (n_frames, n_bins) features, (n_frames, 88) frames and onsets."""
        from pianotx.store import SplitArrays

        return SplitArrays(self.manifest, piece["split"]).piece(piece)

    def notes(self, piece: dict[str, Any]) -> Notes:
        """A piece's aligned reference notes (seconds on its audio's clock)."""
        from pianotx.store import SplitArrays

        return SplitArrays(self.manifest, piece["split"]).notes(piece["name"])
