"""The parts of a distributed search that need no training: roles, the chief's watch
over its workers' heartbeats, workers held until every trial has ended, the search
run created once by processes racing, trial histories carried into a retried run."""

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from pianotx.cli import app
from pianotx.config import ConfigError
from pianotx.locations import Store
from pianotx.tracking import SearchTracker, connect
from pianotx.tuning.distributed import (
    MAX_LOST_RUNS,
    Heartbeat,
    Role,
    WorkerMonitor,
    chief_role,
    keras_tuner_env,
    role_from_env,
    wait_for_chief,
    worker_role,
)

runner = CliRunner()


def _tracker(tmp_path, name="s") -> SearchTracker:
    tracker = SearchTracker(Store(f"sqlite:///{tmp_path / 'mlflow.db'}", (tmp_path / "artifacts").as_uri()), name)
    tracker.start_search({}, {}, [], settle=0)
    return tracker


def _oracle(tmp_path, max_trials=4):
    import keras_tuner as kt

    hp = kt.HyperParameters()
    hp.Choice("lstm_units", [8, 16, 24, 32, 40, 48])
    oracle = kt.oracles.RandomSearchOracle(
        objective=kt.Objective("val_f1", "max"), max_trials=max_trials, hyperparameters=hp, seed=1
    )
    oracle._set_project_dir(str(tmp_path / "kt"), "s")
    return oracle


def test_roles_map_onto_keras_tuners_variables(monkeypatch):
    assert worker_role("1", "10.0.0.5:8000").environ() == {
        "KERASTUNER_TUNER_ID": "tuner1",
        "KERASTUNER_ORACLE_IP": "10.0.0.5",
        "KERASTUNER_ORACLE_PORT": "8000",
    }
    assert worker_role("gpu-a", "[::1]:8000").tuner_id == "gpu-a"
    assert chief_role(8123, "0.0.0.0").address == "0.0.0.0:8123"
    monkeypatch.setenv("KERASTUNER_TUNER_ID", "outer")
    with keras_tuner_env(worker_role("2", "h:1")):
        assert role_from_env() == worker_role("2", "h:1")
    assert "KERASTUNER_ORACLE_IP" not in os.environ
    assert os.environ["KERASTUNER_TUNER_ID"] == "outer"
    with keras_tuner_env(None):  # one process: no distributed variables at all
        assert role_from_env() is None and "KERASTUNER_TUNER_ID" not in os.environ


@pytest.mark.parametrize(
    "worker, oracle, message",
    [
        ("chief2", "h:1", "--worker 'chief2': use a number or letters"),
        ("a b", "h:1", "--worker 'a b': use a number"),
        ("1", "nohost", "--oracle 'nohost': expected HOST:PORT of the chief"),
        ("1", "h:99999", "--oracle 'h:99999': expected HOST:PORT"),
    ],
)
def test_bad_worker_options_are_one_line(worker, oracle, message):
    with pytest.raises(ConfigError, match=message):
        worker_role(worker, oracle)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--worker", "1"], "error: --worker needs --oracle HOST:PORT"),
        (["--chief", "--worker", "1", "--oracle", "h:1"], "error: --chief and --worker exclude each other"),
        (["--oracle", "h:1"], "error: --oracle is for a worker: add --worker ID"),
        (["--chief", "--port", "0"], "error: --port must be 1..65535, got 0"),
    ],
)
def test_search_refuses_inconsistent_distributed_options(tmp_path, args, message):
    space = tmp_path / "s.yaml"
    space.write_text("tuner: {type: random, max_trials: 1}\n")
    result = runner.invoke(app, ["search", str(space), *args])
    lines = result.output.strip().splitlines()
    assert result.exit_code == 1 and len(lines) == 1 and lines[0].startswith(message)


def test_a_worker_without_a_chief_gives_up_with_one_line():
    with pytest.raises(ConfigError, match=r"no chief answered at 127.0.0.1:9 within 1 s \(DEADLINE_EXCEEDED\)"):
        wait_for_chief(Role("tuner0", "127.0.0.1", 9, chief_wait=1.0))


def test_a_silent_workers_trial_goes_to_another_worker(tmp_path):
    from pianotx.tuning.tuner import worker_tags

    oracle, tracker = _oracle(tmp_path), _tracker(tmp_path)
    now = [0.0]
    monitor = WorkerMonitor(oracle, tracker, timeout=10.0, clock=lambda: now[0])
    trial = oracle.create_trial("tuner1")
    run = tracker.start_trial(trial.trial_id, {}, worker_tags("tuner1"))
    tracker.beat(run)
    assert monitor.check() == []
    now[0] = 8.0
    tracker.beat(run)  # alive: a new beat
    assert monitor.check() == []
    now[0] = 16.0
    assert monitor.check() == []  # 8 s since the last beat
    now[0] = 19.0
    assert monitor.check() == [trial.trial_id]
    killed = tracker.client.get_run(run)
    assert killed.info.status == "KILLED"
    assert killed.data.tags["pianotx.failure"] == (
        f"worker tuner1 sent no heartbeat for 10 s; trial {trial.trial_id} given to another worker"
    )
    assert oracle.ongoing_trials == {} and "tuner1" not in oracle.tuner_ids  # the chief no longer waits for it
    retried = oracle.create_trial("tuner2")
    assert (retried.trial_id, retried.hyperparameters.values) == (trial.trial_id, trial.hyperparameters.values)


def test_a_trial_whose_worker_died_before_its_run_began_is_retried_too(tmp_path):
    oracle, tracker = _oracle(tmp_path), _tracker(tmp_path)
    now = [0.0]
    monitor = WorkerMonitor(oracle, tracker, timeout=5.0, clock=lambda: now[0])
    trial = oracle.create_trial("tuner0")
    assert monitor.check() == []
    now[0] = 6.0
    assert monitor.check() == [trial.trial_id]
    assert oracle.create_trial("tuner1").trial_id == trial.trial_id


def test_a_trial_that_loses_every_worker_fails_instead_of_looping(tmp_path):
    from keras_tuner.engine.trial import TrialStatus

    oracle, tracker = _oracle(tmp_path), _tracker(tmp_path)
    now = [0.0]
    monitor = WorkerMonitor(oracle, tracker, timeout=5.0, clock=lambda: now[0])
    first = oracle.create_trial("w0").trial_id
    for i in range(MAX_LOST_RUNS):
        trial = oracle.create_trial(f"w{i}") if i else oracle.trials[first]
        assert trial.trial_id == first
        monitor.check()
        now[0] += 6.0
        assert monitor.check() == [first]
        now[0] += 1.0
    assert oracle.trials[first].status == TrialStatus.FAILED and first in oracle.end_order
    assert oracle.create_trial("w9").trial_id != first


def test_workers_wait_while_a_trial_may_come_back_then_stop(tmp_path):
    from keras_tuner.engine.trial import Trial, TrialStatus

    from pianotx.tuning.distributed import _servicer

    oracle = _oracle(tmp_path, max_trials=1)
    only = oracle.create_trial("tuner0")
    servicer = _servicer(oracle, hold=0.01)
    answer = Trial.from_proto(servicer.CreateTrial(SimpleNamespace(tuner_id="tuner1"), None).trial)
    assert answer.status == TrialStatus.IDLE and not servicer.stop_triggered  # tuner0 may die: tuner1 stays
    assert "tuner1" in oracle.tuner_ids
    only.status = TrialStatus.COMPLETED
    oracle.update_trial(only.trial_id, {"val_f1": 0.5})
    oracle.end_trial(only)
    answer = Trial.from_proto(servicer.CreateTrial(SimpleNamespace(tuner_id="tuner1"), None).trial)
    assert answer.status == TrialStatus.STOPPED and servicer.stop_triggered


def test_a_worker_notices_its_trial_was_taken_back(tmp_path):
    tracker = _tracker(tmp_path)
    run = tracker.start_trial("0", {})
    with Heartbeat(tracker, run, interval=0.05) as beat:
        time.sleep(0.3)
        assert not beat.abandoned.is_set() and tracker.client.get_run(run).data.tags["pianotx.heartbeat"]
        tracker.kill_runs([run], "taken back")
        assert beat.abandoned.wait(5.0)


def test_two_processes_creating_the_search_at_once_settle_on_one_run(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'mlflow.db'}", (tmp_path / "artifacts").as_uri())
    SearchTracker(store, "race")  # the store and experiment exist; the race is on the search run
    barrier = threading.Barrier(3)

    def create(_: int) -> str:
        tracker = SearchTracker(store, "race")
        barrier.wait()
        return tracker.start_search({"tuner": "random"}, {}, [], settle=0.5)

    with ThreadPoolExecutor(3) as pool:
        ids = set(pool.map(create, range(3)))
    client = connect(store)
    exp = client.get_experiment_by_name("race")
    searches = client.search_runs([exp.experiment_id], "tags.pianotx_kind = 'search'")
    assert len(ids) == 1 and [r.info.run_id for r in searches] == list(ids)
    assert searches[0].data.params == {"tuner": "random"}  # recorded once
    worker = SearchTracker(store, "race")
    assert worker.attach(timeout=1) == ids.pop()


def test_a_run_going_on_from_an_earlier_one_holds_the_whole_history(tmp_path):
    tracker = _tracker(tmp_path)
    first = tracker.start_trial("3", {})
    for step in (1, 2, 3):
        tracker.log_metrics(first, {"loss": 1.0 / step}, step=step)
    tracker.kill_runs([first], "interrupted")
    second = tracker.start_trial("3", {})
    assert tracker.copy_history("3", second, ("loss", "val_f1"), 1, 2) == first
    history = tracker.client.get_metric_history(second, "loss")
    assert [(m.step, m.value) for m in sorted(history, key=lambda m: m.step)] == [(1, 1.0), (2, 0.5)]
    assert tracker.client.get_run(second).data.tags["pianotx.resumed_from"] == f"run {first} at epoch 2"
    other = tracker.start_trial("4", {})  # another trial's runs are never copied
    assert tracker.copy_history("4", other, ("loss",), 1, 2) is None


def test_a_chief_started_again_after_the_end_finishes_at_once(tmp_path):
    from keras_tuner.engine.trial import TrialStatus

    from pianotx.tuning.distributed import all_ended, drop_ended_retries, serve_oracle

    oracle = _oracle(tmp_path, max_trials=1)
    trial = oracle.create_trial("tuner0")
    oracle.update_trial(trial.trial_id, {"val_f1": 0.5})
    trial.status = TrialStatus.COMPLETED
    oracle.end_trial(trial)  # Keras Tuner saves before it forgets the ongoing trial
    again = _oracle(tmp_path, max_trials=1)
    again.reload()
    assert again._retry_queue == [trial.trial_id]  # Keras Tuner would run the ended trial again
    assert drop_ended_retries(again) == [trial.trial_id] and all_ended(again)
    start = time.monotonic()
    serve_oracle(SimpleNamespace(oracle=again, save=lambda: None), None, chief_role(8123))
    assert time.monotonic() - start < 1.0  # nothing to serve, no worker to wait for


def test_a_store_that_stops_answering_does_not_take_trials_back(tmp_path):
    oracle, tracker = _oracle(tmp_path), _tracker(tmp_path)
    now = [0.0]
    monitor = WorkerMonitor(oracle, tracker, timeout=5.0, clock=lambda: now[0])
    trial = oracle.create_trial("tuner0")
    assert monitor.check_safely() == []
    answers = tracker.running_trial_runs
    tracker.running_trial_runs = lambda: (_ for _ in ()).throw(ConnectionError("server restarting"))
    now[0] = 10.0
    assert monitor.check_safely() == []  # the chief goes on; workers could not beat meanwhile
    tracker.running_trial_runs = answers
    now[0] = 12.0
    assert monitor.check_safely() == []  # timed afresh from here
    now[0] = 18.0
    assert monitor.check_safely() == [trial.trial_id]
