"""The synthetic corpus: render options and a tiny real render."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import soundfile as sf

from pianotx.config import ConfigError, from_dict
from pianotx.midi import read_notes
from pianotx.render import corpus as syn
from pianotx.render import piano as pn

# ---------------------------------------------------------------- options


def test_options_from_dict_and_validation() -> None:
    data = {"corpus": ["bach/bwv"], "pieces": 2, "seconds": 4, "kinds": ["notes:1", "runs"]}
    options = from_dict(syn.RenderOptions, data)
    assert options.corpus == ("bach/bwv",) and options.kinds == ("notes:1", "runs")
    assert options.seconds == 4.0 and isinstance(options.seconds, float)
    with pytest.raises(ConfigError, match="unknown or repeated"):
        from_dict(syn.RenderOptions, {"kinds": ["trills:1"]})
    with pytest.raises(ConfigError, match="unknown key"):
        from_dict(syn.RenderOptions, {"piece": 3})


# ---------------------------------------------------------------- a real render


@pytest.mark.slow
def test_render_small_corpus_on_both_pianos(tmp_path: Path) -> None:
    out = tmp_path / "render"
    lines: list[str] = []
    report = syn.render_corpus(
        out, syn.RenderOptions(pieces=2, seconds=4.0, pianos=("FluidR3_GM", "TimGM6mb")), lines.append
    )
    manifest = json.loads((out / "render.json").read_text())
    names = [p["name"] for p in manifest["pieces"]]
    assert sorted(f.name for f in out.iterdir()) == sorted(
        [f"{n}.wav" for n in names] + [f"{n}.mid" for n in names] + ["render.json"]
    )
    assert report.pieces == 6 and report.skipped == () and len(set(names)) == 6
    assert [s["name"] for s in manifest["pianos"]] == ["FluidR3_GM", "TimGM6mb"]
    assert manifest["version"] == 1 and manifest["sample_rate"] == 16000 and manifest["seed"] == 0
    assert manifest["options"]["pieces"] == 2
    for font in manifest["pianos"]:
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
        assert end <= info.duration <= end + pn.RELEASE + 1 / 16000  # tail trimmed
        assert entry["seconds"] == pytest.approx(info.duration, abs=1e-4)
        assert entry["name"].endswith(entry["piano"])
        if entry["kind"] == "score":
            assert f"__t{entry['transpose']:+d}__" in entry["name"]
    assert manifest["total_seconds"] == pytest.approx(report.seconds)
    assert any(line.startswith("rendered 6/6 ") for line in lines)
