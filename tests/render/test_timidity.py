"""TiMidity pianos: the program is forced, the level is exact, chords never clip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pianotx.midi import Notes, write_midi
from pianotx.render import catalog, timidity
from pianotx.render.common import RenderError

SR = 16000


def test_missing_patch_names_the_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(timidity, "FREEPATS_DIR", tmp_path)
    monkeypatch.setattr(timidity.shutil, "which", lambda _name: "/usr/bin/timidity")
    monkeypatch.setattr(timidity, "FREEPATS_CONFIG", tmp_path / "freepats.cfg")
    with pytest.raises(RenderError, match=rf"^{tmp_path}/freepats.cfg not found; run `make install`"):
        timidity.check_timidity_piano("x", 0, "p.pat", "", 100.0)
    (tmp_path / "freepats.cfg").write_text("")
    with pytest.raises(RenderError, match=rf"^{tmp_path}/p.pat not found; run `make install`"):
        timidity.check_timidity_piano("x", 0, "p.pat", "", 100.0)


@pytest.mark.slow
def test_programs_forced_levels_exact_and_no_clipping(tmp_path: Path) -> None:
    try:
        grand = catalog.open_piano("FreePats-Grand", print)
        bright = catalog.open_piano("FreePats-Bright", print)
    except RenderError as exc:
        pytest.skip(str(exc))
    chord = Notes.from_lists([(0.2, 1.2)] * 10, [36, 43, 48, 52, 55, 60, 64, 67, 72, 76], [127] * 10)
    for program in (0, 1):  # the MIDI file's program is ignored
        write_midi(chord, tmp_path / f"chord{program}.mid", program=program)
    a0 = grand.render(tmp_path / "chord0.mid", tmp_path / "x.wav", SR, 1.0)
    a1 = grand.render(tmp_path / "chord1.mid", tmp_path / "x.wav", SR, 1.0)
    b0 = bright.render(tmp_path / "chord0.mid", tmp_path / "x.wav", SR, 1.0)
    assert np.array_equal(a0, a1) and len(a0) == len(b0) and np.abs(a0 - b0).max() > 0.1
    loud = grand.render(tmp_path / "chord0.mid", tmp_path / "x.wav", SR, 4.0)  # peaks far above 1: no clipping
    assert np.abs(loud).max() > 1.5 and np.abs(loud - 4.0 * a0).max() < 0.01 * np.abs(loud).max()
