"""The default corpus end to end: FluidSynth renders two short pieces, the builder builds them."""

import pytest
from typer.testing import CliRunner

from pianotx.cli import app
from pianotx.store import SplitArrays, load_manifest

pytestmark = pytest.mark.slow
runner = CliRunner()


def test_render_two_pieces_then_build(tmp_path):
    render = tmp_path / "render"
    pianos = ["--piano", "FluidR3_GM", "--piano", "TimGM6mb"]
    result = runner.invoke(
        app,
        [
            "data",
            "render",
            str(render),
            "--pieces",
            "2",
            "--seconds",
            "6",
            "--generated",
            "0",
            "--augment",
            "off",
            *pianos,
        ],
    )
    assert result.exit_code == 0, result.output
    assert sorted(p.suffix for p in render.iterdir() if p.is_file()) == [".json"] + [".mid"] * 4 + [".wav"] * 4

    # two scores on two pianos, no held-out piano: all four pieces are built
    out = tmp_path / "ds"
    result = runner.invoke(app, ["data", "build", str(render), str(out), "--holdout-piano", "none", "--workers", "1"])
    assert result.exit_code == 0, result.output
    manifest = load_manifest(out)
    pieces = manifest.pieces()
    assert len(pieces) == 4 and manifest.features.n_bins == 84 and manifest.chunk_frames == 512
    # FluidSynth's lag is cut at render time, so every piece aligns at offset 0
    assert [p["offset_frames"] for p in pieces] == [0, 0, 0, 0]
    assert all(p["alignment_confidence"] > 4.0 for p in pieces)
    # the same score on both pianos shares a split
    by_score: dict[str, set] = {}
    for p in pieces:
        by_score.setdefault(p["name"].split("__")[0], set()).add(p["split"])
    assert all(len(s) == 1 for s in by_score.values())
    record = pieces[0]
    features, frames, _ = SplitArrays(manifest, record["split"]).piece(record)
    assert features.shape == (record["n_frames"], 84) and frames.sum() > 0

    again = runner.invoke(app, ["data", "build", str(render), str(out), "--holdout-piano", "none", "--workers", "1"])
    assert "up to date" in again.output
    # a validation piano besides the held-out test piano would leave nothing to train on
    refused = runner.invoke(
        app, ["data", "build", str(render), str(tmp_path / "v"), "--validation-piano", "FluidR3_GM"]
    )
    assert refused.exit_code == 1 and not (tmp_path / "v").exists()
    assert refused.output.strip() == (
        f"error: {render}: holding out TimGM6mb and FluidR3_GM leaves no piano to train on"
    )


def test_build_of_nothing_usable_exits_non_zero(tmp_path):
    (tmp_path / "empty").mkdir()
    result = runner.invoke(app, ["data", "build", str(tmp_path / "empty"), str(tmp_path / "ds")])
    assert result.exit_code == 1
    assert result.output.strip() == f"error: {tmp_path / 'empty'}: no (audio, MIDI) pairs found"
