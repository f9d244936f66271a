"""Generated material: chords, runs, key cycles, kinds, and the shared note utilities."""

from __future__ import annotations

import numpy as np
import pytest

from pianotx.midi import Notes
from pianotx.render import common
from pianotx.render import corpus as syn
from pianotx.render import generated as gen

KEYS = list(range(21, 109))
TICK = 1 / 440


def _no_key_overlaps(notes: Notes) -> bool:
    for pitch in np.unique(notes.pitches):
        iv = notes.intervals[notes.pitches == pitch]
        if (iv[1:, 0] < iv[:-1, 1] - 1e-9).any():
            return False
    return True


# ---------------------------------------------------------------- generators


def test_chord_pitches_exact() -> None:
    assert gen.chord_pitches(60, "major", 0) == [60, 64, 67]
    assert gen.chord_pitches(60, "major", 1) == [64, 67, 72]
    assert gen.chord_pitches(60, "major", 2) == [67, 72, 76]
    assert gen.chord_pitches(57, "minor", 1) == [60, 64, 69]
    assert gen.chord_pitches(55, "dominant7", 3) == [65, 67, 71, 74]
    assert gen.chord_pitches(60, "major7", 2) == [67, 71, 72, 76]
    assert gen.chord_pitches(57, "minor7", 2) == [64, 67, 69, 72]
    with pytest.raises(ValueError, match="inversions 0..2"):
        gen.chord_pitches(60, "minor", 3)


def test_run_pitches_follow_steps() -> None:
    assert gen.run_pitches(60, gen.RUNS["major"], 9) == [60, 62, 64, 65, 67, 69, 71, 72, 74]
    assert gen.run_pitches(48, gen.RUNS["arpeggio_minor"], 5) == [48, 51, 55, 60, 63]


def test_key_cycle_plays_every_key_once_per_88() -> None:
    keys = gen.key_cycle(np.random.default_rng(0))
    first, second = [next(keys) for _ in range(88)], [next(keys) for _ in range(88)]
    assert sorted(first) == KEYS and sorted(second) == KEYS
    assert first != second  # a fresh permutation each pass


def test_isolated_note_pieces_cover_all_88_keys_exactly_once_first() -> None:
    pieces = gen.generated_pieces(seed=0, seconds=45.0, kinds=("notes",), count=2)
    assert [p.source for p in pieces] == ["gen-notes-000", "gen-notes-001"]
    played = np.concatenate([p.notes.pitches for p in pieces])  # each piece in time order
    assert len(played) >= 88
    assert sorted(played[:88].tolist()) == KEYS
    for piece in pieces:
        iv = piece.notes.intervals
        assert (iv[1:, 0] >= iv[:-1, 1] + 0.2 - TICK).all()  # one note at a time, then silence
        assert set(np.round(iv[:, 1] - iv[:, 0], 2)) <= set(gen.NOTE_LENGTHS)


def test_usual_chords_are_exact_chord_shapes() -> None:
    shapes = {tuple(np.diff(gen.chord_pitches(0, q, i))) for q, iv in gen.CHORDS.items() for i in range(len(iv))}
    notes = gen.usual_chords(np.random.default_rng(3), 30.0)
    onsets = np.unique(notes.intervals[:, 0])
    assert len(onsets) >= 15
    for onset in onsets:
        chord = sorted(notes.pitches[notes.intervals[:, 0] == onset].tolist())
        if tuple(np.diff(chord)) not in shapes:  # bass doubled an octave below
            assert chord[1] - chord[0] == 12 and tuple(np.diff(chord[1:])) in shapes


@pytest.mark.parametrize("kind", gen.KINDS)
def test_generated_kinds_stay_on_the_keyboard_and_in_time(kind: str) -> None:
    (piece,) = gen.generated_pieces(seed=0, seconds=20.0, kinds=(kind,), count=1)
    notes = piece.notes
    assert piece.kind == kind and piece.source == f"gen-{kind}-000" and len(notes) >= 5
    assert notes.pitches.min() >= 21 and notes.pitches.max() <= 108
    assert notes.velocities.min() >= 1 and notes.velocities.max() <= 127
    assert notes.intervals[:, 0].min() >= common.LEAD_IN - TICK
    assert notes.end_time <= common.LEAD_IN + 20.0 + TICK
    assert _no_key_overlaps(notes)


def test_allocate_shares_generated_pieces_by_weight() -> None:
    assert set(gen.parse_kinds(syn.RenderOptions().kinds)) <= set(gen.KINDS)  # the defaults parse
    weights = gen.parse_kinds(("notes:3", "chords:3", "random_chords:2", "runs:3", "repeats:1"))
    assert weights == {"notes": 3, "chords": 3, "random_chords": 2, "runs": 3, "repeats": 1}
    expected = ["notes"] * 3 + ["chords"] * 3 + ["random_chords"] * 2 + ["runs"] * 3 + ["repeats"]
    assert gen.allocate(12, weights) == expected
    assert gen.allocate(1, weights) == ["notes"]
    assert gen.allocate(2, weights) == ["notes", "chords"]
    assert gen.allocate(0, weights) == []


# ---------------------------------------------------------------- note utilities


def test_resolve_overlaps_cuts_at_the_restrike() -> None:
    notes = Notes.from_lists([(0.0, 1.0), (0.5, 1.5), (0.5, 0.8), (2.0, 3.0), (2.0, 2.01)], [60, 60, 62, 60, 64])
    out = common.resolve_overlaps(notes)
    assert out.intervals.tolist() == [[0.0, 0.5], [0.5, 1.5], [0.5, 0.8], [2.0, 3.0]]
    assert out.pitches.tolist() == [60, 60, 62, 60]  # the 10 ms note is dropped
