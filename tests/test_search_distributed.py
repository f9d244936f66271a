"""A distributed search on this machine, end to end (loopback only): an MLflow server
on a fresh SQLite store, a chief and two workers started at once; a worker killed
mid-trial, with and without a restart. Each test trains tiny models (slow)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import melody, write_pair

from pianotx.build import build_dataset
from pianotx.config import BuildConfig, ChunkConfig, ConfigError
from pianotx.locations import Store
from pianotx.tracking import connect, load_model

pytestmark = pytest.mark.slow

SPACE = """
name: {name}
tuner: {{type: random, max_trials: {trials}, seed: 1}}
hyperparameters:
  learning_rate: {{type: float, min_value: 1.0e-3, max_value: 1.0e-2, sampling: log}}
fixed: {{epochs: {epochs}, lstm_units: 8, recurrent_dropout: 0.0, dense_units: 8, batch_size: 4,
         early_stopping_patience: 100}}
"""


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("distributed")
    for i in range(8):
        write_pair(root / "pairs", f"p{i}", melody(i, seconds=6.0))
    config = BuildConfig(chunks=ChunkConfig(chunk_frames=64))
    build_dataset(root / "pairs", root / "ds", config, workers=1, progress=False, log=lambda _: None)
    return root / "ds"


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def _space(tmp_path: Path, name: str, trials: int, epochs: int) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(SPACE.format(name=name, trials=trials, epochs=epochs))
    return path


def _launch(space: Path, dataset: Path, store_dir: Path, *more: str) -> subprocess.Popen:
    """``pianotx search-distributed`` in the background, on free loopback ports."""
    cmd = [sys.executable, "-m", "pianotx.cli", "search-distributed", str(space), "--data", str(dataset)]
    cmd += ["--store-dir", str(store_dir), "--port", "0", "--mlflow-port", "0", "--logs", str(store_dir / "logs")]
    return subprocess.Popen(
        [*cmd, *more], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )


def _finish(proc: subprocess.Popen, timeout: float = 240) -> str:
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
        pytest.fail(f"the search did not finish in {timeout} s:\n{out}")
    return out


def _runs(store: Store, name: str) -> tuple[object, list, list]:
    """The search's parent run, its trial runs, and every run of the experiment."""
    client = connect(store)
    exp = client.get_experiment_by_name(name)
    runs = client.search_runs([exp.experiment_id])
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    trials = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    return parent, trials, runs


def _store(store_dir: Path) -> Store:
    return Store(f"sqlite:///{store_dir / 'mlflow.db'}", (store_dir / "artifacts").as_uri())


def _wait_for_epochs(store_dir: Path, name: str, epochs: int, timeout: float = 150) -> object:
    """The first trial run that has logged ``epochs`` epochs (asks the launcher's server,
    once it answers: the store is the server's while it starts)."""
    deadline = time.time() + timeout
    cluster = store_dir / "logs" / "cluster.json"
    while time.time() < deadline:
        if cluster.is_file():
            client = connect(Store(json.loads(cluster.read_text())["mlflow"], None))
            exp = client.get_experiment_by_name(name)
            for run in client.search_runs([exp.experiment_id], "attributes.status = 'RUNNING'") if exp else []:
                if "pianotx.trial_id" in run.data.tags:
                    if len(client.get_metric_history(run.info.run_id, "loss")) >= epochs:
                        return run
        time.sleep(0.5)
    pytest.fail(f"no trial logged {epochs} epochs within {timeout} s")


def _steps(store: Store, run_id: str) -> list[int]:
    return [m.step for m in connect(store).get_metric_history(run_id, "loss")]


def test_chief_and_two_workers_started_together_on_a_fresh_store(dataset, tmp_path, monkeypatch):
    store_dir = tmp_path / "mlruns"
    space = _space(tmp_path, "dist", trials=4, epochs=2)
    out = _finish(_launch(space, dataset, store_dir, "--promote", "always"))
    assert "tuner0 stopped (exit code 0)" in out and "tuner1 stopped (exit code 0)" in out, out
    # the fresh store had no champion: the bundled model is version 1, the search's best version 2
    assert "chief: registered piano version 2 as models:/piano@challenger" in out, out
    assert "chief: promoted piano version 2 to champion (--promote always): validation frame F1 " in out, out
    for worker in ("tuner0", "tuner1"):
        last = (store_dir / "logs" / f"{worker}.log").read_text().strip().splitlines()[-1]
        assert last.startswith(f"worker {worker}: ") and "trials completed, 0 failed" in last

    store = _store(store_dir)
    parent, trials, runs = _runs(store, "dist")
    assert len(runs) == 5 and parent.info.status == "FINISHED"
    assert parent.data.tags["pianotx.worker"] == "chief" and parent.data.tags["pianotx.host"]
    assert parent.data.tags["pianotx.state"].endswith(str(store_dir / "keras-tuner" / "dist"))
    assert sorted(r.data.tags["pianotx.trial_id"] for r in trials) == ["0", "1", "2", "3"]  # each exactly once
    assert {r.info.status for r in trials} == {"FINISHED"}
    assert {r.data.tags["pianotx.worker"] for r in trials} <= {"tuner0", "tuner1"}
    best = max(trials, key=lambda r: r.data.metrics["trial_objective"])
    assert parent.data.tags["best_run_id"] == best.info.run_id
    client = connect(store)
    bundled, version = sorted(client.search_model_versions("name = 'piano'"), key=lambda v: int(v.version))
    assert bundled.current_stage == "Archived" and "pianotx.bundled" in bundled.tags
    assert version.current_stage == "Production" and version.source == best.data.tags["pianotx.model_uri"]
    model, _ = load_model(store, "models:/piano/Production")  # readable without the server
    assert model.predict(np.zeros((1, 10, 84), np.float32), verbose=0).shape == (1, 10, 88)

    # The same search again, from another folder: resumed from its state, nothing new.
    from pianotx.tuning.search import run_search

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    again = run_search(space, dataset, store, "piano", verbose=0)
    assert again.best_run_id == best.info.run_id and again.registered_version == 2 and again.outcome.promoted
    assert len(_runs(store, "dist")[2]) == 5 and not (elsewhere / "keras-tuner").exists()
    # ... and with its state somewhere else: refused, naming where the state is.
    with pytest.raises(ConfigError, match=f"keeps its Keras Tuner state in .*{store_dir / 'keras-tuner' / 'dist'}"):
        run_search(space, dataset, store, "piano", verbose=0, state_dir=tmp_path / "other-state")


def test_a_worker_killed_mid_trial_does_not_stall_the_search(dataset, tmp_path):
    store_dir = tmp_path / "mlruns"
    space = _space(tmp_path, "kill", trials=3, epochs=6)
    proc = _launch(space, dataset, store_dir, "--worker-timeout", "6", "--worker-restarts", "0", "--no-register")
    store = _store(store_dir)
    victim = _wait_for_epochs(store_dir, "kill", 1)
    tuner_id, trial_id = victim.data.tags["pianotx.worker"], victim.data.tags["pianotx.trial_id"]
    pids = json.loads((store_dir / "logs" / "cluster.json").read_text())["pids"]
    os.kill(pids[tuner_id], signal.SIGKILL)
    out = _finish(proc)
    assert proc.returncode == 0, out
    assert f"{tuner_id} stopped (killed by SIGKILL)" in out

    parent, trials, _ = _runs(store, "kill")
    assert parent.info.status == "FINISHED"
    assert "RUNNING" not in {r.info.status for r in trials}
    finished = sorted(r.data.tags["pianotx.trial_id"] for r in trials if r.info.status == "FINISHED")
    assert finished == ["0", "1", "2"]  # every trial exactly once, the killed one included
    (killed,) = [r for r in trials if r.info.status == "KILLED"]
    assert killed.info.run_id == victim.info.run_id
    assert killed.data.tags["pianotx.failure"].startswith(f"worker {tuner_id} sent no heartbeat for 6 s")
    (retried,) = [r for r in trials if r.data.tags["pianotx.trial_id"] == trial_id and r.info.status == "FINISHED"]
    assert retried.data.tags["pianotx.worker"] != tuner_id
    assert _steps(store, retried.info.run_id) == [1, 2, 3, 4, 5, 6]  # the whole trial in one run


def test_a_restarted_worker_resumes_its_trial_in_a_new_run(dataset, tmp_path):
    store_dir = tmp_path / "mlruns"
    space = _space(tmp_path, "restart", trials=1, epochs=8)
    proc = _launch(space, dataset, store_dir, "--workers", "1", "--worker-timeout", "300", "--no-register")
    store = _store(store_dir)
    victim = _wait_for_epochs(store_dir, "restart", 2)
    os.kill(json.loads((store_dir / "logs" / "cluster.json").read_text())["pids"]["tuner0"], signal.SIGKILL)
    out = _finish(proc)  # the launcher starts tuner0 again; the chief gives it its trial back
    assert proc.returncode == 0 and "tuner0 stopped (killed by SIGKILL); starting it again (1 of 2)" in out, out

    parent, trials, _ = _runs(store, "restart")
    assert parent.info.status == "FINISHED"
    by_status = {r.info.status: r for r in trials}
    assert sorted(by_status) == ["FINISHED", "KILLED"] and by_status["KILLED"].info.run_id == victim.info.run_id
    assert by_status["KILLED"].data.tags["pianotx.failure"] == "trial 0 started again by tuner0"
    finished = by_status["FINISHED"]
    assert finished.data.tags["pianotx.resumed_from"].startswith(f"run {victim.info.run_id} at epoch ")
    assert _steps(store, finished.info.run_id) == list(range(1, 9))  # earlier epochs copied, later ones trained
