"""Decoding: small activation matrices written inline, exact expected notes."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from pianotx.config import DecodingConfig
from pianotx.decoding import decode, roll_to_notes
from pianotx.labels import note_frames, notes_to_rolls
from pianotx.midi import Notes

FR = 10.0  # frames per second in the hand-written cases: frame i is i / 10 s


def probs_with(columns: dict[int, list[float]], n_frames: int = 6) -> np.ndarray:
    """(n_frames, 88) float32 with the given key columns set."""
    probs = np.zeros((n_frames, 88), np.float32)
    for key, column in columns.items():
        probs[:, key] = column
    return probs


def as_tuples(notes: Notes) -> list[tuple[float, float, int, int]]:
    return [
        (float(on), float(off), int(p), int(v))
        for (on, off), p, v in zip(notes.intervals, notes.pitches, notes.velocities, strict=True)
    ]


def test_decode_small_matrix_exact_notes() -> None:
    probs = probs_with(
        {
            39: [0.9, 0.8, 0.7, 0.1, 0.0, 0.0],  # MIDI 60, frames 0-2
            43: [0.0, 0.6, 0.6, 0.6, 0.6, 0.6],  # MIDI 64, runs to the end
            46: [0.0, 0.0, 0.0, 0.55, 0.0, 0.0],  # MIDI 67, one frame
            0: [0.49, 0.5, 0.5, 0.49, 0.0, 0.0],  # MIDI 21, threshold is inclusive
        }
    )
    notes = decode(probs, FR, DecodingConfig(min_duration=0.0))
    assert as_tuples(notes) == [
        (0.0, 0.3, 60, 102),  # mean 0.8 -> round(101.6)
        (0.1, 0.3, 21, 64),  # mean 0.5 -> round(63.5) (half to even)
        (0.1, 0.6, 64, 76),  # mean 0.6 -> round(76.2)
        (0.3, 0.4, 67, 70),  # 0.55 -> round(69.85)
    ]


def test_min_duration_drops_short_notes() -> None:
    probs = probs_with({39: [1, 1, 0, 0, 0, 0], 46: [0, 0, 0, 1, 0, 0]})
    assert as_tuples(decode(probs, FR, DecodingConfig(min_duration=0.15))) == [(0.0, 0.2, 60, 127)]
    # exactly min_duration is kept (2 frames = 0.2 s)
    assert len(decode(probs, FR, DecodingConfig(min_duration=0.2))) == 1
    assert len(decode(probs, FR, DecodingConfig(min_duration=0.21))) == 0
    # default 0.05 s at 31.25 frames/s: one frame (32 ms) dropped, two (64 ms) kept
    assert as_tuples(decode(probs, 31.25)) == [(0.0, 2 / 31.25, 60, 127)]


def test_fixed_velocity() -> None:
    probs = probs_with({39: [0.6, 0.6, 0, 0, 0, 0]})
    notes = decode(probs, FR, DecodingConfig(velocity=90, min_duration=0.0))
    assert as_tuples(notes) == [(0.0, 0.2, 60, 90)]


def test_velocity_is_at_least_one() -> None:
    probs = probs_with({39: [0.001, 0.001, 0, 0, 0, 0]})
    notes = decode(probs, FR, DecodingConfig(threshold=0.0005, min_duration=0.0))
    assert notes.velocities.tolist() == [1]


def test_onsets_retrigger_a_held_key() -> None:
    frames = probs_with({39: [0.9, 0.9, 0.9, 0.9, 0.9, 0.9], 43: [0, 0, 0, 0, 0, 0]})
    onsets = probs_with(
        {
            39: [0.9, 0.6, 0.1, 0.8, 0.2, 0.0],  # rising edges at 0 and 3 (not 1)
            43: [0.0, 0.9, 0.0, 0.0, 0.0, 0.0],  # onset without frames: no note
        }
    )
    notes = decode(frames, FR, DecodingConfig(min_duration=0.0, velocity=80), onsets)
    assert as_tuples(notes) == [(0.0, 0.3, 60, 80), (0.3, 0.6, 60, 80)]
    # a retrigger that leaves a too-short piece drops just that piece
    onsets[5, 39] = 0.9
    notes = decode(frames, FR, DecodingConfig(min_duration=0.15, velocity=80), onsets)
    assert as_tuples(notes) == [(0.0, 0.3, 60, 80), (0.3, 0.5, 60, 80)]


def test_onset_threshold() -> None:
    frames = probs_with({39: [1, 1, 1, 1, 1, 1]})
    onsets = probs_with({39: [0.9, 0, 0, 0.4, 0, 0]})
    low = DecodingConfig(onset_threshold=0.3, min_duration=0.0)
    high = DecodingConfig(onset_threshold=0.5, min_duration=0.0)
    assert len(decode(frames, FR, low, onsets)) == 2
    assert len(decode(frames, FR, high, onsets)) == 1


def test_runs_no_onset_starts_need_onsetless_min_duration() -> None:
    frames = probs_with(
        {
            10: [0.9, 0.9, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],  # short, no onset: a harmonic
            20: [0.0, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.0],  # long (0.6 s), no onset: onset missed
            30: [0.0, 0.0, 0.9, 0.9, 0.0, 0.0, 0.0, 0.0],  # onset one frame before the run
            40: [0.0, 0.0, 0.0, 0.9, 0.9, 0.0, 0.0, 0.0],  # onset one frame into the run
            50: [0.0, 0.0, 0.0, 0.0, 0.0, 0.9, 0.9, 0.0],  # onset two frames before: too far
        },
        n_frames=8,
    )
    onsets = probs_with({30: [0, 0.9, 0, 0, 0, 0, 0, 0], 40: [0, 0, 0, 0, 0.9, 0, 0, 0],
                         50: [0, 0, 0, 0.9, 0, 0, 0, 0]}, n_frames=8)  # fmt: skip
    plain = DecodingConfig(min_duration=0.0, velocity=80)
    assert [int(p) for p in decode(frames, FR, plain, onsets).pitches] == [31, 41, 51, 61, 61, 71]
    strict = DecodingConfig(min_duration=0.0, velocity=80, onsetless_min_duration=0.5)
    assert as_tuples(decode(frames, FR, strict, onsets)) == [
        (0.1, 0.7, 41, 80),  # 6 frames = 0.6 s >= 0.5 s
        (0.2, 0.4, 51, 80),
        (0.3, 0.4, 61, 80),  # the onset at frame 4 also splits the run there
        (0.4, 0.5, 61, 80),
    ]
    longer = DecodingConfig(min_duration=0.0, velocity=80, onsetless_min_duration=0.7)
    assert [int(p) for p in decode(frames, FR, longer, onsets).pitches] == [51, 61, 61]
    # without an onset output the setting does nothing
    assert len(decode(frames, FR, strict)) == 5
    with pytest.raises(ValueError, match="onsetless_min_duration"):
        DecodingConfig(onsetless_min_duration=-1.0)


def test_a_weaker_onset_starts_a_run_than_cuts_one_with_onsetless_threshold() -> None:
    frames = probs_with(
        {
            10: [0.9, 0.9, 0.9, 0.9, 0.9, 0.9],  # sounding throughout, an onset bump of 0.5 mid-way
            20: [0.0, 0.0, 0.9, 0.9, 0.0, 0.0],  # short, an onset of 0.5 at its start
            30: [0.0, 0.0, 0.9, 0.9, 0.0, 0.0],  # short, an onset of 0.3: a harmonic
        }
    )
    onsets = probs_with({10: [0.9, 0, 0, 0.5, 0, 0], 20: [0, 0, 0.5, 0, 0, 0], 30: [0, 0, 0.3, 0, 0, 0]})
    one = DecodingConfig(onset_threshold=0.8, min_duration=0.0, velocity=80, onsetless_min_duration=0.5)
    assert as_tuples(decode(frames, FR, one, onsets)) == [(0.0, 0.6, 31, 80)]  # both short runs dropped
    apart = dataclasses.replace(one, onsetless_threshold=0.5)
    assert as_tuples(decode(frames, FR, apart, onsets)) == [(0.0, 0.6, 31, 80), (0.2, 0.4, 41, 80)]
    lower = dataclasses.replace(one, onset_threshold=0.5)  # one threshold low enough also cuts MIDI 31
    assert as_tuples(decode(frames, FR, lower, onsets)) == [(0.0, 0.3, 31, 80), (0.2, 0.4, 41, 80), (0.3, 0.6, 31, 80)]
    with pytest.raises(ValueError, match="onsetless_threshold"):
        DecodingConfig(onsetless_threshold=1.5)


def test_gap_frames_bridges_short_inner_gaps_only() -> None:
    column = [1, 1, 0, 1, 1, 0, 0, 1]
    probs = probs_with({39: column, 40: [0, 1, 1, 0, 0, 0, 0, 0]}, n_frames=8)
    config = DecodingConfig(min_duration=0.0, gap_frames=1, velocity=80)
    assert as_tuples(decode(probs, FR, config)) == [
        (0.0, 0.5, 60, 80),  # one-frame gap at frame 2 bridged
        (0.1, 0.3, 61, 80),  # leading / trailing silence is not a gap
        (0.7, 0.8, 60, 80),  # two-frame gap kept
    ]
    two = DecodingConfig(min_duration=0.0, gap_frames=2, velocity=80)
    assert as_tuples(decode(probs, FR, two))[0] == (0.0, 0.8, 60, 80)
    # an onset right after the gap means a new note: no bridging
    onsets = probs_with({39: [1, 0, 0, 1, 0, 0, 0, 1]}, n_frames=8)
    assert as_tuples(decode(probs, FR, config, onsets)) == [
        (0.0, 0.2, 60, 80),
        (0.1, 0.3, 61, 80),
        (0.3, 0.5, 60, 80),
        (0.7, 0.8, 60, 80),
    ]


def test_gap_bridged_velocity_includes_gap_frames() -> None:
    probs = probs_with({39: [0.9, 0.9, 0.3, 0.9, 0.0, 0.0]})
    notes = decode(probs, FR, DecodingConfig(min_duration=0.0, gap_frames=1))
    assert as_tuples(notes) == [(0.0, 0.4, 60, 95)]  # mean 0.75 -> round(95.25)


def test_empty_and_silent_inputs() -> None:
    assert len(decode(np.zeros((0, 88), np.float32), FR)) == 0
    assert len(decode(np.zeros((5, 88), np.float32), FR)) == 0
    empty = roll_to_notes(np.zeros((0, 88), np.uint8), FR)
    assert empty.intervals.shape == (0, 2) and len(empty) == 0


def test_bad_inputs_raise() -> None:
    with pytest.raises(ValueError):
        decode(np.zeros(88), FR)
    with pytest.raises(ValueError):
        decode(np.zeros((4, 88)), FR, onset_probs=np.zeros((5, 88)))
    with pytest.raises(ValueError):
        roll_to_notes(np.zeros((4, 88)), FR, onsets=np.zeros((4, 87)))
    for bad in ({"threshold": 1.5}, {"min_duration": -1.0}, {"gap_frames": -1}, {"velocity": 200}):
        with pytest.raises(ValueError):
            DecodingConfig(**bad)


def test_notes_to_rolls_round_trip_exact() -> None:
    fr = 31.25
    notes = Notes.from_lists(
        [
            (0.0, 0.5),
            (0.5, 0.9),  # same pitch, starts where the previous ends
            (0.1, 0.11),  # shorter than a frame: one frame
            (0.2, 1.3),
            (1.0, 1.2),
            (0.333, 0.777),  # off the grid
        ],
        [60, 60, 21, 108, 64, 64],
    )
    frames, onsets = notes_to_rolls(notes, 50, fr)
    start, end = note_frames(notes, fr)
    expected = Notes.from_lists(np.stack([start, end], 1) / fr, notes.pitches)
    back = roll_to_notes(frames, fr, onsets)
    assert as_tuples(back) == as_tuples(expected)
    decoded = decode(frames.astype(np.float32), fr, DecodingConfig(min_duration=0.0), onsets)
    assert decoded.intervals.tolist() == expected.intervals.tolist()
    assert decoded.pitches.tolist() == expected.pitches.tolist()
    assert set(decoded.velocities.tolist()) == {127}


def test_without_onsets_touching_notes_merge() -> None:
    notes = Notes.from_lists([(0.0, 0.2), (0.2, 0.5)], [60, 60])
    frames, _ = notes_to_rolls(notes, 6, FR)
    assert as_tuples(roll_to_notes(frames, FR)) == [(0.0, 0.5, 60, 80)]


def test_roll_notes_roll_identity_on_random_rolls() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        frames = (rng.random((40, 88)) < 0.3).astype(np.uint8)
        onsets = ((rng.random((40, 88)) < 0.2) & (frames == 1)).astype(np.uint8)
        notes = roll_to_notes(frames, 31.25, onsets)
        frames2, onsets2 = notes_to_rolls(notes, 40, 31.25)
        previous = np.zeros_like(frames)
        previous[1:] = frames[:-1]
        run_starts = (frames == 1) & (previous == 0)
        np.testing.assert_array_equal(frames2, frames)
        np.testing.assert_array_equal(onsets2, (run_starts | (onsets == 1)).astype(np.uint8))


def _smooth_random_probs(rng: np.random.Generator, n_frames: int) -> np.ndarray:
    raw = rng.random((n_frames + 4, 88))
    kernel = np.ones(5) / 5.0
    smooth = np.stack([np.convolve(raw[:, k], kernel, "valid") for k in range(88)], 1)
    return smooth.astype(np.float32)


@pytest.mark.parametrize("with_onsets", [False, True])
def test_threshold_sweep_invariants(with_onsets: bool) -> None:
    rng = np.random.default_rng(1)
    probs = _smooth_random_probs(rng, 200)
    onsets = rng.random((200, 88)).astype(np.float32) if with_onsets else None
    for threshold in np.linspace(0.3, 0.7, 9):
        for min_duration in (0.0, 0.05, 0.1):
            for gap_frames in (0, 1, 2):
                config = DecodingConfig(float(threshold), 0.8, min_duration, gap_frames)
                notes = decode(probs, 31.25, config, onsets)
                _check_invariants(notes, probs, config, 31.25)


def _check_invariants(notes: Notes, probs: np.ndarray, config: DecodingConfig, fr: float) -> None:
    durations = notes.intervals[:, 1] - notes.intervals[:, 0]
    assert np.all(durations >= config.min_duration - 1e-9)
    assert np.all(durations > 0)
    assert np.all((notes.velocities >= 1) & (notes.velocities <= 127))
    assert np.all((notes.pitches >= 21) & (notes.pitches <= 108))
    assert np.all(np.diff(notes.intervals[:, 0]) >= 0)
    for pitch in np.unique(notes.pitches):
        iv = notes.intervals[notes.pitches == pitch]
        iv = iv[np.argsort(iv[:, 0])]
        assert np.all(iv[1:, 0] >= iv[:-1, 1] - 1e-9), "same-pitch notes overlap"
    if config.gap_frames == 0:
        for (on, off), pitch in zip(notes.intervals, notes.pitches, strict=True):
            cells = probs[round(on * fr) : round(off * fr), pitch - 21]
            assert np.all(cells >= config.threshold)


def test_decoding_with_onsets_on_stored_activations() -> None:
    """An earlier bundled model's frame and onset probabilities on the golden clip
    (tests/test_golden.py: C-E-G at 0.25 s, D, F, then C3 with C5 at 2.0 s), stored as
    float16. The C3 makes the model hear its twelfth, G4, for 27 frames without any
    onset; C5's frames flicker after its onset."""
    from pathlib import Path

    stored = np.load(Path(__file__).parent / "data" / "golden_activations.npz")
    frames, onsets, rate = stored["frames"].astype(np.float32), stored["onsets"].astype(np.float32), 31.25
    assert float(stored["frame_rate"]) == rate and frames.shape == onsets.shape == (110, 88)

    def notes(onsetless: float) -> list[tuple[int, int, int]]:
        config = DecodingConfig(threshold=0.5, onset_threshold=0.8, velocity=80, onsetless_min_duration=onsetless)
        est = decode(frames, rate, config, onsets)
        return [(round(a * rate), round(b * rate), int(p)) for (a, b), p in zip(est.intervals, est.pitches)]

    played = [(8, 27, 60), (8, 28, 64), (8, 28, 67), (31, 48, 62), (47, 62, 65), (63, 94, 48), (64, 74, 72)]
    flickers = [(75, 77, 72), (86, 88, 72)]  # two-frame runs of C5 after its onset, none of their own
    twelfth = (63, 90, 67)
    by_onset = {"key": lambda n: (n[0], n[2])}  # decode's order: onset, then pitch
    assert notes(0.0) == sorted([*played, *flickers, twelfth], **by_onset)
    assert notes(0.5) == sorted([*played, twelfth], **by_onset)  # 0.86 s: long enough to stay
    assert notes(1.0) == played


def random_rolls(seed: int, n_frames: int, n_keys: int = 88) -> dict[str, np.ndarray]:
    """Rolls with the structure a model gives: runs of high frame probability of random
    lengths (some long), dropouts inside them, values near the thresholds, sparse onset
    peaks (some inside runs), a velocity output."""
    rng = np.random.default_rng(seed)
    frames = rng.random((n_frames, n_keys)).astype(np.float32) * 0.45
    onsets = rng.random((n_frames, n_keys)).astype(np.float32) * 0.4
    for _ in range(n_frames * n_keys // 40):
        key, start = int(rng.integers(n_keys)), int(rng.integers(n_frames))
        length = int(rng.choice([1, 2, 3, 5, 8, 20, 60]))
        frames[start : start + length, key] = rng.uniform(0.45, 1.0, len(frames[start : start + length, key]))
        onsets[start, key] = rng.uniform(0.3, 1.0)
        if rng.random() < 0.3:  # a dropout inside the run, and a re-strike
            frames[min(start + length // 2, n_frames - 1), key] = rng.uniform(0.0, 0.5)
            onsets[min(start + length // 3 + 1, n_frames - 1), key] = rng.uniform(0.6, 1.0)
    velocities = rng.random((n_frames, n_keys)).astype(np.float32)
    return {"frames": frames, "onsets": onsets, "velocities": velocities}


def in_blocks(rolls: dict[str, np.ndarray], sizes: list[int]):
    start, k = 0, 0
    n = len(rolls["frames"])
    while start < n:
        stop = start + sizes[k % len(sizes)]
        yield {name: roll[start:stop] for name, roll in rolls.items()}
        start, k = stop, k + 1


STREAM_CONFIGS = [
    DecodingConfig(),
    DecodingConfig(threshold=0.6, min_duration=0.0, gap_frames=1),
    DecodingConfig(threshold=0.5, onset_threshold=0.7, gap_frames=3, min_duration=0.25),
    DecodingConfig(onsetless_min_duration=1.0, onsetless_threshold=0.5, gap_frames=2, latency=0.05),
    DecodingConfig(onsetless_min_duration=100.0, latency=-0.03, velocity=90),
    DecodingConfig(threshold=0.45, gap_frames=8, latency=0.02, min_duration=0.0),
]


@pytest.mark.parametrize("config", STREAM_CONFIGS, ids=[f"config{i}" for i in range(len(STREAM_CONFIGS))])
@pytest.mark.parametrize(
    "heads", [("frames",), ("frames", "onsets"), ("frames", "velocities"), ("frames", "onsets", "velocities")]
)
@pytest.mark.parametrize("sizes", [[1], [7], [64, 3, 200], [10_000]], ids=["1", "7", "mixed", "longer-than-piece"])
def test_streamed_notes_equal_decode_exactly(config, heads, sizes) -> None:
    from pianotx.decoding import decode_rolls, decode_stream

    rolls = {name: roll for name, roll in random_rolls(len(heads) + len(sizes), 400).items() if name in heads}
    expected = decode_rolls(rolls, FR, config)
    got = decode_stream(in_blocks(rolls, sizes), FR, config)
    assert len(expected) > 100
    assert as_tuples(got) == as_tuples(expected)  # the same floats, pitches, velocities, order


def test_a_note_longer_than_any_block_holds_its_frames_only() -> None:
    from pianotx.decoding import NoteStream, join_notes

    rolls = random_rolls(5, 3000, n_keys=12)
    rolls["frames"][100:2900, 3] = 0.9  # key 3 held for 2,800 frames
    rolls["onsets"][101:2900, 3] = 0.0
    config = DecodingConfig(gap_frames=1)
    stream, parts, held, first = NoteStream(FR, config), [], [], []
    for block in in_blocks(rolls, [50]):
        parts.append(stream.push_rolls(block))
        held.append(len(stream.rolls["frames"]))
        first.append(stream.base)
    parts.append(stream.finish())
    notes = as_tuples(join_notes(parts))
    assert notes == as_tuples(decode(rolls["frames"], FR, config, rolls["onsets"], rolls["velocities"]))
    assert (10.0, 290.0, 24, 46) in notes
    # while it sounds the frames held start at frame 99, the one before it; then a few again
    assert first[3:58] == [99] * 55 and held[57] == 2900 - 99
    assert first[58:] == [2946, 2990] and held[58:] == [4, 10]


def test_note_stream_holds_a_bounded_tail_on_a_long_piece() -> None:
    from pianotx.decoding import NoteStream, decode_rolls, join_notes

    rolls = random_rolls(9, 20_000)
    del rolls["velocities"]  # velocities from running sums over 20,000 frames
    stream, parts, held = NoteStream(FR), [], []
    for block in in_blocks(rolls, [256]):
        parts.append(stream.push_rolls(block))
        held.append(len(stream.rolls["frames"]))
    parts.append(stream.finish())
    assert max(held) == 56  # after each block: the runs still sounding at its end (and the last 2 frames)
    assert as_tuples(join_notes(parts)) == as_tuples(decode_rolls(rolls, FR))


def test_note_stream_refuses_blocks_that_do_not_match() -> None:
    from pianotx.decoding import NoteStream

    stream = NoteStream(FR)
    stream.push(np.zeros((5, 88), np.float32), np.zeros((5, 88), np.float32))
    with pytest.raises(
        ValueError, match="a block of \\['frames'\\] \\(5, 88\\), after blocks of \\['frames', 'onsets'\\]"
    ):
        stream.push(np.zeros((5, 88), np.float32))
    with pytest.raises(ValueError, match="onset_probs shape \\(4, 88\\) != \\(5, 88\\)"):
        stream.push(np.zeros((5, 88), np.float32), np.zeros((4, 88), np.float32))
    assert len(stream.finish()) == 0
    with pytest.raises(ValueError, match="push after finish"):
        stream.push(np.zeros((5, 88), np.float32))
    assert len(NoteStream(FR).finish()) == 0  # nothing pushed: no notes
