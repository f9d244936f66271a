"""Running a model over long inputs in overlapping windows, with no seam.

The LSTM needs warm-up context: probabilities are up to ~0.1 off near the start of an
input. So the input is cut into windows that each keep ``window`` output frames and
also run ``context`` frames on each side that are computed and discarded (clipped at
the very start and end of the input). The kept ranges tile ``[0, n_frames)``.

Pure helpers: :func:`plan_windows` (where to cut), :func:`plan_batches` (which windows
share a call of the model), :func:`batch_windows` (their inputs stacked), :func:`keep`
and :func:`stitch` (kept parts back into one roll).
:func:`predict_rolls` runs a model over a whole piece's features with bounded working
memory; :func:`stream_rolls` does the same on features that arrive block by block,
handing out the output rows as they are done, equal to :func:`predict_rolls`' to the
bit. Nothing here loads models or imports Keras: training code and transcription share
it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from pianotx.config import N_KEYS


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


def plan_batches(windows: list[Window], batch_size: int) -> list[list[int]]:
    """Which windows share a call of the model: runs of consecutive windows of one
    length, cut into groups of at most ``batch_size``.

    Only windows of one length share a batch: padding a shorter one would feed a
    bidirectional model's backward pass frames that do not exist (0.55 off at the end).
    Only consecutive ones do, so that a batch's inputs are all there as soon as its last
    window's are (what lets :func:`stream_rolls` hold only the windows in flight). With
    the usual sizes (``context < window``) a piece's windows have few lengths: the first,
    the middle ones, the last one or two.

    Args:
        windows: from :func:`plan_windows`.
        batch_size: most windows per call (>= 1).

    Returns:
        Lists of window indices, in order; together every index once.
    """
    if batch_size < 1:
        raise ValueError("need batch_size >= 1")
    batches: list[list[int]] = []
    for i, w in enumerate(windows):
        if i and len(batches[-1]) < batch_size and _length(windows[i - 1]) == _length(w):
            batches[-1].append(i)
        else:
            batches.append([i])
    return batches


def _length(w: Window) -> int:
    return w.stop - w.start


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
        keep(roll, w, out, i)
    return roll


def keep(roll: np.ndarray, w: Window, out: Any, index: int = 0) -> None:
    """Copy the kept part of one window's output into ``roll`` (see :func:`stitch`).

    Raises:
        ValueError: ``out`` is too short or has the wrong width (``index`` names it).
    """
    out = np.asarray(out)
    if out.ndim != 2 or out.shape[0] < w.stop - w.start or out.shape[1] != roll.shape[1]:
        raise ValueError(f"output {index} has shape {out.shape}, need ({w.stop - w.start}, {roll.shape[1]})")
    roll[w.keep_start : w.keep_stop] = out[w.keep_start - w.start : w.keep_stop - w.start]


def predict_rolls(
    predict_batch: Callable[[np.ndarray], Any],
    features: np.ndarray,
    window: int = 2048,
    context: int = 512,
    batch_size: int = 4,
    progress: Callable[[float], None] | None = None,
) -> dict[str, np.ndarray]:
    """Every output roll of a model over a whole piece, computed window by window.

    Working memory is bounded by ``batch_size`` windows whatever the piece's length
    (measured with the bundled model on 30 minutes of audio: peak 848 MB with 4, 975 MB
    with 8 for 3% less time, 767 MB with 2 for 13% more; 566 MB for 15 seconds), but the
    result holds the piece's rolls: :func:`stream_rolls` computes the same numbers on
    features as they arrive and hands each part out when done.

    Args:
        predict_batch: maps (batch, frames, n_bins) float32 to (batch, frames, 88), or
            to a dict of such arrays (``{"frames", "onsets"}`` of a model with an onset
            head), e.g. a Keras model's ``predict_on_batch``.
        features: (n_frames, n_bins) float32.
        window: output frames kept per window.
        context: warm-up frames computed and discarded on each side of a window: the
            model's training chunk length, since a bidirectional model trained on such
            chunks draws on up to that much context either way (measured: with 256 a
            bundled model's outputs moved by up to 0.2 on real music).
        batch_size: windows per call of ``predict_batch`` (see :func:`plan_batches`).
        progress: called after each batch with the fraction of windows done (0..1].

    Returns:
        ``{"frames": (n_frames, 88) float32[, "onsets": ...]}`` probabilities.
    """
    windows = plan_windows(len(features), window, context)
    rolls: dict[str, np.ndarray] = {}
    done = 0
    for group in plan_batches(windows, batch_size):
        heads = _heads(predict_batch(batch_windows(features, [windows[i] for i in group])))
        for name, batch in heads.items():
            if name not in rolls:  # kept parts go straight into the result: no copy per window
                rolls[name] = np.zeros((len(features), batch.shape[-1]), np.float32)
            for j, i in enumerate(group):
                keep(rolls[name], windows[i], batch[j], i)
        done += len(group)
        if progress is not None:
            progress(done / len(windows))
    return rolls or {"frames": np.zeros((0, N_KEYS), np.float32)}


# What :func:`stream_rolls` hands out: ``(start, {name: rows})``, rows ``[start, start +
# len(rows))`` of each output roll, (rows, 88) float32; in order, tiling ``[0, n_frames)``.
RollBlocks = Iterator[tuple[int, dict[str, np.ndarray]]]


def stream_rolls(
    predict_batch: Callable[[np.ndarray], Any],
    n_frames: int,
    blocks: Iterable[tuple[int, np.ndarray]],
    window: int = 2048,
    context: int = 512,
    batch_size: int = 4,
    progress: Callable[[float], None] | None = None,
) -> RollBlocks:
    """:func:`predict_rolls` over features that arrive block by block (as
    :func:`pianotx.features.stream_file_features` hands them out), its output rows
    handed out in order as each batch of windows is done.

    The windows and batches are :func:`predict_rolls`' for ``n_frames`` frames (known
    before the features: from the audio's length), so the numbers are the same to the
    bit. A batch runs as soon as its last window's input is there; only the feature rows
    of the windows not run yet are held (with the defaults, four windows of 2,048 frames
    and their context: about 10,000 rows), and each batch's output is handed out at once.

    Args:
        predict_batch, window, context, batch_size, progress: as :func:`predict_rolls`.
        n_frames: the piece's length in frames: the features' total.
        blocks: ``(start, rows)`` of (rows, n_bins) float32 features, in order, tiling
            ``[0, n_frames)``.

    Yields:
        ``(start, {"frames": (rows, 88) float32[, "onsets": ...]})``: rows ``[start,
        start + rows)`` of :func:`predict_rolls`' result, in order; one per batch.

    Raises:
        ValueError: the blocks do not tile ``[0, n_frames)`` in order.
    """
    windows = plan_windows(n_frames, window, context)
    batches = plan_batches(windows, batch_size)
    held: list[np.ndarray] = []  # feature rows [first, arrived), as they came
    first = arrived = done = 0
    pending = iter(batches)
    batch = next(pending, None)
    for start, rows in blocks:
        if start != arrived or arrived + len(rows) > n_frames:
            raise ValueError(
                f"features block at frame {start} of {len(rows)} rows; expected frame {arrived} "
                f"and at most {n_frames - arrived} rows"
            )
        held.append(rows)
        arrived += len(rows)
        while batch is not None and windows[batch[-1]].stop <= arrived:
            features = np.concatenate(held) if len(held) > 1 else held[0]
            group = [windows[i] for i in batch]
            inputs = batch_windows(features, [_shifted(w, -first) for w in group])
            heads = _heads(predict_batch(inputs))
            yield group[0].keep_start, {name: _kept(group, out) for name, out in heads.items()}
            done += len(batch)
            if progress is not None:
                progress(done / len(windows))
            batch = next(pending, None)
            drop = (windows[batch[0]].start if batch is not None else arrived) - first
            held, first = [features[drop:]], first + drop
    if arrived != n_frames:
        raise ValueError(f"features end at frame {arrived}; expected {n_frames}")


def _shifted(w: Window, offset: int) -> Window:
    """``w`` with every frame moved by ``offset``."""
    return Window(w.start + offset, w.stop + offset, w.keep_start + offset, w.keep_stop + offset)


def _kept(group: list[Window], outputs: np.ndarray) -> np.ndarray:
    """The kept rows of consecutive windows' outputs, one (rows, 88) float32 array."""
    rows = np.zeros((group[-1].keep_stop - group[0].keep_start, outputs.shape[-1]), np.float32)
    for j, w in enumerate(group):
        keep(rows, _shifted(w, -group[0].keep_start), outputs[j], j)
    return rows


def _heads(outputs: Any) -> dict[str, np.ndarray]:
    """A batch's outputs as ``{name: (batch, frames, 88) array}``."""
    if isinstance(outputs, dict):
        return {name: np.asarray(value) for name, value in outputs.items()}
    return {"frames": np.asarray(outputs)}


def predict_frames(
    predict_batch: Callable[[np.ndarray], Any],
    features: np.ndarray,
    window: int = 2048,
    context: int = 512,
    batch_size: int = 4,
) -> np.ndarray:
    """The frame probabilities of :func:`predict_rolls`: (n_frames, 88) float32."""
    return predict_rolls(predict_batch, features, window, context, batch_size)["frames"]
