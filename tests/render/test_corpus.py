"""The synthetic corpus: render options and a tiny real render."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
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
    assert (syn.RenderOptions().augment, syn.RenderOptions().augment_variants) == ("default", 1)  # on by default


def test_default_corpus_gives_every_generated_kind_four_pieces() -> None:
    """100 scores and 80 generated pieces: 4 per unit of weight, so a random 80/10/10
    split by piece leaves no kind of writing out of training (with 30, the repeated
    notes and block chords had 1-2 pieces and could all land in test)."""
    from pianotx.render.generated import KINDS, allocate, parse_kinds

    options = syn.RenderOptions()
    count = int(np.ceil(options.pieces * options.generated))
    shares = {kind: allocate(count, parse_kinds(options.kinds)).count(kind) for kind in KINDS}
    assert count == 80
    assert shares == {kind: {"notes": 8, "piano": 16}.get(kind, 4) for kind in KINDS}


# ---------------------------------------------------------------- a real render


@pytest.mark.slow
def test_render_small_corpus_on_both_pianos(tmp_path: Path) -> None:
    out = tmp_path / "render"
    lines: list[str] = []
    report = syn.render_corpus(
        out,
        syn.RenderOptions(
            pieces=2, seconds=4.0, generated=0.5, pianos=("FluidR3_GM", "TimGM6mb"), kinds=("notes",), augment="off"
        ),
        lines.append,
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


@pytest.mark.slow
def test_augmented_copies_and_a_pedalled_texture(tmp_path: Path) -> None:
    from pianotx.build import build_dataset
    from pianotx.render.augment import apply_record

    out = tmp_path / "render"
    options = syn.RenderOptions(
        pieces=1, seconds=6.0, generated=1.0, kinds=("waltz",), pianos=("FluidR3_GM",), augment="strong", seed=2
    )
    syn.render_corpus(out, options)
    manifest = json.loads((out / "render.json").read_text())
    dry = [p for p in manifest["pieces"] if "augment" not in p]
    wet = [p for p in manifest["pieces"] if "augment" in p]
    assert [p["name"] + "__aug1" for p in dry] == [p["name"] for p in wet]
    for d, w in zip(dry, wet):
        assert (w["source"], w["piano"], w["kind"]) == (d["source"], d["piano"], d["kind"])
        assert (out / f"{w['name']}.mid").read_bytes() == (out / f"{d['name']}.mid").read_bytes()
        audio, _ = sf.read(out / f"{d['name']}.wav", dtype="float32")
        redone = apply_record(audio, 16000, w["augment"])
        stored, _ = sf.read(out / f"{w['name']}.wav", dtype="float32")
        assert len(stored) == len(audio) and np.abs(redone - stored).max() < 2e-3  # 16-bit rounding of the input
    waltz = next(p for p in dry if p["kind"] == "waltz")
    import pretty_midi

    pedal = [c for c in pretty_midi.PrettyMIDI(str(out / f"{waltz['name']}.mid")).instruments[0].control_changes]
    assert pedal and {c.number for c in pedal} == {64}
    held = read_notes(out / f"{waltz['name']}.mid", sustain=True)
    played = read_notes(out / f"{waltz['name']}.mid", sustain=False)
    assert (held.intervals[:, 1] - played.intervals[:, 1]).sum() > 0  # the pedal holds notes on
    built = build_dataset(out, tmp_path / "ds", workers=1, progress=False, log=lambda _: None).manifest
    for piece in built["pieces"]:
        if piece["name"].endswith("__aug1"):
            assert piece["split"] == "train" or piece["reason"] == "augmented copies are for training only"


@pytest.mark.slow
def test_cli_render_writes_the_augmented_copies_asked_for(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from pianotx.cli import app

    out = tmp_path / "render"
    args = ["data", "render", str(out), "--pieces", "0", "--generated", "1", "--seconds", "3", "--corpus", "bach/bwv66"]
    args += ["--piano", "FluidR3_GM", "--augment", "light", "--augment-variants", "2"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "render.json").read_text())
    assert manifest["options"]["augment"] == "light" and manifest["options"]["augment_variants"] == 2
    dry = [p["name"] for p in manifest["pieces"] if "augment" not in p]
    wet = [p["name"] for p in manifest["pieces"] if "augment" in p]
    assert dry and wet == [f"{name}__aug{k}" for name in dry for k in (1, 2)]
    bad = CliRunner().invoke(app, ["data", "render", str(tmp_path / "other"), "--augment", "loud"])
    assert bad.exit_code == 1 and "unknown augmentation preset 'loud'" in bad.output
    assert not (tmp_path / "other").exists()


def test_render_summary_counts_pieces_pianos_and_augmented_copies() -> None:
    report = syn.RenderReport(
        Path("data/render"), 1800, 36720.0, {}, (("a.mxl", "no notes"),), 88, scores=180, pianos=5, augmented=900
    )
    assert report.summary() == (
        "data/render: 1800 pairs (180 pieces on 5 pianos, and 900 augmented copies), 612.0 min of audio, "
        "88 keys covered, 1 scores skipped"
    )
    plain = syn.RenderReport(Path("r"), 3, 60.0, {}, (), 40, scores=3, pianos=1)
    assert plain.summary() == "r: 3 pairs (3 pieces on 1 piano), 1.0 min of audio, 40 keys covered, 0 scores skipped"


def test_data_render_reports_every_tenth_rendering_off_a_terminal(capsys) -> None:
    from pianotx.cli import _render_with_progress

    def fake_render(out_dir, options, progress, on_render):
        progress("FluidR3_GM: lag 1.0 ms")
        for done in range(1, 26):
            on_render(done, 25)
        return "report"

    assert _render_with_progress(fake_render, Path("out"), None) == "report"
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "FluidR3_GM: lag 1.0 ms"
    assert lines[1:] == [f"rendered {n}/25" for n in (3, 5, 8, 10, 13, 15, 18, 20, 23, 25)]
