"""`pianotx evaluate` end to end with the bundled model on a tiny dataset."""

import json

import pytest
from conftest import melody, write_pair
from typer.testing import CliRunner

from pianotx.build import build_dataset
from pianotx.cli import app
from pianotx.locations import Store
from pianotx.tracking import connect
from pianotx.transcribe import BUNDLED_MODEL

runner = CliRunner()


@pytest.fixture
def dataset(tmp_path):
    for i in range(4):
        write_pair(tmp_path / "pairs", f"p{i}", melody(i))
    build_dataset(tmp_path / "pairs", tmp_path / "ds", workers=1, progress=False, log=lambda _: None)
    return tmp_path / "ds"


def test_evaluate_prints_writes_json_and_logs_a_run(dataset, tmp_path):
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    (tmp_path / "store").mkdir()
    out = tmp_path / "scores.json"
    args = [
        "evaluate",
        str(dataset),
        "--model",
        str(BUNDLED_MODEL),
        "--split",
        "train",
        "--json",
        str(out),
        "--tracking-uri",
        uri,
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["split"] == "train" and report["pieces"] == len(report["per_piece"]) >= 1
    keys = {
        f"{g}_{p}"
        for g in ("frame", "note", "note_with_offset", "note_with_velocity")
        for p in ("precision", "recall", "f1")
    }
    assert set(report["mean"]) == keys
    assert "mean" in result.output and "F1" in result.output
    client = connect(Store(uri, None))
    (run,) = client.search_runs([client.get_experiment_by_name("evaluation").experiment_id])
    assert run.data.metrics["frame_f1"] == pytest.approx(report["mean"]["frame_f1"])
    assert run.data.params["split"] == "train" and run.data.tags["pianotx.model"] == str(BUNDLED_MODEL)


def test_evaluate_on_a_folder_that_is_not_a_dataset(tmp_path):
    result = runner.invoke(app, ["evaluate", str(tmp_path), "--model", str(BUNDLED_MODEL)])
    assert result.exit_code == 1
    assert (
        result.output.strip()
        == f"error: {tmp_path}: not a pianotx dataset (no manifest.json); run `pianotx data build`"
    )
