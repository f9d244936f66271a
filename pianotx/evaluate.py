"""Transcription metrics: thin wrappers over mir_eval, with the field's settings.

- Frame scores: both note sets drawn as piano rolls on a common 10 ms grid (the
  quantisation of :func:`pianotx.labels.note_frames`) and compared cell by cell with
  ``mir_eval.multipitch`` (counts summed over the piece), as in Onsets and Frames.
- Note scores: ``mir_eval.transcription.precision_recall_f1_overlap`` with onset
  tolerance 50 ms, pitch tolerance 50 cents and, with offsets, offset ratio 0.2 and
  offset minimum tolerance 50 ms.
- Per piece, then the mean over pieces.

Empty sets follow mir_eval: precision is 0 when there is no estimate, recall is 0 when
there is no reference, and F1 is 0 when precision + recall is 0 (so a piece with no
reference and no estimate scores 0 everywhere). Nothing raises or warns on empty sets.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable, Collection, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from pianotx.callable_module import make_callable
from pianotx.config import DecodingConfig, FeatureConfig
from pianotx.decoding import decode_rolls
from pianotx.features import file_features
from pianotx.labels import note_frames
from pianotx.locations import MODEL_NAME
from pianotx.midi import Notes

T = TypeVar("T")

if TYPE_CHECKING:
    from pianotx.store import Manifest
    from pianotx.transcribe import Transcriber

ONSET_TOLERANCE = 0.05  # seconds
PITCH_TOLERANCE = 50.0  # cents
OFFSET_RATIO = 0.2  # of the reference note's duration
OFFSET_MIN_TOLERANCE = 0.05  # seconds
FRAME_HOP = 0.01  # seconds

GROUPS = ("frame", "note", "note_with_offset", "note_with_velocity")
PARTS = ("precision", "recall", "f1")
METRIC_KEYS = tuple(f"{group}_{part}" for group in GROUPS for part in PARTS)
_GROUP_TITLES = {
    "frame": "frame",
    "note": "note",
    "note_with_offset": "note+offset",
    "note_with_velocity": "note+velocity",
}
VELOCITY_TOLERANCE = 0.1  # mir_eval's: of the reference velocity range, after rescaling
_PART_TITLES = {"precision": "P", "recall": "R", "f1": "F1"}


def _prf(precision: float, recall: float) -> dict[str, float]:
    """``{"precision", "recall", "f1"}`` with F1 = 2PR/(P+R), 0 when both are 0."""
    total = precision + recall
    f1 = 2.0 * precision * recall / total if total > 0 else 0.0
    return {"precision": float(precision), "recall": float(recall), "f1": float(f1)}


def prf(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    """Precision, recall and F1 from counts; each is 0.0 where its denominator is 0.

    The same F1 as :func:`frame_scores` and :func:`note_scores` (2PR/(P+R)), for
    counts gathered elsewhere (a training callback summing over batches).
    """
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    scores = _prf(precision, recall)
    return scores["precision"], scores["recall"], scores["f1"]


def _pitch_sets(notes: Notes, n_frames: int, hop: float) -> list[np.ndarray]:
    """Per grid frame, the sounding pitches in Hz: n_frames arrays of float64."""
    import mir_eval

    roll = np.zeros((n_frames, 128), bool)
    if len(notes):
        start, end = note_frames(notes, 1.0 / hop)
        for s, e, pitch in zip(start, end, notes.pitches, strict=True):
            roll[max(s, 0) : e, pitch] = True
    return [mir_eval.util.midi_to_hz(np.flatnonzero(row).astype(np.float64)) for row in roll]


def frame_scores(ref: Notes, est: Notes, hop: float = FRAME_HOP) -> dict[str, float]:
    """Frame-level precision, recall and F1 on a ``hop``-second piano-roll grid.

    A note [on, off) covers grid frames ``round(on / hop)`` up to, not including,
    ``round(off / hop)`` (at least one frame); the grid runs from 0 to the last end
    frame of either set. Cells are compared with ``mir_eval.multipitch.evaluate``.

    Args:
        ref: reference notes (MIDI pitches 0..127).
        est: estimated notes.
        hop: grid step in seconds.

    Returns:
        ``{"precision", "recall", "f1"}`` floats in [0, 1] (empty sets: module docstring).
    """
    import mir_eval

    ends = [note_frames(n, 1.0 / hop)[1].max() for n in (ref, est) if len(n)]
    n_frames = int(max(ends, default=0)) or 1
    times = np.arange(n_frames) * hop
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scores = mir_eval.multipitch.evaluate(
            times, _pitch_sets(ref, n_frames, hop), times, _pitch_sets(est, n_frames, hop)
        )
    return _prf(scores["Precision"], scores["Recall"])


def _in_hz(ref: Notes, est: Notes) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """mir_eval.transcription's note arguments: each side's intervals and pitches in Hz."""
    import mir_eval

    def hz(notes: Notes) -> np.ndarray:
        return np.asarray(mir_eval.util.midi_to_hz(notes.pitches.astype(np.float64)))

    return ref.intervals, hz(ref), est.intervals, hz(est)


def note_scores(ref: Notes, est: Notes, offset: bool) -> dict[str, float]:
    """Note-level precision, recall and F1 (mir_eval.transcription).

    Args:
        ref: reference notes; intervals must have positive durations, as mir_eval
            requires (it raises ``ValueError`` otherwise).
        est: estimated notes.
        offset: also require offsets within ``max(0.2 * ref duration, 50 ms)``;
            ``False`` scores onsets (50 ms) and pitch (50 cents) only.

    Returns:
        ``{"precision", "recall", "f1"}`` floats in [0, 1] (empty sets: module docstring).
    """
    import mir_eval

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        precision, recall, _, _ = mir_eval.transcription.precision_recall_f1_overlap(
            *_in_hz(ref, est),
            onset_tolerance=ONSET_TOLERANCE,
            pitch_tolerance=PITCH_TOLERANCE,
            offset_ratio=OFFSET_RATIO if offset else None,
            offset_min_tolerance=OFFSET_MIN_TOLERANCE,
        )
    return _prf(precision, recall)


def velocity_scores(ref: Notes, est: Notes) -> dict[str, float]:
    """Note-with-velocity precision, recall and F1 (mir_eval.transcription_velocity,
    offsets ignored, as Onsets and Frames and Kong et al. report it): a note counts when
    onset and pitch match (50 ms, 50 cents) and its velocity, after mir_eval rescales
    the estimates' velocities to the reference's by least squares over the matched
    notes, is within 10% of the reference's velocity range.

    Returns:
        ``{"precision", "recall", "f1"}`` floats in [0, 1].
    """
    import mir_eval

    ref_i, ref_hz, est_i, est_hz = _in_hz(ref, est)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        precision, recall, _, _ = mir_eval.transcription_velocity.precision_recall_f1_overlap(
            ref_i,
            ref_hz,
            ref.velocities.astype(np.float64),
            est_i,
            est_hz,
            est.velocities.astype(np.float64),
            onset_tolerance=ONSET_TOLERANCE,
            pitch_tolerance=PITCH_TOLERANCE,
            offset_ratio=None,
            offset_min_tolerance=OFFSET_MIN_TOLERANCE,
            velocity_tolerance=VELOCITY_TOLERANCE,
        )
    return _prf(precision, recall)


def _onset_pairs(ref: Notes, est: Notes) -> list[tuple[int, int]]:
    """(reference index, estimate index) of the notes mir_eval matches on onset (50 ms)
    and pitch (50 cents), as its note scores count them."""
    import mir_eval

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return list(
            mir_eval.transcription.match_notes(
                *_in_hz(ref, est),
                onset_tolerance=ONSET_TOLERANCE,
                pitch_tolerance=PITCH_TOLERANCE,
                offset_ratio=None,
            )
        )


def onset_errors(ref: Notes, est: Notes) -> np.ndarray:
    """Estimated minus reference onset, seconds, of each note pair mir_eval matches on
    onset (50 ms) and pitch (50 cents)."""
    return np.array([est.intervals[j, 0] - ref.intervals[i, 0] for i, j in _onset_pairs(ref, est)], np.float64)


def found_references(ref: Notes, est: Notes) -> np.ndarray:
    """(n,) bool: which reference notes an estimate matches on onset and pitch (the
    notes note recall counts as found)."""
    found = np.zeros(len(ref), bool)
    found[[i for i, _ in _onset_pairs(ref, est)]] = True
    return found


def evaluate_piece(ref: Notes, est: Notes) -> dict[str, float]:
    """All metrics of one piece, keyed by :data:`METRIC_KEYS`.

    Returns:
        ``{"frame_precision", ..., "note_with_velocity_f1"}``: twelve floats in [0, 1].
    """
    by_group = {
        "frame": frame_scores(ref, est),
        "note": note_scores(ref, est, offset=False),
        "note_with_offset": note_scores(ref, est, offset=True),
        "note_with_velocity": velocity_scores(ref, est),
    }
    return {f"{group}_{part}": by_group[group][part] for group in GROUPS for part in PARTS}


def mean_scores(per_piece: list[dict[str, float]]) -> dict[str, float]:
    """Mean of each metric over pieces (each piece counts once, as in the field).

    Args:
        per_piece: one :func:`evaluate_piece` result per piece, all with the same keys.

    Returns:
        The same keys, each the unweighted mean over pieces.

    Raises:
        ValueError: no pieces, or pieces with different keys.
    """
    if not per_piece:
        raise ValueError("no pieces to average")
    keys = list(per_piece[0])
    if any(set(scores) != set(keys) for scores in per_piece):
        raise ValueError("pieces have different metric keys")
    return {key: float(np.mean([scores[key] for scores in per_piece])) for key in keys}


def format_table(per_piece: dict[str, dict[str, float]], mean: dict[str, float]) -> str:
    """Plain-text table: one row per piece and a final mean row, values in percent.

    Args:
        per_piece: piece name -> :func:`evaluate_piece` result.
        mean: :func:`mean_scores` result.

    Returns:
        Lines joined by newlines (no trailing newline): a group header (frame, note,
        note+offset), a P/R/F1 header, a rule, the pieces, a rule, the mean.
    """
    mean_label = f"mean ({len(per_piece)})"
    width = max([len(name) for name in per_piece] + [len(mean_label), len("piece")])
    groups = "  ".join(f"{_GROUP_TITLES[g]:^20}" for g in GROUPS)
    parts = "  ".join(" ".join(f"{_PART_TITLES[p]:>6}" for p in PARTS) for _ in GROUPS)

    def row(name: str, scores: dict[str, float]) -> str:
        cells = (" ".join(f"{100.0 * scores[f'{g}_{p}']:6.1f}" for p in PARTS) for g in GROUPS)
        return f"{name:<{width}}  " + "  ".join(cells)

    rule = "-" * (width + 2 + len(parts))
    lines = [f"{'':<{width}}  {groups}", f"{'piece':<{width}}  {parts}", rule]
    lines += [row(name, scores) for name, scores in per_piece.items()]
    lines += [rule, row(mean_label, mean)]
    return "\n".join(lines)


def evaluate_split(
    predict: Callable[[np.ndarray], Any],
    manifest: Manifest,
    split: str,
    decoding: DecodingConfig | None = None,
    limit: int = 0,
    features: FeatureConfig | None = None,
) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
    """Score a model on every piece of a built dataset's split.

    Args:
        predict: maps a piece's (n_frames, n_bins) features to (n_frames, 88) frame
            probabilities, or to ``{"frames", "onsets"}`` of them (e.g.
            :func:`pianotx.windows.predict_rolls` over a model); onsets start notes.
        manifest: a dataset built by ``pianotx data build`` (:func:`pianotx.store.load_manifest`).
        split: train, validation or test.
        decoding: how probabilities become notes.
        limit: score only ``limit`` pieces, spread evenly over the split (0: all; see
            :func:`spread`).
        features: the model's feature config; when it differs from the dataset's, each
            piece's features are recomputed from its audio with the model's config (the
            reference notes are in seconds, so they serve either way).

    Returns:
        (scores per piece name, mean over pieces); both empty when the split has none.
    """
    config = features or manifest.features
    per_piece: dict[str, dict[str, float]] = {}
    for name, rolls, ref in split_rolls(predict, manifest, split, limit, config):
        est = decode_rolls(rolls, config.frame_rate, decoding or DecodingConfig())
        per_piece[name] = evaluate_piece(ref, est)
    return per_piece, (mean_scores(list(per_piece.values())) if per_piece else {})


def spread(items: Sequence[T], limit: int) -> list[T]:
    """``limit`` items at evenly spaced positions from the first to the last (all when
    ``limit`` is 0 or covers them), in order.

    A split lists its pieces by name, so the renderings of one piece on each piano and
    the pieces of one source stand together: the first ``limit`` would hear one kind of
    music. Spread out, a few pieces sample every kind and every piano, e.g. 3 of
    ``[a, b, c, d, e, f, g]`` are ``[a, d, g]``.
    """
    if limit <= 0 or limit >= len(items):
        return list(items)
    return [items[i] for i in np.linspace(0, len(items) - 1, limit).round().astype(int)]


def split_rolls(
    predict: Callable[[np.ndarray], Any],
    manifest: Manifest,
    split: str,
    limit: int,
    features: FeatureConfig,
    names: Collection[str] | None = None,
) -> Iterator[tuple[str, dict[str, np.ndarray], Notes]]:
    """Each piece of a split (``limit`` of them spread over it, 0: all; of ``names``
    only, if given): its name, the model's rolls and its reference notes.

    Features come from the dataset's shards when ``features`` is the dataset's config,
    else from the piece's audio with ``features``.
    """
    from pianotx.store import SplitArrays

    arrays = SplitArrays(manifest, split)
    records = [r for r in manifest.pieces(split) if names is None or r["name"] in names]
    for record in spread(records, limit):
        if features == manifest.features:
            frames, _, _ = arrays.piece(record)
        else:
            arrays.chunk_range(record)  # the manifest is checked whichever features are used
            frames, _ = file_features(manifest.input_path(record), features)
        rolls = predict(frames)
        yield record["name"], rolls if isinstance(rolls, dict) else {"frames": rolls}, arrays.notes(record["name"])


# The values tune_decoding tries for each setting (see there).
FRAME_THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7)
# Onset heads trained with weighted positives run high: their best threshold is higher.
ONSET_THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)
# Runs no onset starts: notes like any other (0), or only from half a second, a second or
# two seconds on. Measured with the bundled model (tuned on validation, scored on the held-out
# piano's test split), 0 -> 0.5 s: note F1 70.7 -> 73.6, note+offset 45.5 -> 47.4, frame 75.2 -> 75.1.
ONSETLESS_MIN_DURATIONS = (0.0, 0.5, 1.0, 2.0)
# The onset probability that lets a shorter run count as started (None: onset_threshold).
# With the bundled model, tuning it apart from the threshold that splits a sounding key
# took test note F1 from 82.5 to 84.9 (benchmarks/decoding_rules.py).
ONSETLESS_THRESHOLDS = (None, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
TUNING_SWEEPS = 2
# The settings tune_decoding chooses (and the latency it measures); the others are kept.
TUNED_SETTINGS = ("threshold", "onset_threshold", "onsetless_min_duration", "onsetless_threshold", "latency")


def tune_decoding(
    pieces: list[tuple[dict[str, np.ndarray], Notes]], frame_rate: float, base: DecodingConfig
) -> tuple[DecodingConfig, float]:
    """The frame threshold (and, with onsets, the onset threshold and the onset-less rule's
    duration and threshold) of the best mean note F1 over ``pieces``.

    A coordinate search: starting from ``base``, the frame threshold, the onset threshold
    and the onset-less rule (duration and threshold together, since the threshold matters
    only where the duration is not 0) in turn take the values of their grids
    (``FRAME_THRESHOLDS``, ``ONSET_THRESHOLDS``, ``ONSETLESS_MIN_DURATIONS`` x
    ``ONSETLESS_THRESHOLDS``) that score best with the others held, over ``TUNING_SWEEPS``
    sweeps: at most 70 decodings of ``pieces`` instead of the 880 of the full grid, which
    on the bundled model's validation pieces scored no better.

    Args:
        pieces: per piece, the model's rolls (``{"frames"[, "onsets"]}``) and the
            reference notes (from :func:`split_rolls`).
        frame_rate: frames per second.
        base: the starting point; its other settings are kept.

    Returns:
        (the best config, its mean note F1 before its latency is set); a value replaces
        the current one only if it scores strictly better, so an untuned model keeps its
        defaults where no threshold does better. The config's ``latency`` is then measured
        with those settings (:func:`measure_latency`).
    """
    steps: list[list[dict[str, Any]]] = [[{"threshold": t} for t in FRAME_THRESHOLDS]]
    if pieces and all("onsets" in rolls for rolls, _ in pieces):
        steps.append([{"onset_threshold": o} for o in ONSET_THRESHOLDS])
        steps.append(  # together: the threshold matters only where the duration is not 0
            [
                {"onsetless_min_duration": d, "onsetless_threshold": n}
                for d in ONSETLESS_MIN_DURATIONS
                for n in (ONSETLESS_THRESHOLDS if d else (None,))
            ]
        )
    scores: dict[DecodingConfig, float] = {}

    def mean_f1(config: DecodingConfig) -> float:
        if config not in scores:
            f1s = [_note_f1(rolls, ref, frame_rate, config) for rolls, ref in pieces]
            scores[config] = float(np.mean(f1s)) if f1s else 0.0
        return scores[config]

    best = base
    for _ in range(TUNING_SWEEPS):
        for step in steps:
            for changes in step:
                config = dataclasses.replace(best, **changes)
                if mean_f1(config) > mean_f1(best):
                    best = config
    return dataclasses.replace(best, latency=measure_latency(pieces, frame_rate, best)), mean_f1(best)


def measure_latency(
    pieces: list[tuple[dict[str, np.ndarray], Notes]], frame_rate: float, config: DecodingConfig
) -> float:
    """The median onset error (estimated minus reference, seconds, rounded to 0.1 ms)
    of the notes ``config`` decodes from ``pieces`` and mir_eval matches, within
    ``DecodingConfig``'s bounds; 0.0 when nothing matches."""
    plain = dataclasses.replace(config, latency=0.0)
    errors = [onset_errors(ref, decode_rolls(r, frame_rate, plain)) for r, ref in pieces]
    matched = np.concatenate(errors) if errors else np.zeros(0)
    if not len(matched):
        return 0.0
    return float(np.clip(round(float(np.median(matched)), 4), -0.05, 0.05))


def _note_f1(rolls: dict[str, np.ndarray], ref: Notes, frame_rate: float, config: DecodingConfig) -> float:
    est = decode_rolls(rolls, frame_rate, config)
    return note_scores(ref, est, offset=False)["f1"]


def write_report(
    per_piece: dict[str, dict[str, float]],
    mean: dict[str, float],
    manifest: Manifest,
    split: str,
    model: str,
    json_path: Path | None,
) -> dict[str, Any]:
    """The evaluation as plain data; written atomically to ``json_path`` when given."""
    from pianotx.files import write_json_atomic

    report = {
        "model": model,
        "dataset": str(manifest.root.resolve()),
        "dataset_fingerprint": manifest.data["fingerprint"],
        "split": split,
        "pieces": len(per_piece),
        "mean": mean,
        "per_piece": per_piece,
    }
    if json_path is not None:
        write_json_atomic(json_path, report)
    return report


def retuned(transcriber: Transcriber, dataset_dir: str | Path, pieces: int = 24) -> Transcriber:
    """``transcriber`` with its decoding tuned afresh on a dataset's validation pieces.

    What a search trial does at its end (:func:`tune_decoding` from the default values of
    ``TUNED_SETTINGS`` on ``pieces`` validation pieces spread over the split, 0: all, then
    the latency measured), for a model trained before the decoding rules it is to use:
    ``pianotx export --tune-on``. The model's other decoding settings are kept.

    Raises:
        DatasetError: no dataset, or no validation pieces.
    """
    from pianotx.store import DatasetError, load_manifest

    manifest = load_manifest(dataset_dir)
    rolls = [
        (r, ref)
        for _, r, ref in split_rolls(transcriber.probabilities, manifest, "validation", pieces, transcriber.features)
    ]
    if not rolls:
        raise DatasetError(f"{dataset_dir}: the validation split has no pieces")
    defaults = DecodingConfig()
    base = dataclasses.replace(transcriber.decoding, **{name: getattr(defaults, name) for name in TUNED_SETTINGS})
    decoding, _ = tune_decoding(rolls, transcriber.features.frame_rate, base)
    return dataclasses.replace(transcriber, decoding=decoding)


def evaluate_model(
    dataset_dir: str | Path,
    model: str | None,
    split: str | None = None,
    json_path: Path | None = None,
    tracking_uri: str | None = None,
    log: bool = True,
) -> tuple[dict[str, Any], str | None]:
    """``pianotx evaluate``: score a model on a dataset split, write and log the report.

    Args:
        dataset_dir: a dataset built by ``pianotx data build``.
        model: a model URI or ``.keras`` export (``None``: as ``pianotx transcribe``).
        split: train, validation or test (``None``: the held-out test split).
        json_path: where the report goes as JSON (its folder must exist).
        tracking_uri: the MLflow store for the evaluation run.
        log: log an ``evaluation`` run to MLflow.

    Returns:
        (the report of :func:`write_report`, the logged run's id or ``None``).

    Raises:
        DatasetError: no dataset, a manifest that does not match its files, or no
            pieces in the split.
        OutputError: the ``--json`` file's folder does not exist.
        ModelError, TrackingError: the model cannot be loaded.
    """
    from pianotx.files import OutputError
    from pianotx.store import HELD_OUT_SPLIT, DatasetError, load_manifest
    from pianotx.transcribe import load_transcriber

    split = split or HELD_OUT_SPLIT
    manifest = load_manifest(dataset_dir)
    if json_path is not None and not json_path.parent.is_dir():
        raise OutputError(f"{json_path}: its folder does not exist")
    transcriber = load_transcriber(model, tracking_uri)
    per_piece, mean = evaluate_split(
        transcriber.probabilities, manifest, split, transcriber.decoding, features=transcriber.features
    )
    if not per_piece:
        raise DatasetError(f"{dataset_dir}: the {split} split has no pieces")
    report = write_report(per_piece, mean, manifest, split, transcriber.source, json_path)
    if not log:
        return report, None
    from pianotx import tracking
    from pianotx.locations import resolve_store

    return report, tracking.log_evaluation(resolve_store(tracking_uri), report)


def export_model(
    model: str | None,
    out_dir: Path,
    name: str = MODEL_NAME,
    tracking_uri: str | None = None,
    tune_on: Path | None = None,
    tune_pieces: int = 24,
) -> Path:
    """``pianotx export``: load ``model`` (as :func:`~pianotx.transcribe.load_transcriber`)
    and :func:`~pianotx.transcribe.export` it, its decoding first tuned afresh on
    ``tune_on``'s validation pieces if given (:func:`retuned`). It lives here, beside
    the scoring it may use, so that transcription never imports scoring."""
    from pianotx.transcribe import check_export_target, export, load_transcriber

    check_export_target(out_dir, name)
    transcriber = load_transcriber(model, tracking_uri)
    if tune_on is not None:
        transcriber = retuned(transcriber, tune_on, tune_pieces)
    return export(transcriber, out_dir, name)


# `pianotx.evaluate(...)` is the API function (see pianotx.callable_module).
make_callable(__name__, "evaluate")
