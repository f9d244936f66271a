"""The named pianos: skipped with one line when they cannot be had, errors otherwise."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pianotx.render import catalog, salamander, timidity
from pianotx.render import corpus as syn
from pianotx.render import fluidsynth as fs
from pianotx.render.common import RenderError

FLUIDR3 = str(fs.SOUNDFONT_DIR / "FluidR3_GM.sf2")


def test_default_pianos_and_the_held_out_one() -> None:
    assert catalog.DEFAULT_PIANOS == ("FluidR3_GM", "TimGM6mb", "Salamander", "FreePats-Grand", "FreePats-Bright")
    assert syn.RenderOptions().pianos == catalog.DEFAULT_PIANOS
    assert sorted(catalog.DEFAULT_PIANOS)[-1] == "TimGM6mb"  # the dataset builder's default test piano


def test_a_missing_piano_is_skipped_with_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(timidity, "TIMIDITY", "no-such-timidity")
    lines: list[str] = []
    pianos = catalog.open_pianos(("FluidR3_GM", "FreePats-Grand"), lines.append)
    assert [p.name for p in pianos] == ["FluidR3_GM"]
    assert lines == [
        "warning: piano FreePats-Grand skipped: no-such-timidity not found; "
        "run `make install` (Debian: apt-get install timidity freepats)"
    ]


def test_salamander_offline_without_cache_is_skipped(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(salamander, "NPM", "no-such-npm")
    lines: list[str] = []
    pianos = catalog.open_pianos(("Salamander", "FluidR3_GM"), lines.append)
    assert [p.name for p in pianos] == ["FluidR3_GM"] and len(lines) == 1
    assert lines[0].startswith("warning: piano Salamander skipped: Salamander: no-such-npm not found; run `make pia")


def test_no_piano_at_all_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(timidity, "TIMIDITY", "no-such-timidity")
    lines: list[str] = []
    with pytest.raises(RenderError, match=r"^no-such-timidity not found; run `make install`"):
        catalog.open_pianos(("FreePats-Bright",), lines.append)
    with pytest.raises(RenderError, match=r"^no piano can be had: FreePats-Grand: no-such-timidity not found; .*; "):
        catalog.open_pianos(("FreePats-Grand", "FreePats-Bright"), lines.append)
    assert len(lines) == 3


def test_files_unknown_names_and_duplicates(tmp_path: Path) -> None:
    say: list[str] = []
    piano = catalog.open_piano(FLUIDR3, say.append)
    assert isinstance(piano, fs.SoundfontPiano) and piano.name == "FluidR3_GM" and piano.kind == "fluidsynth"
    with pytest.raises(RenderError, match=r"^unknown piano 'Salamandr': expected one of FluidR3_GM, "):
        catalog.open_pianos(("Salamandr",), say.append)
    with pytest.raises(RenderError, match=r"^soundfont /nope/x.sf2 not found"):  # a file is never skipped
        catalog.open_pianos(("FluidR3_GM", "/nope/x.sf2"), say.append)
    with pytest.raises(RenderError, match="^two pianos are named FluidR3_GM; rename a soundfont file"):
        catalog.open_pianos(("FluidR3_GM", FLUIDR3), say.append)
    assert say == []


@pytest.mark.slow
def test_render_goes_on_without_a_missing_piano(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(salamander, "NPM", "no-such-npm")
    options = syn.RenderOptions(
        pieces=1, seconds=3.0, generated=0, pianos=("Salamander", "FreePats-Grand"), augment="off"
    )
    lines: list[str] = []
    report = syn.render_corpus(tmp_path / "out", options, lines.append)
    assert report.pianos_skipped == ("Salamander",) and report.pieces == 1
    assert sum(line.startswith("warning: piano Salamander skipped") for line in lines) == 1
    manifest = json.loads((tmp_path / "out" / "render.json").read_text())
    (entry,) = manifest["pianos"]
    assert entry == {
        "name": "FreePats-Grand", "kind": "timidity", "config": "/etc/timidity/freepats.cfg", "program": 0,
        "patch": "Tone_000/000_Acoustic_Grand_Piano.pat", "options": f"amp=120 pan=center {timidity.DECAY}",
        "lag_seconds": report.lags["FreePats-Grand"],
    }  # fmt: skip
    assert [p["piano"] for p in manifest["pieces"]] == ["FreePats-Grand"]
    assert "soundfonts" not in manifest and manifest["options"]["pianos"] == ["Salamander", "FreePats-Grand"]
