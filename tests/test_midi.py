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


def _long_midi(path, ticks_per_beat, ticks, tempos=()):
    """One note ending at tick ``ticks`` (mido writes it in a few dozen bytes), struck
    at the last of the ``(tick, tempo)`` changes of the first track."""
    import mido

    midi = mido.MidiFile(ticks_per_beat=ticks_per_beat)
    track = mido.MidiTrack()
    at = 0
    for tick, tempo in tempos:
        track.append(mido.MetaMessage("set_tempo", tempo=tempo, time=tick - at))
        at = tick
    track.append(mido.Message("note_on", note=60, velocity=80, time=0))
    track.append(mido.Message("note_off", note=60, velocity=0, time=ticks - at))
    midi.tracks.append(track)
    midi.save(str(path))


def test_a_tiny_midi_with_a_24_hour_note_is_refused_before_any_table_is_built(tmp_path):
    import tracemalloc

    path = tmp_path / "day.mid"
    _long_midi(path, 480, 24 * 3600 * 960)  # 960 ticks a second at the default 120 bpm
    assert path.stat().st_size == 37
    tracemalloc.start()
    with pytest.raises(MidiError) as caught:
        read_notes(path)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert str(caught.value) == "MIDI lasts 86400 s, longer than the 7200 s (2 hours) pianotx reads"
    assert peak < 5e6  # pretty_midi's tick table alone would be 660 MB


def test_a_midi_reaching_absurd_ticks_is_refused(tmp_path):
    path = tmp_path / "ticks.mid"
    _long_midi(path, 30000, 20 * 60 * 60000)  # 20 minutes at 120 bpm, 30,000 ticks a beat
    with pytest.raises(MidiError) as caught:
        read_notes(path)
    assert str(caught.value) == "MIDI's last event lies at tick 72000000, beyond the 30000000 ticks pianotx reads"


def test_the_extent_of_a_midi_follows_its_tempo_changes(tmp_path):
    import mido

    from pianotx.midi import midi_extent

    path = tmp_path / "tempo.mid"
    _long_midi(path, 480, 9600, tempos=[(0, 1_000_000), (4800, 500_000)])  # 10 s at 60 bpm, 5 s at 120
    assert midi_extent(mido.MidiFile(str(path))) == (9600, 15.0)
    assert read_notes(path).intervals.tolist() == [[pytest.approx(10.0), pytest.approx(15.0)]]  # as pretty_midi
