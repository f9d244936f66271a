"""Scores: transposition, excerpts, reserved composers, music21 and MIDI-folder corpora."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pianotx.midi import Notes, read_notes, write_midi
from pianotx.render import common
from pianotx.render import corpus as syn
from pianotx.render import scores as sc

TICK = 1 / 440


# ---------------------------------------------------------------- note utilities


def test_transpose_into_range() -> None:
    p, shift = sc.transpose_into_range(np.array([60, 64]), 3)
    assert p.tolist() == [63, 67] and shift == 3
    p, shift = sc.transpose_into_range(np.array([100, 107]), 3)  # 110 > 108: an octave down
    assert p.tolist() == [91, 98] and shift == -9
    p, shift = sc.transpose_into_range(np.array([20, 50]), -2)  # 18 < 21: an octave up
    assert p.tolist() == [30, 60] and shift == 10
    p, _ = sc.transpose_into_range(np.array([10, 60, 120]), 0)  # wider than the keyboard
    assert p.tolist() == [22, 60, 108]  # not moved, outliers folded
    rng = np.random.default_rng(0)
    for _ in range(200):
        pitches = rng.integers(0, 128, rng.integers(1, 30))
        p, _ = sc.transpose_into_range(pitches, int(rng.integers(-3, 4)))
        assert p.min() >= 21 and p.max() <= 108


def test_excerpt_cuts_at_seconds_after_lead_in() -> None:
    notes = Notes.from_lists([(0.25, 1.0), (3.0, 6.0), (5.24, 5.5)], [60, 62, 64])
    out = sc.excerpt(notes, 5.0)
    assert out.intervals.tolist() == [[0.25, 1.0], [3.0, 5.25]]
    assert sc.excerpt(notes, 0.0) is notes


# ---------------------------------------------------------------- refusals


@pytest.mark.parametrize("entry", ["beethoven", "mozart/k155", "schumann_robert", "Chopin", "weber", "beach/"])
def test_reserved_composers_are_refused(entry: str) -> None:
    with pytest.raises(syn.RenderError, match="reserved for outside evaluation"):
        syn.check_options(syn.RenderOptions(corpus=("bach/bwv", entry)))
    with pytest.raises(syn.RenderError, match="reserved for outside evaluation"):
        sc.load_scores((entry,), 100, 0, 3, 45.0)


def test_reserved_composers_are_never_selected() -> None:
    assert sc.reserved_composer("webern/opus27") is None
    assert sc.reserved_composer("Weber, Carl Maria von") == "weber"
    everything = {c.source.split("-")[0].lower() for c in sc._corpus_candidates("")}
    assert "bach" in everything and "palestrina" in everything
    assert not everything & {"beethoven", "mozart", "haydn", "schubert", "chopin", "joplin",
                             "handel", "corelli", "weber", "beach", "schoenberg",
                             "schumann_robert", "schumann_clara"}  # fmt: skip


# ---------------------------------------------------------------- scores


def test_scores_are_seeded_in_range_and_written_exactly(tmp_path: Path) -> None:
    options = syn.RenderOptions(pieces=2, seconds=4.0, generated=0.5, kinds=("notes",))
    first, skipped = syn.plan_pieces(options)
    again, _ = syn.plan_pieces(options)
    other, _ = syn.plan_pieces(syn.RenderOptions(pieces=2, seconds=4.0, generated=0.5, seed=1, kinds=("notes",)))
    assert skipped == []
    assert [p.kind for p in first] == ["score", "score", "notes"]
    assert first[0].source.startswith("bach-bwv") and first[1].source.startswith("palestrina-")
    assert [p.source for p in other] != [p.source for p in first]
    for a, b in zip(first, again, strict=True):
        write_midi(a.notes, tmp_path / "a.mid")
        write_midi(b.notes, tmp_path / "b.mid")
        assert (tmp_path / "a.mid").read_bytes() == (tmp_path / "b.mid").read_bytes()
        back = read_notes(tmp_path / "a.mid", sustain=False)  # the file holds exactly the notes
        np.testing.assert_allclose(back.intervals, a.notes.intervals, atol=1e-9)
        assert back.pitches.tolist() == a.notes.pitches.tolist()
        assert back.velocities.tolist() == a.notes.velocities.tolist()
    for piece in first[:2]:
        assert -3 <= piece.transpose <= 3
        assert piece.notes.pitches.min() >= 21 and piece.notes.pitches.max() <= 108
        assert piece.notes.end_time <= common.LEAD_IN + 4.0 + TICK
        assert piece.notes.velocities.std() > 0  # humanised


def test_a_folder_of_midi_is_a_corpus(tmp_path: Path) -> None:
    folder = tmp_path / "mine"
    folder.mkdir()
    notes = Notes.from_lists([(1.0, 1.5), (1.5, 2.0), (1.5, 2.5)], [60, 64, 108])
    write_midi(notes, folder / "tune.mid")
    (folder / "notes.txt").write_text("not midi")
    (folder / "broken.mid").write_bytes(b"MThd broken")
    lines: list[str] = []
    pieces, skipped = sc.load_scores((str(folder),), count=0, seed=0, transpose=0, seconds=0.0, say=lines.append)
    assert [s[0] for s in skipped] == ["mine-broken"]
    assert skipped[0][1].startswith("MidiError: MIDI does not parse")
    assert lines == [f"warning: skipped mine-broken: {skipped[0][1]}"]
    assert len(pieces) == 1
    piece = pieces[0]
    assert (piece.source, piece.kind, piece.transpose) == ("mine-tune", "score", 0)
    np.testing.assert_allclose(piece.notes.intervals, notes.intervals - 0.75, atol=1e-9)
    assert piece.notes.pitches.tolist() == [60, 64, 108]


def test_a_score_by_a_reserved_composer_is_read_only_for_outside_evaluation(tmp_path: Path) -> None:
    from music21 import metadata, note, stream

    score = stream.Score([stream.Part([note.Note("C4", quarterLength=1), note.Note("E4", quarterLength=2)])])
    score.metadata = metadata.Metadata(composer="Ludwig van Beethoven")
    path = Path(score.write("musicxml", fp=tmp_path / "op.musicxml"))
    with pytest.raises(ValueError, match="beethoven is reserved for outside evaluation"):
        sc.score_events(path)
    np.testing.assert_array_equal(sc.score_events(path, refuse_reserved=False), [[0, 1, 60], [1, 2, 64]])
