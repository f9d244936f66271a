"""Probability rolls -> notes.

A roll is (n_frames, n_keys) with key ``k`` = MIDI ``21 + k`` and frame ``i`` centred on
``i / frame_rate`` seconds. Each run of active frames ``[s, e)`` of one key is a note
with onset ``s / frame_rate`` and offset ``e / frame_rate`` seconds: exactly the inverse
of :func:`pianotx.labels.notes_to_rolls`, so notes -> rolls -> notes gives back the
notes quantised to the frame grid (:func:`pianotx.labels.note_frames`), with the
default ``latency`` of 0.

Notes of one key never overlap: a run is split where an onset re-triggers the key, and
the earlier note ends where the later one starts.
"""

from __future__ import annotations

import numpy as np

from pianotx.config import MIDI_MIN, DecodingConfig
from pianotx.midi import Notes

# Tolerance for comparing a note's frame count with min_duration * frame_rate.
_EPS = 1e-9


def _segments(active: np.ndarray, split: np.ndarray | None) -> tuple[np.ndarray, ...]:
    """Runs of ``True`` per key, optionally split where ``split`` is set.

    Args:
        active: (n_frames, n_keys) bool.
        split: (n_frames, n_keys) bool or None; a set cell inside a run starts a new
            run there (cells outside runs are ignored).

    Returns:
        keys, starts, ends: (m,) int64 each, ``ends`` exclusive; sorted by key, start.
    """
    n_frames, n_keys = active.shape
    pad = np.zeros((n_keys, 1), bool)
    act = np.concatenate([active.T, pad], axis=1)  # (n_keys, n_frames + 1), last False
    prev = np.concatenate([pad, act[:, :-1]], axis=1)
    begins = act & ~prev
    if split is not None:
        begins[:, :-1] |= act[:, :-1] & split.T
    bounds = np.flatnonzero((begins | ~act).ravel())
    starts = np.flatnonzero(begins.ravel())
    ends = bounds[np.searchsorted(bounds, starts, side="right")]
    width = n_frames + 1
    keys = starts // width
    return keys, starts - keys * width, ends - keys * width


def _rising(on: np.ndarray) -> np.ndarray:
    """Cells that are set while the frame before (same key) is not; (n, k) bool."""
    prev = np.zeros_like(on)
    prev[1:] = on[:-1]
    return on & ~prev


def _fill_gaps(active: np.ndarray, max_gap: int, trigger: np.ndarray | None) -> np.ndarray:
    """Copy of ``active`` with short inner gaps filled (see ``DecodingConfig.gap_frames``)."""
    if max_gap <= 0 or not active.size:
        return active
    keys, starts, ends = _segments(~active, None)
    inner = (starts > 0) & (ends < active.shape[0]) & (ends - starts <= max_gap)
    if trigger is not None:
        csum = np.concatenate([np.zeros((1, active.shape[1]), np.int64), trigger.cumsum(0)])
        # any trigger in frames [start, end] (the gap and the frame after it)
        inner &= csum[np.minimum(ends + 1, len(trigger)), keys] == csum[starts, keys]
    keys, starts, ends = keys[inner], starts[inner], ends[inner]
    lengths = ends - starts
    offsets = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    filled = active.copy()
    filled[np.repeat(starts, lengths) + offsets, np.repeat(keys, lengths)] = True
    return filled


def _onset_near(on: np.ndarray, keys: np.ndarray, starts: np.ndarray, reach: int = 1) -> np.ndarray:
    """Per run, whether ``on`` (n_frames, n_keys) bool is set for its key within
    ``reach`` frames of its start (either side); (m,) bool."""
    near = np.zeros(len(keys), bool)
    for d in range(-reach, reach + 1):
        frames = starts + d
        inside = (frames >= 0) & (frames < len(on))
        near[inside] |= on[frames[inside], keys[inside]]
    return near


def _check_roll(roll: np.ndarray, name: str) -> np.ndarray:
    roll = np.asarray(roll)
    if roll.ndim != 2:
        raise ValueError(f"{name} must be (n_frames, n_keys), got shape {roll.shape}")
    return roll


def roll_to_notes(
    roll: np.ndarray,
    frame_rate: float,
    onsets: np.ndarray | None = None,
    velocity: int = 80,
) -> Notes:
    """Binary roll -> notes, the exact inverse of :func:`pianotx.labels.notes_to_rolls`.

    Args:
        roll: (n_frames, n_keys) any dtype; nonzero = key down. Key ``k`` = MIDI 21 + k.
        frame_rate: frames per second.
        onsets: optional (n_frames, n_keys) binary onset roll; every nonzero cell inside
            a run starts a new note there (repeated notes of a held key).
        velocity: velocity of every note (1..127).

    Returns:
        Notes, one per run: onset ``first_frame / frame_rate``, offset
        ``end_frame / frame_rate`` seconds (end exclusive), sorted by onset then pitch.
    """
    active = _check_roll(roll, "roll") != 0
    split = None if onsets is None else _check_roll(onsets, "onsets") != 0
    if split is not None and split.shape != active.shape:
        raise ValueError(f"onsets shape {split.shape} differs from roll shape {active.shape}")
    keys, starts, ends = _segments(active, split)
    intervals = np.stack([starts, ends], axis=1) / frame_rate
    return Notes.from_lists(intervals, keys + MIDI_MIN, np.full(len(keys), velocity))


def _velocities(probs: np.ndarray, keys: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """``clip(round(127 * mean frame probability), 1, 127)`` of each note, from one
    float64 running sum per key (not a float64 copy of the whole roll)."""
    mean = np.zeros(len(keys))
    for key in np.unique(keys):
        of_key = keys == key
        csum = np.concatenate([[0.0], np.cumsum(probs[:, key], dtype=np.float64)])
        mean[of_key] = (csum[ends[of_key]] - csum[starts[of_key]]) / np.maximum(ends[of_key] - starts[of_key], 1)
    return np.clip(np.round(127.0 * mean), 1, 127).astype(np.int64)


def decode(
    frame_probs: np.ndarray,
    frame_rate: float,
    config: DecodingConfig | None = None,
    onset_probs: np.ndarray | None = None,
    velocity_probs: np.ndarray | None = None,
) -> Notes:
    """Frame (and optional onset and velocity) outputs -> notes.

    Steps: threshold the frames; fill short gaps (``config.gap_frames``); cut each run
    of a key into notes, splitting where the onset probability rises through
    ``config.onset_threshold`` (onsets only split runs: they create no note where the
    frame probability is below threshold); drop runs that no onset starts (the onset
    probability reaching ``config.onsetless_threshold`` within a frame of the run's start)
    and that are shorter than ``config.onsetless_min_duration``; drop notes shorter than
    ``config.min_duration``; set velocities; move notes earlier by ``config.latency``
    (see :class:`DecodingConfig`).

    Args:
        frame_probs: (n_frames, n_keys) float in [0, 1]; key ``k`` = MIDI 21 + k.
        frame_rate: frames per second (31.25 with the default features).
        config: thresholds, minimum duration, gap bridging, velocity (default: the defaults).
        onset_probs: optional (n_frames, n_keys) onset probabilities.
        velocity_probs: optional (n_frames, n_keys) velocity output (velocity / 127 at
            onsets); each note's velocity is ``clip(round(127 * v), 1, 127)`` of it at
            the note's first frame (unless ``config.velocity`` fixes one).

    Returns:
        Notes sorted by onset then pitch; onset ``s / frame_rate - latency`` and offset
        ``e / frame_rate - latency`` seconds for a run of frames ``[s, e)``. No two notes of
        the same pitch overlap.
    """
    config = config or DecodingConfig()
    probs = _check_roll(frame_probs, "frame_probs")  # compared and summed in float64, never copied whole
    trigger: np.ndarray | None = None
    if onset_probs is not None:
        onset_probs = _check_roll(onset_probs, "onset_probs")
        if onset_probs.shape != probs.shape:
            raise ValueError(f"onset_probs shape {onset_probs.shape} != {probs.shape}")
        trigger = _rising(onset_probs >= config.onset_threshold)
    active = _fill_gaps(probs >= np.float64(config.threshold), config.gap_frames, trigger)
    keys, starts, ends = _segments(active, trigger)
    keep = (ends - starts) >= config.min_duration * frame_rate - _EPS
    if config.onsetless_min_duration and onset_probs is not None:
        long_enough = (ends - starts) >= config.onsetless_min_duration * frame_rate - _EPS
        started = config.onset_threshold if config.onsetless_threshold is None else config.onsetless_threshold
        keep &= long_enough | _onset_near(onset_probs >= started, keys, starts)
    keys, starts, ends = keys[keep], starts[keep], ends[keep]
    if config.velocity:
        velocities = np.full(len(keys), config.velocity, np.int64)
    elif velocity_probs is not None:
        velocity_probs = _check_roll(velocity_probs, "velocity_probs")
        if velocity_probs.shape != probs.shape:
            raise ValueError(f"velocity_probs shape {velocity_probs.shape} != {probs.shape}")
        at_onset = velocity_probs[starts, keys].astype(np.float64)
        velocities = np.clip(np.round(127.0 * at_onset), 1, 127).astype(np.int64)
    else:
        velocities = _velocities(probs, keys, starts, ends)
    intervals = np.stack([starts, ends], axis=1) / frame_rate
    if config.latency:
        intervals = np.maximum(intervals - config.latency, 0.0)
        kept = intervals[:, 1] > intervals[:, 0]  # a note moved wholly before 0 s is gone
        intervals, keys, velocities = intervals[kept], keys[kept], velocities[kept]
    return Notes.from_lists(intervals, keys + MIDI_MIN, velocities)


def decode_rolls(rolls: dict[str, np.ndarray], frame_rate: float, config: DecodingConfig | None = None) -> Notes:
    """:func:`decode` of a model's outputs as a dict ``{"frames"[, "onsets"][,
    "velocities"]}`` (what :func:`pianotx.model.output_heads` and the windowed
    prediction give)."""
    return decode(
        rolls["frames"],
        frame_rate,
        config,
        onset_probs=rolls.get("onsets"),
        velocity_probs=rolls.get("velocities"),
    )
