"""The synthetic corpus: generators, score loading, refusals and a tiny real render."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from pianotx.config import ConfigError, from_dict
from pianotx.datasets import synthetic as syn
from pianotx.midi import Notes, read_notes, write_midi

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
    assert syn.chord_pitches(60, "major", 0) == [60, 64, 67]
    assert syn.chord_pitches(60, "major", 1) == [64, 67, 72]
    assert syn.chord_pitches(60, "major", 2) == [67, 72, 76]
    assert syn.chord_pitches(57, "minor", 1) == [60, 64, 69]
    assert syn.chord_pitches(55, "dominant7", 3) == [65, 67, 71, 74]
    assert syn.chord_pitches(60, "major7", 2) == [67, 71, 72, 76]
    assert syn.chord_pitches(57, "minor7", 2) == [64, 67, 69, 72]
    with pytest.raises(ValueError, match="inversions 0..2"):
        syn.chord_pitches(60, "minor", 3)


def test_run_pitches_follow_steps() -> None:
    assert syn.run_pitches(60, syn.RUNS["major"], 9) == [60, 62, 64, 65, 67, 69, 71, 72, 74]
    assert syn.run_pitches(48, syn.RUNS["arpeggio_minor"], 5) == [48, 51, 55, 60, 63]


def test_key_cycle_plays_every_key_once_per_88() -> None:
    keys = syn.key_cycle(np.random.default_rng(0))
    first, second = [next(keys) for _ in range(88)], [next(keys) for _ in range(88)]
    assert sorted(first) == KEYS and sorted(second) == KEYS
    assert first != second  # a fresh permutation each pass


def test_isolated_note_pieces_cover_all_88_keys_exactly_once_first() -> None:
    options = syn.RenderOptions(seconds=45.0, generated=1.0, kinds=("notes",))
    pieces = syn.generated_pieces(options, scores=2)
    assert [p.source for p in pieces] == ["gen-notes-000", "gen-notes-001"]
    played = np.concatenate([p.notes.pitches for p in pieces])  # each piece in time order
    assert len(played) >= 88
    assert sorted(played[:88].tolist()) == KEYS
    for piece in pieces:
        iv = piece.notes.intervals
        assert (iv[1:, 0] >= iv[:-1, 1] + 0.2 - TICK).all()  # one note at a time, then silence
        assert set(np.round(iv[:, 1] - iv[:, 0], 2)) <= set(syn.NOTE_LENGTHS)


def test_usual_chords_are_exact_chord_shapes() -> None:
    shapes = {tuple(np.diff(syn.chord_pitches(0, q, i))) for q, iv in syn.CHORDS.items() for i in range(len(iv))}
    notes = syn.usual_chords(np.random.default_rng(3), 30.0)
    onsets = np.unique(notes.intervals[:, 0])
    assert len(onsets) >= 15
    for onset in onsets:
        chord = sorted(notes.pitches[notes.intervals[:, 0] == onset].tolist())
        if tuple(np.diff(chord)) not in shapes:  # bass doubled an octave below
            assert chord[1] - chord[0] == 12 and tuple(np.diff(chord[1:])) in shapes


@pytest.mark.parametrize("kind", syn.KINDS)
def test_generated_kinds_stay_on_the_keyboard_and_in_time(kind: str) -> None:
    options = syn.RenderOptions(seconds=20.0, generated=1.0, kinds=(kind,))
    (piece,) = syn.generated_pieces(options, scores=1)
    notes = piece.notes
    assert piece.kind == kind and piece.source == f"gen-{kind}-000" and len(notes) >= 5
    assert notes.pitches.min() >= 21 and notes.pitches.max() <= 108
    assert notes.velocities.min() >= 1 and notes.velocities.max() <= 127
    assert notes.intervals[:, 0].min() >= syn.LEAD_IN - TICK
    assert notes.end_time <= syn.LEAD_IN + 20.0 + TICK
    assert _no_key_overlaps(notes)


def test_allocate_shares_generated_pieces_by_weight() -> None:
    weights = syn.parse_kinds(syn.RenderOptions().kinds)
    assert weights == {"notes": 3, "chords": 3, "random_chords": 2, "runs": 3, "repeats": 1}
    expected = ["notes"] * 3 + ["chords"] * 3 + ["random_chords"] * 2 + ["runs"] * 3 + ["repeats"]
    assert syn.allocate(12, weights) == expected
    assert syn.allocate(1, weights) == ["notes"]
    assert syn.allocate(2, weights) == ["notes", "chords"]
    assert syn.allocate(0, weights) == []


# ---------------------------------------------------------------- note utilities


def test_transpose_into_range() -> None:
    p, shift = syn.transpose_into_range(np.array([60, 64]), 3)
    assert p.tolist() == [63, 67] and shift == 3
    p, shift = syn.transpose_into_range(np.array([100, 107]), 3)  # 110 > 108: an octave down
    assert p.tolist() == [91, 98] and shift == -9
    p, shift = syn.transpose_into_range(np.array([20, 50]), -2)  # 18 < 21: an octave up
    assert p.tolist() == [30, 60] and shift == 10
    p, _ = syn.transpose_into_range(np.array([10, 60, 120]), 0)  # wider than the keyboard
    assert p.tolist() == [22, 60, 108]  # not moved, outliers folded
    rng = np.random.default_rng(0)
    for _ in range(200):
        pitches = rng.integers(0, 128, rng.integers(1, 30))
        p, _ = syn.transpose_into_range(pitches, int(rng.integers(-3, 4)))
        assert p.min() >= 21 and p.max() <= 108


def test_resolve_overlaps_cuts_at_the_restrike() -> None:
    notes = Notes.from_lists([(0.0, 1.0), (0.5, 1.5), (0.5, 0.8), (2.0, 3.0), (2.0, 2.01)], [60, 60, 62, 60, 64])
    out = syn.resolve_overlaps(notes)
    assert out.intervals.tolist() == [[0.0, 0.5], [0.5, 1.5], [0.5, 0.8], [2.0, 3.0]]
    assert out.pitches.tolist() == [60, 60, 62, 60]  # the 10 ms note is dropped


def test_excerpt_cuts_at_seconds_after_lead_in() -> None:
    notes = Notes.from_lists([(0.25, 1.0), (3.0, 6.0), (5.24, 5.5)], [60, 62, 64])
    out = syn.excerpt(notes, 5.0)
    assert out.intervals.tolist() == [[0.25, 1.0], [3.0, 5.25]]
    assert syn.excerpt(notes, 0.0) is notes


def test_trim_audio_drops_lag_and_silent_tail() -> None:
    sr, lag = 1000, 10
    audio = np.zeros(5000, np.float32)
    audio[lag + 500] = 0.5
    audio[lag + 1500] = 0.01  # ringing 0.5 s after the last note-off
    assert len(syn.trim_audio(audio, lag, 1.0, sr)) == 1501
    assert syn.trim_audio(audio, lag, 1.0, sr)[500] == 0.5  # the lag was cut from the start
    audio[lag + 1500 : lag + 2600] = 0.01  # ringing past RELEASE: cut 1 s after the note-off
    assert len(syn.trim_audio(audio, lag, 1.0, sr)) == 2000
    assert len(syn.trim_audio(np.zeros(5000, np.float32), lag, 1.0, sr)) == 1000
    assert len(syn.trim_audio(np.zeros(300, np.float32), lag, 1.0, sr)) == 1000  # padded


def test_onset_lag_finds_a_known_delay() -> None:
    sr = 16000
    audio = np.zeros(4 * sr, np.float32)
    for onset in (0.5, 1.7, 2.9):
        a = int(onset * sr) + 96  # 6 ms late
        audio[a : a + 800] = np.sin(np.arange(800) / 5.0) * np.exp(-np.arange(800) / 400)
    lag = syn.onset_lag(audio, np.array([0.5, 1.7, 2.9]), sr)
    assert abs(lag - 0.006) < 2 / sr


# ---------------------------------------------------------------- options and refusals


def test_options_from_dict_and_validation() -> None:
    data = {"corpus": ["bach/bwv"], "pieces": 2, "seconds": 4, "kinds": ["notes:1", "runs"]}
    options = from_dict(syn.RenderOptions, data)
    assert options.corpus == ("bach/bwv",) and options.kinds == ("notes:1", "runs")
    assert options.seconds == 4.0 and isinstance(options.seconds, float)
    with pytest.raises(ConfigError, match="unknown or repeated"):
        from_dict(syn.RenderOptions, {"kinds": ["trills:1"]})
    with pytest.raises(ConfigError, match="unknown key"):
        from_dict(syn.RenderOptions, {"piece": 3})


@pytest.mark.parametrize("entry", ["beethoven", "mozart/k155", "schumann_robert", "Chopin", "weber", "beach/"])
def test_reserved_composers_are_refused(entry: str) -> None:
    with pytest.raises(syn.RenderError, match="reserved for outside evaluation"):
        syn.check_options(syn.RenderOptions(corpus=("bach/bwv", entry)))
    with pytest.raises(syn.RenderError, match="reserved for outside evaluation"):
        syn.load_scores(syn.RenderOptions(corpus=(entry,)))


def test_reserved_composers_are_never_selected() -> None:
    assert syn.reserved_composer("webern/opus27") is None
    assert syn.reserved_composer("Weber, Carl Maria von") == "weber"
    everything = {c.source.split("-")[0].lower() for c in syn._corpus_candidates("")}
    assert "bach" in everything and "palestrina" in everything
    assert not everything & {"beethoven", "mozart", "haydn", "schubert", "chopin", "joplin",
                             "handel", "corelli", "weber", "beach", "schoenberg",
                             "schumann_robert", "schumann_clara"}  # fmt: skip


def test_musescore_soundfont_is_refused(tmp_path: Path) -> None:
    for path in ("/usr/share/sounds/sf2/MuseScore_General.sf3", "/x/GeneralUser_GS.sf2"):
        with pytest.raises(syn.RenderError, match="reserved for outside evaluation"):
            syn.check_options(syn.RenderOptions(soundfonts=(path,)))
    renamed = tmp_path / "piano.sf2"  # refused by the bank name in its header too
    renamed.write_bytes(b"RIFF\0\0\0\0sfbkLIST\0\0\0\0INFOINAM\x10\0\0\0MuseScore_General")
    with pytest.raises(syn.RenderError, match="musescore is reserved"):
        syn.check_soundfont(renamed)


def test_missing_tools_give_one_line_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(syn.RenderError, match=r"^soundfont /nope/Piano.sf2 not found; run"):
        syn.check_options(syn.RenderOptions(soundfonts=("/nope/Piano.sf2",)))
    monkeypatch.setattr(syn, "FLUIDSYNTH", "no-such-fluidsynth-binary")
    with pytest.raises(syn.RenderError, match=r"^no-such-fluidsynth-binary not found; run `make"):
        syn.check_options(syn.RenderOptions())


# ---------------------------------------------------------------- scores


def test_scores_are_seeded_in_range_and_written_exactly(tmp_path: Path) -> None:
    options = syn.RenderOptions(pieces=2, seconds=4.0)
    first, skipped = syn.plan_pieces(options)
    again, _ = syn.plan_pieces(options)
    other, _ = syn.plan_pieces(syn.RenderOptions(pieces=2, seconds=4.0, seed=1))
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
        assert piece.notes.end_time <= syn.LEAD_IN + 4.0 + TICK
        assert piece.notes.velocities.std() > 0  # humanised


def test_a_folder_of_midi_is_a_corpus(tmp_path: Path) -> None:
    folder = tmp_path / "mine"
    folder.mkdir()
    notes = Notes.from_lists([(1.0, 1.5), (1.5, 2.0), (1.5, 2.5)], [60, 64, 108])
    write_midi(notes, folder / "tune.mid")
    (folder / "notes.txt").write_text("not midi")
    (folder / "broken.mid").write_bytes(b"MThd broken")
    options = syn.RenderOptions(corpus=(str(folder),), pieces=0, seconds=0.0, transpose=0)
    lines: list[str] = []
    pieces, skipped = syn.load_scores(options, lines.append)
    assert [s[0] for s in skipped] == ["mine-broken"]
    assert skipped[0][1].startswith("MidiError: MIDI does not parse")
    assert lines == [f"warning: skipped mine-broken: {skipped[0][1]}"]
    assert len(pieces) == 1
    piece = pieces[0]
    assert (piece.source, piece.kind, piece.transpose) == ("mine-tune", "score", 0)
    np.testing.assert_allclose(piece.notes.intervals, notes.intervals - 0.75, atol=1e-9)
    assert piece.notes.pitches.tolist() == [60, 64, 108]


# ---------------------------------------------------------------- a real render


@pytest.mark.slow
def test_render_small_corpus_on_both_pianos(tmp_path: Path) -> None:
    out = tmp_path / "render"
    lines: list[str] = []
    report = syn.render_corpus(out, syn.RenderOptions(pieces=2, seconds=4.0), lines.append)
    manifest = json.loads((out / "render.json").read_text())
    names = [p["name"] for p in manifest["pieces"]]
    assert sorted(f.name for f in out.iterdir()) == sorted(
        [f"{n}.wav" for n in names] + [f"{n}.mid" for n in names] + ["render.json"]
    )
    assert report.pieces == 6 and report.skipped == () and len(set(names)) == 6
    assert [s["name"] for s in manifest["soundfonts"]] == ["FluidR3_GM", "TimGM6mb"]
    assert manifest["version"] == 1 and manifest["sample_rate"] == 16000 and manifest["seed"] == 0
    assert manifest["options"]["pieces"] == 2
    for font in manifest["soundfonts"]:
        assert 0.0 < font["lag_seconds"] < 0.020
        assert report.lags[font["name"]] == font["lag_seconds"]
    sources = {p["source"] for p in manifest["pieces"]}
    assert len(sources) == 3 and "gen-notes-000" in sources
    for source in sources:  # every piece on every piano
        assert sorted(p["piano"] for p in manifest["pieces"] if p["source"] == source) == [
            "FluidR3_GM", "TimGM6mb"
        ]  # fmt: skip
    for entry in manifest["pieces"]:
        info = sf.info(str(out / f"{entry['name']}.wav"))
        assert info.samplerate == 16000 and info.channels == 1
        end = read_notes(out / f"{entry['name']}.mid", sustain=False).end_time
        assert end <= info.duration <= end + syn.RELEASE + 1 / 16000  # tail trimmed
        assert entry["seconds"] == pytest.approx(info.duration, abs=1e-4)
        assert entry["name"].endswith(entry["piano"])
        if entry["kind"] == "score":
            assert f"__t{entry['transpose']:+d}__" in entry["name"]
    assert manifest["total_seconds"] == pytest.approx(report.seconds)
    assert any(line.startswith("rendered 6/6 ") for line in lines)
