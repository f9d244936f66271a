"""A tiny search end to end: tracking, registry, resume, a diverging trial (training tests are slow)."""

import json
import sys
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
from conftest import melody, write_pair

from pianotx.build import build_dataset
from pianotx.config import BuildConfig, ChunkConfig, DecodingConfig, ModelConfig, TrainConfig
from pianotx.locations import Store
from pianotx.store import load_manifest
from pianotx.tracking import SearchTracker, connect, latest_search_url, load_model

ALIASES = ("champion", "production", "challenger")
TINY = """
name: {name}
tuner: {{type: random, max_trials: 2, seed: 1}}
hyperparameters:
  lstm_units: {{type: choice, values: [8, 16]}}
  learning_rate: {{type: float, min_value: 1.0e-3, max_value: 1.0e-2, sampling: log}}
fixed: {{epochs: 2, recurrent_dropout: 0.0, dense_units: 8, batch_size: 4}}
"""


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("search")
    for i in range(10):
        write_pair(root / "pairs", f"p{i}", melody(i))
    build_dataset(
        root / "pairs",
        root / "ds",
        BuildConfig(chunks=ChunkConfig(chunk_frames=64)),
        workers=1,
        progress=False,
        log=lambda _: None,
    )
    return root / "ds"


def _space(tmp_path, name):
    path = tmp_path / f"{name}.yaml"
    path.write_text(TINY.format(name=name))
    return path


def _search(tmp_path, name: str, text: str) -> tuple[Store, Path]:
    """A private store and the search-space file ``name.yaml`` holding ``text``."""
    (tmp_path / "mlruns").mkdir(exist_ok=True)
    space = tmp_path / f"{name}.yaml"
    space.write_text(text)
    return _store(tmp_path), space


def _store(tmp_path) -> Store:
    return Store(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}", (tmp_path / "mlruns" / "artifacts").as_uri())


@pytest.mark.slow
def test_tiny_search_is_tracked_registered_and_resumable(tiny_dataset, tmp_path):
    from pianotx.tuning.search import run_search

    (tmp_path / "mlruns").mkdir()
    store, space = _store(tmp_path), _space(tmp_path, "tiny")
    result = run_search(space, tiny_dataset, store, "piano", verbose=0)
    # the store had no champion: the bundled model became version 1, the search's best version 2
    assert result.trials == 2 and result.failed == 0 and result.registered_version == 2

    client = connect(store)
    exp = client.get_experiment_by_name("tiny")
    runs = client.search_runs([exp.experiment_id])
    parent = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    trials = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent[0].info.run_id]
    assert len(parent) == 1 and len(trials) == 2
    assert parent[0].data.tags["best_run_id"] == result.best_run_id
    assert {"dataset_fingerprint", "tuner", "objective"} <= set(parent[0].data.params)
    assert "device" in parent[0].data.tags and "version.keras" in parent[0].data.tags
    assert {a.path for a in client.list_artifacts(parent[0].info.run_id)} == {
        "tiny.yaml",
        "manifest.json",
        "trials.json",
        "hyperparameters.png",
    }
    # the story MLflow tells by itself: training experiment, dataset, source, the summary
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    fingerprint = load_manifest(tiny_dataset).data["fingerprint"]
    for run in parent + trials:
        (used,) = run.inputs.dataset_inputs
        assert (used.dataset.name, used.dataset.digest) == ("ds", fingerprint[:32])
        assert run.data.tags["mlflow.source.name"] == "pianotx search tiny.yaml"
    summary = json.loads(Path(client.download_artifacts(parent[0].info.run_id, "trials.json")).read_text())
    scores = [row[summary["columns"].index("val_f1")] for row in summary["data"]]
    assert len(scores) == 2 and scores == sorted(scores, reverse=True)
    assert latest_search_url(store) == f"http://127.0.0.1:5000/#/experiments/{exp.experiment_id}/runs"
    every_setting = {f.name for f in fields(ModelConfig)} | {f.name for f in fields(TrainConfig)}
    for run in trials:
        assert run.info.status == "FINISHED"
        assert set(run.data.params) == every_setting | {f"decoding.{f.name}" for f in fields(DecodingConfig)}
        assert run.data.params["lstm_layers"] == "1" and run.data.params["dense_units"] == "8"
        assert run.data.tags["pianotx.worker"] == "tuner0" and run.data.tags["pianotx.host"]
        for key in ("loss", "val_loss", "val_precision", "val_recall", "val_f1", "learning_rate"):
            assert [m.step for m in client.get_metric_history(run.info.run_id, key)] == [1, 2]
        assert "val_note_f1" in run.data.metrics and "val_note_with_offset_f1" in run.data.metrics
        assert {"piano_roll.png", "excerpt"} <= {a.path for a in client.list_artifacts(run.info.run_id)}
        assert sorted(a.path for a in client.list_artifacts(run.info.run_id, "excerpt")) == [
            "excerpt/original.wav",
            "excerpt/transcription.mid",
            "excerpt/transcription.wav",
        ]
        assert run.data.tags["pianotx.model_uri"].startswith("models:/m-")

    # a two-epoch model is far worse than the bundled one: the champion stays, the challenger is kept
    bundled, challenger = client.get_model_version("piano", "1"), client.get_model_version("piano", "2")
    assert bundled.current_stage == "Production" and "pianotx.bundled" in bundled.tags
    assert challenger.current_stage == "None" and challenger.source == parent[0].data.tags["best_model_uri"]
    aliases = {a: str(client.get_model_version_by_alias("piano", a).version) for a in ALIASES}
    assert aliases == {"champion": "1", "production": "1", "challenger": "2"}
    outcome = result.outcome
    assert (outcome.challenger, outcome.champion, outcome.promoted) == (2, 1, False)
    assert outcome.summary.startswith("kept piano version 1 as champion (not better): validation frame F1 ")
    comparison = client.get_run(outcome.comparison_run)
    assert parent[0].data.tags["pianotx.comparison_run"] == outcome.comparison_run
    assert parent[0].data.tags["pianotx.decision"] == "kept"
    assert comparison.data.tags["pianotx.search_run"] == parent[0].info.run_id
    assert comparison.data.params["challenger_version"] == "2" and comparison.data.params["champion_version"] == "1"
    metrics = comparison.data.metrics
    assert metrics["champion_validation_frame_f1"] > metrics["challenger_validation_frame_f1"]
    assert {f"{r}_test_note_f1" for r in ("champion", "challenger")} <= set(metrics)
    assert f"F1 {metrics['champion_validation_frame_f1']:.4f} against" in outcome.summary
    assert f"; test {metrics['champion_test_frame_f1']:.4f} against {metrics['challenger_test_frame_f1']:.4f};" in (
        outcome.summary
    )
    assert challenger.tags["ds.validation_note_f1"] == str(round(metrics["challenger_validation_note_f1"], 10))
    for uri in ("models:/piano/Production", "models:/piano@champion"):  # the bundled model, 36 bins a semitone
        _, meta = load_model(store, uri)
        assert meta["features"]["n_bins"] == 252 and meta["model"]["lstm_units"] == 160
    model, meta = load_model(store, "models:/piano@challenger")
    assert model.predict(np.zeros((1, 100, 84), np.float32), verbose=0).shape == (1, 100, 88)
    assert meta["features"]["n_bins"] == 84 and meta["features"]["hop_length"] == 512

    again = run_search(space, tiny_dataset, store, "piano", verbose=0)  # resumed: nothing registered or compared again
    assert again.best_trial_id == result.best_trial_id and again.registered_version == 2
    assert again.outcome.summary == outcome.summary and again.outcome.comparison_run == outcome.comparison_run
    assert len(client.search_runs([exp.experiment_id])) == 3
    assert len(client.search_model_versions("name = 'piano'")) == 2


@pytest.mark.slow
def test_diverging_trial_fails_and_the_search_goes_on(tiny_dataset, tmp_path):
    from pianotx.tuning.search import run_search

    store, space = _search(
        tmp_path,
        "diverge",
        "name: diverge\ntuner: {type: random, max_trials: 2, seed: 1}\n"
        "hyperparameters: {learning_rate: {type: choice, values: [1.0e+30, 1.0e-2]}}\n"
        "fixed: {epochs: 2, lstm_units: 8, recurrent_dropout: 0.0, dense_units: 8, batch_size: 4, optimizer: sgd}\n",
    )
    result = run_search(space, tiny_dataset, store, None, verbose=0)
    assert result.trials == 1 and result.failed == 1 and result.registered_version is None
    client = connect(_store(tmp_path))
    runs = client.search_runs([client.get_experiment_by_name("diverge").experiment_id], "tags.mlflow.parentRunId != ''")
    by_status = {r.info.status: r for r in runs if "pianotx.trial_id" in r.data.tags}
    assert set(by_status) == {"FAILED", "FINISHED"}
    failed = by_status["FAILED"]
    assert failed.data.params["learning_rate"] == "1e+30"
    assert failed.data.tags["pianotx.failure"].startswith("NaN loss: training diverged")


def test_interrupted_trial_runs_are_marked_killed(tmp_path):
    (tmp_path / "mlruns").mkdir()
    store = _store(tmp_path)
    tracker = SearchTracker(store, "cut")
    parent = tracker.start_search({}, {}, [])
    stale = tracker.start_trial("00", {"lstm_units": 8})  # the process dies here
    again = SearchTracker(store, "cut")
    assert again.start_search({}, {}, []) == parent
    assert again.kill_stale_trials() == [stale]
    run = again.client.get_run(stale)
    assert run.info.status == "KILLED" and run.data.tags["pianotx.failure"] == "interrupted"


def test_changed_space_or_dataset_is_refused_without_overwrite(tmp_path):
    from pianotx.config import ConfigError
    from pianotx.tuning.search import _check_unchanged
    from pianotx.tuning.space import load_spec

    space, project = _space(tmp_path, "edit"), tmp_path / "kt" / "edit"
    _check_unchanged(load_spec(space), project, "fp1", overwrite=False)
    _check_unchanged(load_spec(space), project, "fp1", overwrite=False)  # unchanged: resumes
    with pytest.raises(ConfigError, match="the dataset changed since search 'edit' began"):
        _check_unchanged(load_spec(space), project, "fp2", overwrite=False)
    space.write_text(space.read_text().replace("[8, 16]", "[8, 32]"))
    with pytest.raises(ConfigError, match="changed since search 'edit' began"):
        _check_unchanged(load_spec(space), project, "fp1", overwrite=False)
    (project / "trial_00").mkdir()
    _check_unchanged(load_spec(space), project, "fp2", overwrite=True)
    assert sorted(p.name for p in project.iterdir()) == ["dataset_fingerprint.txt", "search_space.yaml"]


@pytest.mark.slow
def test_search_killed_mid_trial_is_resumed(tiny_dataset, tmp_path):
    import os
    import signal
    import subprocess
    import time

    store, space = _search(
        tmp_path,
        "long",
        "name: long\ntuner: {type: random, max_trials: 1, seed: 0}\n"
        "fixed: {epochs: 40, lstm_units: 8, recurrent_dropout: 0.0, dense_units: 8, batch_size: 4,"
        " early_stopping_patience: 100}\n",
    )
    cmd = [
        sys.executable,
        "-m",
        "pianotx.cli",
        "search",
        str(space),
        "--data",
        str(tiny_dataset),
        "--tracking-uri",
        store.tracking_uri,
        "--no-register",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client, deadline = connect(store), time.time() + 120
    trial_run = None
    while time.time() < deadline and proc.poll() is None:
        exp = client.get_experiment_by_name("long")
        runs = client.search_runs([exp.experiment_id], "tags.`pianotx.trial_id` = '0'") if exp else []
        if runs and len(client.get_metric_history(runs[0].info.run_id, "loss")) >= 2:
            trial_run = runs[0].info.run_id
            break
        time.sleep(0.5)
    assert trial_run is not None, "the trial never logged two epochs"
    os.kill(proc.pid, signal.SIGTERM)
    assert proc.wait(60) == 1
    killed = client.get_run(trial_run)
    assert killed.info.status == "KILLED" and killed.data.tags["pianotx.failure"] == "interrupted"
    parent = client.get_run(killed.data.tags["mlflow.parentRunId"])
    assert parent.info.status == "KILLED"

    from pianotx.tuning.search import run_search

    result = run_search(space, tiny_dataset, store, None, verbose=0)
    assert result.trials == 1 and result.failed == 0
    runs = client.search_runs([client.get_experiment_by_name("long").experiment_id], "tags.`pianotx.trial_id` = '0'")
    assert sorted(r.info.status for r in runs) == ["FINISHED", "KILLED"]
    finished = next(r for r in runs if r.info.status == "FINISHED")
    resumed = finished.data.tags["pianotx.resumed_from"]  # went on from its last epoch, not from scratch
    assert resumed.startswith(f"run {trial_run} at epoch ") and int(resumed.rsplit(" ", 1)[1]) >= 2
    steps = sorted(m.step for m in client.get_metric_history(finished.info.run_id, "loss"))
    assert steps == list(range(1, 41))  # ... and holds the whole history: earlier epochs copied


@pytest.mark.slow
def test_hyperband_honours_its_epoch_budget_and_initial_epoch(tiny_dataset, tmp_path):
    from pianotx.tuning.search import run_search

    store, space = _search(
        tmp_path,
        "hb",
        "name: hb\ntuner: {type: hyperband, max_epochs: 3, factor: 3, seed: 0}\n"
        "hyperparameters: {lstm_units: {type: choice, values: [4, 8, 12, 16]}}\n"
        "fixed: {recurrent_dropout: 0.0, dense_units: 8, batch_size: 4, early_stopping_patience: 100}\n",
    )
    result = run_search(space, tiny_dataset, store, None, verbose=0)
    assert result.failed == 0 and result.trials >= 4
    client = connect(store)
    runs = client.search_runs([client.get_experiment_by_name("hb").experiment_id], "tags.mlflow.parentRunId != ''")
    budgets = set()
    by_trial = {r.data.tags["pianotx.trial_id"]: r for r in runs}
    for run in runs:
        params = run.data.params
        first, last = int(params["tuner/initial_epoch"]), int(params["tuner/epochs"])
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "loss")]
        assert steps == list(range(first + 1, last + 1))  # promoted trials start where their parent stopped
        assert int(params["epochs"]) == last and run.data.metrics["epochs_trained"] == last  # what it trained
        budgets.add((first, last))
        if first > 0:  # the trial it trained on from is linked, trial and run
            parent = params["tuner/trial_id"]
            assert run.data.tags["pianotx.continues"] == f"trial {parent}, run {by_trial[parent].info.run_id}"
        else:
            assert "pianotx.continues" not in run.data.tags
    assert (0, 1) in budgets and any(first > 0 for first, _ in budgets)


@pytest.mark.slow
def test_note_f1_objective_is_scored_at_the_end_of_each_trial(tiny_dataset, tmp_path):
    from pianotx.tuning.search import run_search

    text = TINY.format(name="notes").replace("tuner: {", "objective: {name: val_note_f1, direction: max}\ntuner: {")
    store, space = _search(tmp_path, "notes", text + "note_eval_pieces: 2\n")
    result = run_search(space, tiny_dataset, store, None, verbose=0)
    assert result.trials == 2
    run = connect(store).get_run(result.best_run_id)
    assert result.best_value == run.data.metrics["val_note_f1"] == run.data.metrics["trial_objective"]
    client = connect(store)
    runs = client.search_runs([client.get_experiment_by_name("notes").experiment_id], "tags.`pianotx.trial_id` != ''")
    assert result.best_value == max(r.data.metrics["val_note_f1"] for r in runs)


@pytest.mark.slow
def test_a_conv_and_onset_model_is_searched_logged_and_transcribes(tiny_dataset, tmp_path):
    from pianotx.transcribe import load_transcriber
    from pianotx.tuning.search import run_search

    text = (
        "name: onset\ntuner: {type: random, max_trials: 1, seed: 0}\nnote_eval_pieces: 2\n"
        "fixed: {epochs: 2, lstm_units: 8, recurrent_dropout: 0.0, dense_units: 8, batch_size: 4,"
        " onset_head: true, conv_layers: 1, conv_filters: 4, conv_dense_units: 16}\n"
    )
    store, space = _search(tmp_path, "onset", text)
    result = run_search(space, tiny_dataset, store, "piano", verbose=0, promote="always")
    assert result.outcome.promoted and result.outcome.summary.startswith("promoted piano version 2 to champion (")
    run = connect(store).get_run(result.best_run_id)
    for key in ("val_onset_f1", "onsets_loss", "val_frames_loss"):
        assert key in run.data.metrics
    transcriber = load_transcriber("models:/piano/Production", store.tracking_uri)
    rolls = transcriber.probabilities(np.zeros((100, 84), np.float32))
    assert sorted(rolls) == ["frames", "onsets"] and rolls["onsets"].shape == (100, 88)
    assert transcriber.context == 128  # twice the dataset's chunk length travels with the model


def test_a_search_run_cut_short_before_its_setup_was_logged_gets_it_on_resume(tmp_path, monkeypatch):
    (tmp_path / "mlruns").mkdir()
    space = tmp_path / "cut.yaml"
    space.write_text("name: cut\n")
    first = SearchTracker(_store(tmp_path), "cut")

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # the process dies just after the search's run was created

    monkeypatch.setattr(first.client, "log_param", killed)
    with pytest.raises(KeyboardInterrupt):
        first.start_search({"tuner": "random", "objective": "val_f1 (max)"}, {}, [space])
    again = SearchTracker(_store(tmp_path), "cut")
    parent = again.start_search({"tuner": "random", "objective": "val_f1 (max)"}, {}, [space])
    assert parent == first.parent_id
    assert again.client.get_run(parent).data.params == {"tuner": "random", "objective": "val_f1 (max)"}
    assert [a.path for a in again.client.list_artifacts(parent)] == ["cut.yaml"]
    assert again.start_search({"tuner": "random", "objective": "val_f1 (max)"}, {}, [space]) == parent


@pytest.mark.slow
def test_a_search_goes_on_in_a_fresh_process_after_its_trials_per_process(tiny_dataset, tmp_path):
    import subprocess

    store, space = _search(
        tmp_path,
        "relay",
        "name: relay\ntuner: {type: random, max_trials: 3, seed: 0}\n"
        "hyperparameters: {lstm_units: {type: choice, values: [4, 6, 8]}}\n"
        "fixed: {epochs: 1, recurrent_dropout: 0.0, dense_units: 8, batch_size: 4}\n",
    )
    cmd = [sys.executable, "-m", "pianotx.cli", "search", str(space), "--data", str(tiny_dataset)]
    cmd += ["--tracking-uri", store.tracking_uri, "--no-register", "--overwrite"]  # the default: 2 per process
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    # after 2 trials the process was replaced by the same command without --overwrite: it
    # resumed the search (had it restarted it, it would have drawn 2 more and never ended)
    assert lines.count("2 trials in this process: the search goes on in a fresh process (its memory released)") == 1
    assert lines[-1].startswith("3 trials done, 0 failed; best trial ")
    client = connect(store)
    runs = client.search_runs([client.get_experiment_by_name("relay").experiment_id])
    trials = sorted(r.data.tags["pianotx.trial_id"] for r in runs if "pianotx.trial_id" in r.data.tags)
    assert trials == ["0", "1", "2"] and all(r.info.status == "FINISHED" for r in runs)


def test_trials_per_process_default_replaces_only_a_command():
    from pianotx.tuning.command import TRIALS_PER_PROCESS, trials_per_process

    assert TRIALS_PER_PROCESS == 2
    assert trials_per_process(None, replaceable=True) == 2 and trials_per_process(5, replaceable=True) == 5
    # the app called from Python: its process is never replaced unless asked
    assert trials_per_process(None, replaceable=False) == 0 and trials_per_process(3, replaceable=False) == 3
