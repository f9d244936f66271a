"""Probability rolls -> notes.

A roll is (n_frames, n_keys) with key ``k`` = MIDI ``21 + k`` and frame ``i`` centred on
``i / frame_rate`` seconds. Each run of active frames ``[s, e)`` of one key is a note
with onset ``s / frame_rate`` and offset ``e / frame_rate`` seconds: exactly the inverse
of :func:`pianotx.labels.notes_to_rolls`, so notes -> rolls -> notes gives back the
notes quantised to the frame grid (:func:`pianotx.labels.note_frames`), with the
default ``latency`` of 0.

Notes of one key never overlap: a run is split where an onset re-triggers the key, and
the earlier note ends where the later one starts.

:func:`decode` takes whole rolls; :class:`NoteStream` takes them in consecutive blocks of
rows (as :func:`pianotx.windows.stream_rolls` hands them out) and gives each note as
soon as later frames can no longer change it, holding only the frames since the start
of the notes still sounding: its notes are :func:`decode`'s, exactly.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

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


def _velocities(
    probs: np.ndarray, keys: np.ndarray, starts: np.ndarray, ends: np.ndarray, sums: np.ndarray | None = None
) -> np.ndarray:
    """``clip(round(127 * mean frame probability), 1, 127)`` of each note, from one
    float64 running sum per key (not a float64 copy of the whole roll).

    ``sums``: the running sums already known, (n_frames + 1, n_keys) float64, row ``i``
    the sum of the frames before ``i`` (of the whole piece, for :class:`NoteStream`'s
    rows of it: the same numbers, so the same velocities).
    """
    mean = np.zeros(len(keys))
    for key in np.unique(keys):
        of_key = keys == key
        csum = np.concatenate([[0.0], np.cumsum(probs[:, key], dtype=np.float64)]) if sums is None else sums[:, key]
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
    keys, starts, ends, velocities, _ = _frame_notes(frame_probs, frame_rate, config, onset_probs, velocity_probs)
    return _notes(keys, starts, ends, velocities, frame_rate, config)


def _frame_notes(
    frame_probs: np.ndarray,
    frame_rate: float,
    config: DecodingConfig,
    onset_probs: np.ndarray | None = None,
    velocity_probs: np.ndarray | None = None,
    sums: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """:func:`decode`'s notes in frames: keys, starts, ends (exclusive) and velocities,
    sorted by key then start, and the active frames after gap bridging ((n_frames,
    n_keys) bool). ``sums``: as :func:`_velocities`."""
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
        velocities = _velocities(probs, keys, starts, ends, sums)
    return keys, starts, ends, velocities, active


def _notes(
    keys: np.ndarray,
    starts: np.ndarray,
    ends: np.ndarray,
    velocities: np.ndarray,
    frame_rate: float,
    config: DecodingConfig,
) -> Notes:
    """Notes in frames (absolute) -> :class:`Notes` in seconds, moved by the latency."""
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


class NoteStream:
    """:func:`decode` of rolls that arrive in consecutive blocks of rows, each note given
    as soon as it is final, with only the recent frames held.

    Feed it each block with :meth:`push` (or :meth:`push_rolls`), then call
    :meth:`finish`; the notes they return, together (:func:`join_notes`), are exactly
    those :func:`decode` gives on the whole rolls, for every :class:`DecodingConfig`.

    How: every call decodes the frames held as one roll. Keys are decoded independently,
    and a note depends only on its own frames, one frame before it and up to
    ``gap_frames + 1`` after it (a gap after it bridged or not, an onset re-triggering
    the key). So a note is final once it has ended at least ``gap_frames + 2`` frames
    before the last frame held. For each key the frame before the start of its earliest
    run of active frames not yet ended there is inactive and stays so: the frames before
    it are done with. The frames held start at the earliest such frame of any key, and
    for each key only the notes starting after its own such frame are taken (a note
    found again after the held frames moved on is given once, by key and start). So the
    frames held reach back to the start of the longest note still sounding, whatever the
    piece's length: a note longer than any block holds its frames, and no more.

    Args:
        frame_rate: frames per second.
        config: as :func:`decode`.
    """

    def __init__(self, frame_rate: float, config: DecodingConfig | None = None) -> None:
        self.frame_rate = frame_rate
        self.config = config or DecodingConfig()
        self.base = 0  # the piece's frame of the first frame held
        self.rolls: dict[str, np.ndarray] = {}  # "frames"[, "onsets"][, "velocities"]: the frames held
        self.sums: np.ndarray | None = None  # (held + 1, n_keys) float64 running sums of the frame probabilities
        self.settled: np.ndarray | None = None  # (n_keys,) per key: notes starting after this frame are new
        self.given: set[tuple[int, int]] = set()  # (key, start) of the notes given that may be found again
        self.finished = False

    def push(
        self, frame_probs: np.ndarray, onset_probs: np.ndarray | None = None, velocity_probs: np.ndarray | None = None
    ) -> Notes:
        """The next rows of the rolls (as :func:`decode` takes them; the same ones given
        or not in every call) -> the notes that became final, sorted as :class:`Notes`.

        Raises:
            ValueError: a block's shape or its set of rolls differs from the first's, or
                :meth:`finish` was called.
        """
        if self.finished:
            raise ValueError("NoteStream: push after finish")
        block = {"frames": _check_roll(frame_probs, "frame_probs")}
        for name, roll in (("onsets", onset_probs), ("velocities", velocity_probs)):
            if roll is not None:
                block[name] = _check_roll(roll, f"{name[:-1]}_probs")
                if block[name].shape != block["frames"].shape:
                    raise ValueError(f"{name[:-1]}_probs shape {block[name].shape} != {block['frames'].shape}")
        if self.settled is None:
            self._start(block)
        elif set(block) != set(self.rolls) or block["frames"].shape[1] != self.rolls["frames"].shape[1]:
            raise ValueError(
                f"NoteStream: a block of {sorted(block)} {block['frames'].shape}, "
                f"after blocks of {sorted(self.rolls)} with {self.rolls['frames'].shape[1]} keys"
            )
        else:
            self.rolls = {name: np.concatenate([self.rolls[name], rows]) for name, rows in block.items()}
        if self.sums is not None:
            self.sums = np.concatenate([self.sums, _running_sums(self.sums[-1], block["frames"])])
        return self._decode(final=False)

    def push_rolls(self, rolls: Mapping[str, np.ndarray]) -> Notes:
        """:meth:`push` of a model's output rows ``{"frames"[, "onsets"][, "velocities"]}``
        (as :func:`decode_rolls` takes them)."""
        return self.push(rolls["frames"], rolls.get("onsets"), rolls.get("velocities"))

    def finish(self) -> Notes:
        """The last notes: those still open at the end of the piece."""
        if self.finished:
            raise ValueError("NoteStream: finish called twice")
        self.finished = True
        if self.settled is None:
            return Notes.empty()
        return self._decode(final=True)

    def _start(self, block: dict[str, np.ndarray]) -> None:
        self.rolls = block
        n_keys = block["frames"].shape[1]
        self.settled = np.full(n_keys, -1, np.int64)
        if not self.config.velocity and "velocities" not in block:  # velocity from the mean frame probability
            self.sums = np.zeros((1, n_keys), np.float64)

    def _decode(self, final: bool) -> Notes:
        assert self.settled is not None
        config, rolls = self.config, self.rolls
        n = len(rolls["frames"])
        keys, starts, ends, velocities, active = _frame_notes(
            rolls["frames"], self.frame_rate, config, rolls.get("onsets"), rolls.get("velocities"), self.sums
        )
        last = n if final else n - (config.gap_frames + 2)  # notes ending by then are final
        settled = self.settled - self.base  # per key, in frames held
        new = (ends <= last) & (starts > settled[keys])
        new[new] = [(k, s) not in self.given for k, s in zip(keys[new].tolist(), (starts[new] + self.base).tolist())]
        keys, starts, ends, velocities = keys[new], starts[new] + self.base, ends[new] + self.base, velocities[new]
        notes = _notes(keys, starts, ends, velocities, self.frame_rate, config)
        if final:
            return notes
        self.given.update(zip(keys.tolist(), starts.tolist()))
        # Per key, the frame before its earliest run still open (else `last`): inactive
        # for good, so the key's frames before it can go.
        run_keys, run_starts, run_ends = _segments(active, None)
        still = (run_ends > last) & (run_starts > settled[run_keys])
        done_before = np.full(len(settled), last, np.int64)
        np.minimum.at(done_before, run_keys[still], run_starts[still] - 1)
        settled = np.maximum(settled, done_before)
        self.settled = settled + self.base
        self.given = {(k, s) for k, s in self.given if s > self.settled[k]}  # the others are not found again
        drop = int(settled.min())
        if drop > 0:
            self.rolls = {name: roll[drop:].copy() for name, roll in rolls.items()}
            if self.sums is not None:
                self.sums = self.sums[drop:].copy()
            self.base += drop
        return notes


def _running_sums(carried: np.ndarray, frame_probs: np.ndarray) -> np.ndarray:
    """The running float64 sums after each of the rows of ``frame_probs``, continuing
    from ``carried`` (n_keys,): added one row at a time, as ``np.cumsum`` of the whole
    column adds them, so the sums are the whole roll's to the bit."""
    return np.cumsum(np.concatenate([carried[None], frame_probs.astype(np.float64)]), axis=0)[1:]


def decode_stream(
    blocks: Iterable[Mapping[str, np.ndarray]], frame_rate: float, config: DecodingConfig | None = None
) -> Notes:
    """:func:`decode_rolls` of rolls given block by block (see :class:`NoteStream`):
    the same notes, exactly."""
    stream = NoteStream(frame_rate, config)
    parts = [stream.push_rolls(rolls) for rolls in blocks]
    return join_notes([*parts, stream.finish()])


def join_notes(parts: Iterable[Notes]) -> Notes:
    """The notes of several :class:`Notes` together, sorted (as :class:`NoteStream`
    gives them: in the order they became final)."""
    parts = list(parts)
    if not parts:
        return Notes.empty()
    return Notes.from_lists(
        np.concatenate([p.intervals for p in parts]),
        np.concatenate([p.pitches for p in parts]),
        np.concatenate([p.velocities for p in parts]),
    )
