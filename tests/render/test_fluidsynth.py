"""FluidSynth pianos: refused soundfonts and missing tools."""

from __future__ import annotations

from pathlib import Path

import pytest

from pianotx.render import corpus as syn
from pianotx.render import fluidsynth as fs

# ---------------------------------------------------------------- refusals


def test_musescore_soundfont_is_refused(tmp_path: Path) -> None:
    for path in ("/usr/share/sounds/sf2/MuseScore_General.sf3", "/x/GeneralUser_GS.sf2"):
        with pytest.raises(syn.RenderError, match="reserved for outside evaluation"):
            syn.check_options(syn.RenderOptions(pianos=(path,)))
    renamed = tmp_path / "piano.sf2"  # refused by the bank name in its header too
    renamed.write_bytes(b"RIFF\0\0\0\0sfbkLIST\0\0\0\0INFOINAM\x10\0\0\0MuseScore_General")
    with pytest.raises(syn.RenderError, match="musescore is reserved"):
        fs.check_soundfont(renamed)


def test_missing_tools_give_one_line_errors(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with pytest.raises(syn.RenderError, match=r"^soundfont /nope/Piano.sf2 not found; run"):
        syn.check_options(syn.RenderOptions(pianos=("/nope/Piano.sf2",)))
    present = tmp_path / "Piano.sf2"  # a soundfont that is there: the binary is what is missing
    present.write_bytes(b"RIFF\0\0\0\0sfbkLIST\0\0\0\0INFOINAM\x06\0\0\0Piano\0")
    monkeypatch.setattr(fs, "FLUIDSYNTH", "no-such-fluidsynth-binary")
    with pytest.raises(syn.RenderError, match=r"^no-such-fluidsynth-binary not found; run `make"):
        syn.check_options(syn.RenderOptions(pianos=(str(present),)))
