"""Piano textures: harmony, pitch helpers, every texture's invariants, pedal and MIDI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pianotx.midi import Notes, apply_sustain, read_notes, write_midi
from pianotx.render import common
from pianotx.render import generated as gen
from pianotx.render import textures as tx

TICK = 1 / 440
C_MAJOR = ("I", "vi", "ii", "V7", "V/V", "V7", "V/vi", "vi", "IV", "I")
A_MINOR = ("i", "N6", "V7", "VI", "iih7", "viio7", "V/iv", "iv", "V7", "i")


def _no_key_overlaps(notes: Notes) -> bool:
    for pitch in np.unique(notes.pitches):
        iv = notes.intervals[notes.pitches == pitch]
        if (iv[1:, 0] < iv[:-1, 1] - 1e-9).any():
            return False
    return True


def _sounding_pcs(notes: Notes, at: float) -> set[int]:
    playing = (notes.intervals[:, 0] <= at) & (notes.intervals[:, 1] > at)
    return set((notes.pitches[playing] % 12).tolist())


def _max_onsets_per_second(notes: Notes) -> int:
    """Onset groups (onsets within 30 ms count once: a chord, jittered) in any 1-s window."""
    onsets = np.unique(notes.intervals[:, 0])
    starts = onsets[np.r_[True, np.diff(onsets) > 0.03]]
    return int(max(np.searchsorted(starts, s + 1.0) - i for i, s in enumerate(starts)))


def _skeleton(numerals: tuple[str, ...], minor: bool, meter: str, bpm: float, tonic: int) -> tx.Skeleton:
    chords = tx.progression(tonic, minor, numerals)
    return tx.Skeleton(tonic, minor, tx.METERS[meter], 60.0 / bpm, chords, (0, 4))


# ---------------------------------------------------------------- harmony


def test_progression_exact_chords() -> None:
    chords = tx.progression(0, False, ["I", "ii", "V7", "V/V", "viio", "V/vi"])
    assert [c.tones for c in chords] == [(0, 4, 7), (2, 5, 9), (7, 11, 2, 5), (2, 6, 9, 0), (11, 2, 5), (4, 8, 11, 2)]
    assert chords[3].scale == (0, 2, 4, 6, 7, 9, 11)  # V/V moves in G major: F#, not F
    assert chords[5].scale == (0, 2, 4, 5, 8, 9, 11)  # V/vi in A harmonic minor: G#
    minor = tx.progression(9, True, ["i", "N6", "V7", "viio7", "III"])  # A minor
    assert [c.tones for c in minor] == [(9, 0, 4), (10, 2, 5), (4, 8, 11, 2), (8, 11, 2, 5), (0, 4, 7)]
    assert minor[4].scale == (0, 2, 4, 5, 7, 9, 11)  # III in the natural minor (no G#)
    with pytest.raises(ValueError, match="'IV' is no numeral of a minor key"):
        tx.progression(0, True, ["IV"])


@pytest.mark.parametrize("mode", ["major", "minor"])
def test_every_chord_lies_in_its_scale_in_every_key(mode: str) -> None:
    for tonic in range(12):
        for chord in tx.progression(tonic, mode == "minor", list(tx.NUMERALS[mode])):
            assert len(chord.scale) == 7 and set(chord.tones) <= set(chord.scale), (tonic, chord)
            assert chord.tones[0] == chord.root


@pytest.mark.parametrize("mode", ["major", "minor"])
def test_phrases_use_known_numerals_and_tonic_endings_fit_every_length(mode: str) -> None:
    tonic = "i" if mode == "minor" else "I"
    phrases = [p.split() for p in tx.PHRASES[mode]]
    assert all(n in tx.NUMERALS[mode] for p in phrases for n in p)
    assert {len(p) for p in phrases if p[-1] == tonic} == set(range(1, 9))


@pytest.mark.parametrize("minor", [False, True])
def test_draw_progression_fills_the_bars_and_ends_on_the_tonic(minor: bool) -> None:
    rng = np.random.default_rng(0)
    for bars in range(1, 41):
        numerals, starts = tx.draw_progression(rng, minor, bars)
        assert len(numerals) == bars and numerals[-1] == ("i" if minor else "I")
        assert starts[0] == 0 and starts == sorted(set(starts)) and starts[-1] < bars
    assert tx.draw_progression(rng, minor, 0) == ([], [])


# ---------------------------------------------------------------- pitch helpers


def test_pitch_helpers_exact() -> None:
    assert tx.pitches_in((0, 4, 7), 60, 72) == [60, 64, 67, 72]
    assert tx.nearest((0, 4, 7), 62, 48, 84) == 60  # 60 and 64 tie: the lower
    assert tx.nearest((7,), 50, 33, 48) == 43
    assert tx.close_chord((0, 4, 7), 72, 3, 48, 84) == [64, 67, 72]
    assert tx.close_chord((7, 11, 2, 5), 70, 4, 48, 84) == [62, 65, 67, 71]
    major = tx.SCALES["major"]
    assert tx.scale_step(60, major, 2) == 64 and tx.scale_step(64, major, -3) == 59
    assert tx.scale_step(61, major, 1) == 62 and tx.scale_step(61, major, -1) == 60
    assert tx.scale_step(60, major, 7) == 72
    assert tx.fold(15) == 27 and tx.fold(110) == 98 and tx.fold(60) == 60


# ---------------------------------------------------------------- tempo


def test_every_texture_has_tempi_within_its_band_in_each_meter() -> None:
    for name, spec in tx.TEXTURES.items():
        assert 0 < spec.rate[0] < spec.rate[1] <= tx.MAX_RATE, name
        for meter in spec.meters:
            assert tx.tempo_options(spec, tx.METERS[meter]), (name, meter)


def test_steps_per_beat_exact() -> None:
    four = tx.METERS["4/4"]
    assert tx.steps_per_beat(tx.TEXTURES["trills_tremolos"], four, 0.5) == 4  # 8 steps would be 16/s
    assert tx.steps_per_beat(tx.TEXTURES["trills_tremolos"], four, 0.6) == 8  # 13.3/s
    assert tx.steps_per_beat(tx.TEXTURES["alberti"], four, 0.5) == 4  # 8/s, nearer the band's middle than 4/s
    assert tx.steps_per_beat(tx.TEXTURES["arpeggios"], tx.METERS["6/8"], 0.75) == 6  # 8/s


# ---------------------------------------------------------------- dynamics


def test_phrase_arc_and_role_velocities_exact() -> None:
    arcs = [(0, 4, 60.0, 10.0, 2.0), (4, 2, 80.0, 8.0, 5.0)]
    assert [tx._arc_level(arcs, x) for x in (0.0, 1.0, 2.0, 3.0, 4.5, 5.0)] == [60.0, 65.0, 70.0, 65.0, 84.0, 88.0]
    w = tx.Writer(_skeleton(C_MAJOR, False, "4/4", 120.0, 0), np.random.default_rng(0))
    bar = w.bar(1, 2)
    assert w.velocity(bar, 0, "melody") - w.velocity(bar, 0, "inner") == 18
    assert w.velocity(bar, 0, "bass") - w.velocity(bar, 0, "inner") == 10


# ---------------------------------------------------------------- every kind


@pytest.mark.parametrize("kind", tx.KINDS)
def test_kind_stays_on_the_keyboard_in_time_and_in_its_density_band(kind: str) -> None:
    for seed in range(3):
        texture = tx.generate(kind, np.random.default_rng(seed), 45.0)
        for notes in (texture.notes, texture.sustained()):
            iv = notes.intervals
            assert len(notes) >= 20
            assert notes.pitches.min() >= 21 and notes.pitches.max() <= 108
            assert notes.velocities.min() >= 1 and notes.velocities.max() <= 127
            assert (np.diff(iv[:, 0]) >= 0).all() and (iv[:, 1] > iv[:, 0]).all()
            assert iv[:, 0].min() >= common.LEAD_IN and notes.end_time <= common.LEAD_IN + 45.0 + TICK
            assert _no_key_overlaps(notes)
        low, high = tx.DENSITY[kind]
        assert low <= len(texture.notes) / 45.0 <= high, (seed, len(texture.notes) / 45.0)
        assert _max_onsets_per_second(texture.notes) <= 16  # 15 grid steps, +1 at a window's edge


@pytest.mark.parametrize("kind", tx.KINDS)
def test_kind_is_seeded(kind: str) -> None:
    a, b, c = (tx.generate(kind, np.random.default_rng(s), 20.0) for s in (7, 7, 8))
    assert np.array_equal(a.notes.intervals, b.notes.intervals) and a.pedal == b.pedal
    assert np.array_equal(a.notes.pitches, b.notes.pitches)
    assert np.array_equal(a.notes.velocities, b.notes.velocities)
    assert len(a.notes) != len(c.notes) or not np.array_equal(a.notes.pitches, c.notes.pitches)


@pytest.mark.parametrize("kind", tx.KINDS)
@pytest.mark.parametrize(
    ("numerals", "minor", "meter", "bpm", "tonic"),
    [(C_MAJOR, False, "4/4", 100.0, 0), (A_MINOR, True, "6/8", 60.0, 9), (C_MAJOR, False, "3/4", 150.0, 7)],
)
def test_notes_sounding_as_each_chord_begins_are_its_tones(
    kind: str, numerals: tuple[str, ...], minor: bool, meter: str, bpm: float, tonic: int
) -> None:
    sk = _skeleton(numerals, minor, meter, bpm, tonic)
    texture = tx.realise(kind, sk, np.random.default_rng(0))
    for notes in (texture.notes, texture.sustained()):
        for i, chord in enumerate(sk.chords):
            at = sk.bar_start(i) + tx.JITTER + 2 * TICK
            pcs = _sounding_pcs(notes, at)
            assert pcs and pcs <= set(chord.tones), (i, chord.numeral, pcs)
        last = sk.bar_start(len(sk.chords) - 1) + tx.JITTER + 2 * TICK
        assert _sounding_pcs(notes, last) == {tonic % 12, (tonic + (3 if minor else 4)) % 12, (tonic + 7) % 12}
    assert notes.end_time <= sk.bar_start(len(sk.chords)) + TICK


@pytest.mark.parametrize("kind", tx.KINDS)
def test_every_note_is_in_its_chords_scale(kind: str) -> None:
    sk = _skeleton(A_MINOR + ("iv", "VII", "III", "V/III", "III", "iio", "V/V", "V7", "i"), True, "2/4", 90.0, 2)
    notes = tx.realise(kind, sk, np.random.default_rng(1)).notes
    bars = ((notes.intervals[:, 0] - common.LEAD_IN + TICK) // sk.bar_seconds).astype(int)  # onsets may round down
    for bar, pitch in zip(bars, notes.pitches):
        assert pitch % 12 in sk.chords[bar].scale, (bar, sk.chords[bar].numeral, pitch)


def test_too_short_for_a_bar_is_empty_and_unknown_kinds_are_refused() -> None:
    for kind in tx.KINDS:
        texture = tx.generate(kind, np.random.default_rng(0), 0.5)  # every bar is >= 0.6 s
        assert len(texture.notes) == 0 and texture.pedal == ()
    with pytest.raises(ValueError, match="texture 'polka' is unknown"):
        tx.generate("polka", np.random.default_rng(0), 10.0)


def test_counterpoint_is_mostly_consonant() -> None:
    notes = tx.generate("counterpoint", np.random.default_rng(0), 45.0).notes
    pairs = []
    for onset in notes.intervals[:, 0]:
        playing = (notes.intervals[:, 0] <= onset + 0.01) & (notes.intervals[:, 1] > onset + 0.01)
        if playing.sum() == 2:
            pairs.append(int(np.ptp(notes.pitches[playing])) % 12 in tx.CONSONANT)
    assert len(pairs) > 100 and np.mean(pairs) >= 0.7


# ---------------------------------------------------------------- pedal and MIDI


def test_pedal_changes_with_each_harmony() -> None:
    sk = _skeleton(C_MAJOR, False, "4/4", 100.0, 0)
    texture = tx.realise("arpeggios", sk, np.random.default_rng(0))  # always pedalled
    assert len(texture.pedal) == len(sk.chords)
    for i, (down, up) in enumerate(texture.pedal):
        start, end = sk.bar_start(i), sk.bar_start(i + 1)
        assert start + 0.02 <= down < up < end - 0.004
        assert round(down / TICK, 6) == round(down / TICK) and round(up / TICK, 6) == round(up / TICK)
    sustained = texture.sustained()
    assert (sustained.intervals[:, 1] >= texture.notes.intervals[:, 1]).all()
    assert (sustained.intervals[:, 1] > texture.notes.intervals[:, 1] + 0.1).sum() > len(sk.chords)


@pytest.mark.parametrize("kind", tx.KINDS)
def test_pedal_spans_are_well_formed(kind: str) -> None:
    for seed in range(4):
        pedal = tx.generate(kind, np.random.default_rng(seed), 30.0).pedal
        flat = [t for span in pedal for t in span]
        assert flat == sorted(flat) and all(down < up for down, up in pedal)
        assert not flat or (flat[0] >= common.LEAD_IN and flat[-1] <= common.LEAD_IN + 30.0 + TICK)


def test_write_midi_with_pedal_reads_back_exact(tmp_path: Path) -> None:
    notes = Notes.from_lists([(0.1, 0.3), (0.5, 0.7), (0.6, 1.0), (1.2, 1.4), (1.6, 1.8)], [60, 60, 64, 60, 67])
    path = tmp_path / "p.mid"
    write_midi(notes, path, pedal=[(0.55, 1.5)])
    held = read_notes(path, sustain=True)
    assert held.pitches.tolist() == [60, 60, 64, 60, 67]
    # released inside the pedal: held to its release; C4 cut where it is struck again
    assert np.allclose(held.intervals, [(0.1, 0.3), (0.5, 1.2), (0.6, 1.5), (1.2, 1.5), (1.6, 1.8)], atol=1e-9)
    assert np.allclose(read_notes(path, sustain=False).intervals, notes.intervals, atol=1e-9)
    assert [p.name for p in tmp_path.iterdir()] == ["p.mid"]  # no temporary file left


@pytest.mark.parametrize("kind", ["arpeggios", "melody_accompaniment", "piano"])
def test_midi_round_trip_gives_the_pedal_extended_notes(kind: str, tmp_path: Path) -> None:
    seed = next(s for s in range(50) if tx.generate(kind, np.random.default_rng(s), 20.0).pedal)
    texture = tx.generate(kind, np.random.default_rng(seed), 20.0)
    write_midi(texture.notes, tmp_path / "t.mid", pedal=texture.pedal)
    for sustain, expected in ((True, texture.sustained()), (False, texture.notes)):
        back = read_notes(tmp_path / "t.mid", sustain=sustain)
        assert np.array_equal(back.pitches, expected.pitches)
        assert np.array_equal(back.velocities, expected.velocities)
        assert np.allclose(back.intervals, expected.intervals, atol=1e-9)
    assert not np.allclose(texture.sustained().intervals, texture.notes.intervals)


def test_generated_pieces_of_a_texture_kind_carry_its_notes_and_pedal() -> None:
    pieces = gen.generated_pieces(seed=3, seconds=20.0, kinds=("arpeggios", "piano:2"), count=3)
    assert [(p.source, p.kind) for p in pieces] == [
        ("gen-arpeggios-000", "arpeggios"), ("gen-piano-000", "piano"), ("gen-piano-001", "piano")
    ]  # fmt: skip
    for piece in pieces:
        expected = tx.generate(piece.kind, common.piece_rng(3, piece.source), 20.0)
        assert np.array_equal(piece.notes.intervals, expected.notes.intervals)
        assert np.array_equal(piece.notes.pitches, expected.notes.pitches)
        assert piece.pedal == expected.pedal
        heard = gen.texture_notes(piece.kind, common.piece_rng(3, piece.source), 20.0)
        assert np.array_equal(apply_sustain(piece.notes, list(piece.pedal)).intervals, heard.intervals)
