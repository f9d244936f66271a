import numpy as np
import pytest

from pianotx.midi import MidiError, Notes, apply_sustain, read_notes, write_midi


def _pm_with_pedal(path, notes, pedal):
    import pretty_midi

    pm = pretty_midi.PrettyMIDI()
    inst = pretty_midi.Instrument(0)
    inst.notes = [pretty_midi.Note(80, p, s, e) for p, s, e in notes]
    inst.control_changes = [pretty_midi.ControlChange(64, v, t) for t, v in pedal]
    pm.instruments.append(inst)
    pm.write(str(path))


def test_write_then_read_round_trip(tmp_path):
    notes = Notes.from_lists([(0.5, 1.0), (0.0, 0.25)], [60, 64], [90, 40])
    write_midi(notes, tmp_path / "a.mid")
    back = read_notes(tmp_path / "a.mid")
    assert back.pitches.tolist() == [64, 60]
    assert back.velocities.tolist() == [40, 90]
    np.testing.assert_allclose(back.intervals, [[0.0, 0.25], [0.5, 1.0]], atol=1e-3)


def test_sustain_pedal_extends_until_release_or_restrike(tmp_path):
    # pedal down 0.5..2.0; 60 released at 1.0 -> held to 2.0; 62 struck again at 1.5 -> cut at 1.5;
    # 64 released at 2.5 after the pedal -> unchanged
    _pm_with_pedal(
        tmp_path / "p.mid",
        [(60, 0.0, 1.0), (62, 0.6, 0.8), (62, 1.5, 1.7), (64, 0.0, 2.5)],
        [(0.5, 127), (2.0, 0)],
    )
    on = read_notes(tmp_path / "p.mid", sustain=True)
    got = {(int(p), round(float(s), 3)): round(float(e), 3) for (s, e), p in zip(on.intervals, on.pitches)}
    assert got == {(60, 0.0): 2.0, (62, 0.6): 1.5, (62, 1.5): 2.0, (64, 0.0): 2.5}
    off = read_notes(tmp_path / "p.mid", sustain=False)
    assert sorted(np.round(off.intervals[:, 1], 3).tolist()) == [0.8, 1.0, 1.7, 2.5]


def test_apply_sustain_without_pedal_is_identity():
    notes = Notes.from_lists([(0, 1)], [60])
    assert apply_sustain(notes, []) is notes


def test_unparseable_and_out_of_range_midi_raise(tmp_path):
    (tmp_path / "bad.mid").write_bytes(b"not a midi file")
    with pytest.raises(MidiError, match="does not parse"):
        read_notes(tmp_path / "bad.mid")
    write_midi(Notes.from_lists([(0, 1)], [10]), tmp_path / "low.mid")
    with pytest.raises(MidiError, match="no notes in the piano range 21..108"):
        read_notes(tmp_path / "low.mid")
