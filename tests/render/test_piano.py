"""Every piano: lag cut, trimming, and a short rendering in time and in tune."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pianotx.midi import Notes, write_midi
from pianotx.render import catalog, salamander
from pianotx.render import piano as pn
from pianotx.render.common import RenderError, quantise

# ---------------------------------------------------------------- audio


def test_trim_audio_drops_lag_and_silent_tail() -> None:
    sr, lag = 1000, 10
    audio = np.zeros(5000, np.float32)
    audio[lag + 500] = 0.5
    audio[lag + 1500] = 0.01  # ringing 0.5 s after the last note-off
    assert len(pn.trim_audio(audio, lag, 1.0, sr)) == 1501
    assert pn.trim_audio(audio, lag, 1.0, sr)[500] == 0.5  # the lag was cut from the start
    audio[lag + 1500 : lag + 2600] = 0.01  # ringing past RELEASE: cut 1 s after the note-off
    assert len(pn.trim_audio(audio, lag, 1.0, sr)) == 2000
    assert len(pn.trim_audio(np.zeros(5000, np.float32), lag, 1.0, sr)) == 1000
    assert len(pn.trim_audio(np.zeros(300, np.float32), lag, 1.0, sr)) == 1000  # padded


def test_onset_lag_finds_a_known_delay() -> None:
    sr = 16000
    audio = np.zeros(4 * sr, np.float32)
    for onset in (0.5, 1.7, 2.9):
        a = int(onset * sr) + 96  # 6 ms late
        audio[a : a + 800] = np.sin(np.arange(800) / 5.0) * np.exp(-np.arange(800) / 400)
    lag = pn.onset_lag(audio, np.array([0.5, 1.7, 2.9]), sr)
    assert abs(lag - 0.006) < 2 / sr
    delays = pn.note_onsets(audio, np.array([0.5, 3.5]), sr)  # nothing sounds after 3.5 s
    assert abs(delays[0] - 0.006) < 2 / sr and np.isnan(delays[1])
    with pytest.raises(RenderError, match="plays no sound"):
        pn.onset_lag(np.zeros(sr, np.float32), np.array([0.2]), sr)


# ---------------------------------------------------------------- every piano, for real


def pitch_offset_cents(segment: np.ndarray, sample_rate: int, key: int) -> float:
    """Offset (cents, within +-300) of the pitch whose first 5 harmonics are strongest in
    ``segment`` from MIDI ``key``'s equal-tempered pitch."""
    n = len(segment)
    spectrum = np.abs(np.fft.rfft(segment * np.hanning(n), 16 * n))
    freqs = np.fft.rfftfreq(16 * n, 1 / sample_rate)
    expected = 440.0 * 2 ** ((key - 69) / 12)
    cents = np.arange(-300, 301, 2)
    scores = [
        sum(np.interp(h * f, freqs, spectrum) / np.sqrt(h) for h in range(1, 6) if h * f < sample_rate / 2 - 100)
        for f in expected * 2 ** (cents / 1200)
    ]
    return float(cents[int(np.argmax(scores))])


# Keys at both ends and in the middle: A#0 and B7 play a neighbour's sample; Salamander's
# "C8" file sounds a semitone sharp.
KEYS = (22, 45, 64, 83, 107, 108)
VELOCITIES = (100, 40, 70, 60, 90, 127)
SR = 16000


def open_or_skip(name: str) -> pn.Piano:
    """The named piano, or a skip when this machine cannot have it (never a build)."""
    if name == salamander.NAME and not salamander.soundfont_path().is_file():
        pytest.skip("the Salamander soundfont is not built here (make pianos)")
    try:
        return catalog.open_piano(name, lambda _line: None)
    except RenderError as exc:
        pytest.skip(f"{name} cannot be had here: {exc}")


@pytest.mark.slow
@pytest.mark.parametrize("name", catalog.DEFAULT_PIANOS)
def test_each_piano_plays_notes_in_time_and_in_tune(name: str, tmp_path: Path) -> None:
    piano = pn.measure_lag(open_or_skip(name), tmp_path, SR, 1.0)
    assert 0.0 <= piano.lag_seconds < 0.015 and piano.describe()["lag_seconds"] == piano.lag_seconds
    starts = [0.6 + 1.5 * i + 0.0013 * i for i in range(len(KEYS))]  # varied block positions
    notes = quantise(Notes.from_lists([(s, s + 0.5) for s in starts], KEYS, VELOCITIES))
    write_midi(notes, tmp_path / "keys.mid")
    raw = piano.render(tmp_path / "keys.mid", tmp_path / "keys.wav", SR, 1.0)
    assert raw.dtype == np.float32 and raw.ndim == 1 and not (tmp_path / "keys.wav").exists()
    audio = pn.trim_audio(raw, int(round(piano.lag_seconds * SR)), notes.end_time, SR)
    onsets = notes.intervals[:, 0]
    assert np.abs(audio[: int(0.55 * SR)]).max() < pn.SILENCE  # silent before the first note
    for onset, key in zip(onsets, KEYS):
        note = audio[int((onset + 0.03) * SR) : int((onset + 0.53) * SR)]
        assert np.sqrt(np.mean(note**2)) > 1e-3, f"{name}: key {key} is silent"
        assert abs(pitch_offset_cents(note, SR, key)) <= 50, f"{name}: key {key} out of tune"
    delays = pn.note_onsets(audio, onsets, SR)
    assert np.abs(delays).max() < 0.010, f"{name}: onsets {np.round(delays * 1000, 1)} ms after the cut"
    assert abs(np.median(delays)) < 0.003  # the lag was cut (FluidSynth's is ~6.5 ms)
