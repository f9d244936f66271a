"""FluidSynth: trimming, lag measurement, refused soundfonts and missing tools."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pianotx.render import corpus as syn
from pianotx.render import fluidsynth as fs
from pianotx.render import piano as pn

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


# ---------------------------------------------------------------- refusals


def test_musescore_soundfont_is_refused(tmp_path: Path) -> None:
    for path in ("/usr/share/sounds/sf2/MuseScore_General.sf3", "/x/GeneralUser_GS.sf2"):
        with pytest.raises(syn.RenderError, match="reserved for outside evaluation"):
            syn.check_options(syn.RenderOptions(pianos=(path,)))
    renamed = tmp_path / "piano.sf2"  # refused by the bank name in its header too
    renamed.write_bytes(b"RIFF\0\0\0\0sfbkLIST\0\0\0\0INFOINAM\x10\0\0\0MuseScore_General")
    with pytest.raises(syn.RenderError, match="musescore is reserved"):
        fs.check_soundfont(renamed)


def test_missing_tools_give_one_line_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(syn.RenderError, match=r"^soundfont /nope/Piano.sf2 not found; run"):
        syn.check_options(syn.RenderOptions(pianos=("/nope/Piano.sf2",)))
    monkeypatch.setattr(fs, "FLUIDSYNTH", "no-such-fluidsynth-binary")
    with pytest.raises(syn.RenderError, match=r"^no-such-fluidsynth-binary not found; run `make"):
        syn.check_options(syn.RenderOptions(pianos=("FluidR3_GM",)))
