"""A search that a crash, a typo or a second terminal cannot spoil: space files refused
before anything is written, seeded sampling, one search at a time, resumed trials keep
their hyperparameters, and a trial finished before a kill is not trained again."""

import json
import os
import socket
from pathlib import Path

import pytest
from conftest import melody, write_pair
from typer.testing import CliRunner

from pianotx.build import build_dataset
from pianotx.cli import app
from pianotx.config import BuildConfig, ChunkConfig, ConfigError
from pianotx.locations import Store
from pianotx.store import load_manifest
from pianotx.tuning.search import search_lock
from pianotx.tuning.space import load_spec

runner = CliRunner()
HEAD = "name: s\ntuner: {type: random, max_trials: 2, seed: 0}\n"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("safety")
    for i in range(6):
        write_pair(root / "pairs", f"p{i}", melody(i, seconds=4.0))
    config = BuildConfig(chunks=ChunkConfig(chunk_frames=64))
    build_dataset(root / "pairs", root / "ds", config, workers=1, progress=False, log=lambda _: None)
    return root / "ds"


@pytest.mark.parametrize(
    "entry, reason",
    [
        ("{type: int, min_value: 5, max_value: 1}", "lstm_units.min_value 5 is above max_value 1"),
        ("{type: int, min_value: 8, max_value: 64, step: 0}", "lstm_units.step must be positive, got 0"),
        ("{type: int, min_value: 0, max_value: 64, sampling: log}", "lstm_units with log sampling needs min_value > 0"),
        ("{type: int, min_value: 8.5, max_value: 64}", "lstm_units is an int: min_value, max_value and step"),
        ("{type: choice, values: [8, 8]}", "lstm_units.values repeats a value"),
        ("{type: choice, values: [8, big]}", "lstm_units.values mixes types"),
    ],
)
def test_bad_ranges_are_refused_with_one_line(tmp_path, entry, reason):
    space = tmp_path / "s.yaml"
    space.write_text(HEAD + f"hyperparameters:\n  lstm_units: {entry}\n")
    with pytest.raises(ConfigError) as err:
        load_spec(space)
    assert str(err.value) == f"{space}: hyperparameters: {reason}" or reason in str(err.value)
    assert "\n" not in str(err.value)


def test_a_refused_space_writes_nothing(tmp_path, dataset):
    space = tmp_path / "s.yaml"
    space.write_text(HEAD + "hyperparameters:\n  lstm_units: {type: int, min_value: 5, max_value: 1}\n")
    (tmp_path / "mlruns").mkdir()
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    result = runner.invoke(app, ["search", str(space), "--data", str(dataset), "--tracking-uri", uri])
    assert result.exit_code == 1
    assert result.output.strip() == f"error: {space}: hyperparameters: lstm_units.min_value 5 is above max_value 1"
    assert sorted(p.name for p in (tmp_path / "mlruns").iterdir()) == []


def test_negative_seed_is_refused(tmp_path):
    space = tmp_path / "s.yaml"
    space.write_text("tuner: {type: random, max_trials: 2, seed: -1}\n")
    with pytest.raises(ConfigError, match="tuner.seed must be 0 or more, got -1"):
        load_spec(space)


def _refusal(name, pid, since):
    return (
        f"search {name!r} is already running (pid {pid} on {socket.gethostname()}, since {since}); "
        "wait for it, or stop that process"
    )


def test_lock_refuses_a_running_search_and_takes_over_a_dead_ones(tmp_path, monkeypatch):
    monkeypatch.delenv("KERASTUNER_TUNER_ID", raising=False)
    project = tmp_path / "kt" / "s"
    lock = tmp_path / "kt" / ".s.tuner0.lock"  # beside the search's folder, not in it
    with search_lock(project, "s"):
        since = json.loads(lock.read_text())["since"]
        with pytest.raises(ConfigError) as err:
            with search_lock(project, "s"):
                pass
        assert str(err.value) == _refusal("s", os.getpid(), since)
        with search_lock(tmp_path / "kt" / "t", "t"):  # another search runs beside it
            pass
        monkeypatch.setenv("KERASTUNER_TUNER_ID", "tuner1")  # another worker of the same search
        with search_lock(project, "s"):
            assert (tmp_path / "kt" / ".s.tuner1.lock").is_file()
        monkeypatch.delenv("KERASTUNER_TUNER_ID")
    assert lock.is_file() and not project.exists()  # the lock file stays; no folder made for it
    lock.write_text(json.dumps({"pid": 999999999, "host": socket.gethostname(), "since": "earlier"}))
    with search_lock(project, "s"):  # a dead process's record, no lock held: taken over
        assert json.loads(lock.read_text())["pid"] == os.getpid()
    lock.write_text("{half")
    with search_lock(project, "s"):
        pass


def test_overwrite_keeps_the_lock_of_the_search_it_restarts(tmp_path, monkeypatch):
    """--overwrite removes the search's folder while it holds the search's lock: a second
    search of the same space started meanwhile is still refused."""
    from pianotx.tuning.search import _check_unchanged

    monkeypatch.delenv("KERASTUNER_TUNER_ID", raising=False)
    root = tmp_path / "kt"
    space, project = tmp_path / "s.yaml", root / "s"
    space.write_text(HEAD)
    (project / "trial_0").mkdir(parents=True)
    with search_lock(project, "s"):
        since = json.loads((root / ".s.tuner0.lock").read_text())["since"]
        _check_unchanged(load_spec(space), project, "fp", overwrite=True, root=root)
        assert sorted(p.name for p in project.iterdir()) == ["dataset_fingerprint.txt", "search_space.yaml"]
        with pytest.raises(ConfigError) as err:
            with search_lock(project, "s"):
                pass
        assert str(err.value) == _refusal("s", os.getpid(), since)


def _store_with_a_search(tmp_path):
    """A local store holding the state of search 's' and of another search 'other'."""
    mlruns = tmp_path / "mlruns"
    for folder in ("keras-tuner/s/trial_0", "keras-tuner/other/trial_0", "artifacts"):
        (mlruns / folder).mkdir(parents=True)
        (mlruns / folder / "kept").write_text("x")
    return mlruns, f"sqlite:///{mlruns / 'mlflow.db'}"


def _files(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if not p.name.endswith(".lock"))


def test_overwrite_while_the_search_runs_is_refused_and_removes_nothing(tmp_path, dataset, monkeypatch):
    monkeypatch.delenv("KERASTUNER_TUNER_ID", raising=False)
    mlruns, uri = _store_with_a_search(tmp_path)
    space = tmp_path / "s.yaml"
    space.write_text(HEAD)
    before = _files(mlruns)
    with search_lock(mlruns / "keras-tuner" / "s", "s"):  # the search running in another terminal
        since = json.loads((mlruns / "keras-tuner" / ".s.tuner0.lock").read_text())["since"]
        args = ["search", str(space), "--data", str(dataset), "--tracking-uri", uri, "--overwrite"]
        result = runner.invoke(app, args)
    assert result.exit_code == 1
    assert result.output.strip() == f"error: {_refusal('s', os.getpid(), since)}"
    assert _files(mlruns) == before


@pytest.mark.parametrize("name", ["..", ".", "../other", "/tmp/x"])
def test_a_name_that_climbs_out_of_the_state_folder_is_refused_and_removes_nothing(tmp_path, dataset, name):
    mlruns, uri = _store_with_a_search(tmp_path)
    space = tmp_path / "s.yaml"
    space.write_text(f"name: {name!r}\n" + HEAD.removeprefix("name: s\n"))
    before = _files(tmp_path)
    result = runner.invoke(app, ["search", str(space), "--data", str(dataset), "--tracking-uri", uri, "--overwrite"])
    assert result.exit_code == 1
    assert result.output.strip() == (
        f"error: {space}: name {name!r} must be letters, digits, '.', '_' or '-', starting with a letter or digit, "
        "at most 100 characters"
    )
    assert _files(tmp_path) == before


@pytest.mark.parametrize("name", ["..", ".", "../other"])
def test_overwrite_removes_a_search_folder_only_inside_the_state_folder(tmp_path, name):
    """Whatever name reaches it, the removal checks the folder lies inside the state folder."""
    import dataclasses

    from pianotx.files import OutputError
    from pianotx.tuning.search import _check_unchanged

    mlruns, _ = _store_with_a_search(tmp_path)
    root = mlruns / "keras-tuner"
    space = tmp_path / "s.yaml"
    space.write_text(HEAD)
    spec = dataclasses.replace(load_spec(space), name=name)
    before = _files(tmp_path)
    with pytest.raises(OutputError) as err:
        _check_unchanged(spec, root / name, "fp", overwrite=True, root=root)
    assert str(err.value) == (
        f"{root / name}: the state of search {name!r} lies outside {root}, which pianotx owns; nothing was removed"
    )
    assert _files(tmp_path) == before


def test_a_bad_tuner_setting_writes_nothing(tmp_path, dataset):
    space = tmp_path / "s.yaml"
    space.write_text("name: s\ntuner: {type: random, max_trials: -3}\n")
    (tmp_path / "mlruns").mkdir()
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    result = runner.invoke(app, ["search", str(space), "--data", str(dataset), "--tracking-uri", uri])
    assert result.exit_code == 1
    assert result.output.strip() == f"error: {space}: tuner.max_trials must be a positive integer, got -3"
    assert list((tmp_path / "mlruns").iterdir()) == []


def _tuner(tmp_path, dataset, text, name="s"):
    from pianotx.config import DecodingConfig
    from pianotx.tracking import SearchTracker
    from pianotx.tuning.search import make_tuner

    (tmp_path / "mlruns").mkdir(parents=True, exist_ok=True)
    space = tmp_path / f"{name}.yaml"
    space.write_text(text)
    store = Store(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}", (tmp_path / "mlruns" / "artifacts").as_uri())
    tracker = SearchTracker(store, name)
    tracker.start_search({}, {}, [])
    manifest = load_manifest(dataset)
    return make_tuner(load_spec(space), manifest, tracker, tmp_path / "kt", DecodingConfig(), 0)


def test_seed_zero_draws_the_same_trials_and_covers_every_choice(tmp_path, dataset):
    text = HEAD.replace("max_trials: 2", "max_trials: 40") + (
        "hyperparameters:\n  lstm_units: {type: choice, values: [8, 16, 24]}\n"
        "  learning_rate: {type: float, min_value: 1.0e-3, max_value: 1.0e-2, sampling: log}\n"
    )
    draws = []
    for run in ("a", "b"):
        tuner = _tuner(tmp_path / run, dataset, text)
        trials = [tuner.oracle.create_trial(f"t{i}") for i in range(30)]
        draws.append([t.hyperparameters.values for t in trials])
    assert draws[0] == draws[1]
    assert {d["lstm_units"] for d in draws[0]} == {8, 16, 24}


def test_a_resumed_trial_keeps_its_hyperparameters(tmp_path, dataset):
    text = HEAD + "hyperparameters:\n  lstm_units: {type: choice, values: [8, 16, 24, 32, 40, 48]}\n"
    first = _tuner(tmp_path, dataset, text)
    trial = first.oracle.create_trial("tuner0")  # ... and the process is killed here
    again = _tuner(tmp_path, dataset, text)
    retried = again.oracle.create_trial("tuner0")
    assert (retried.trial_id, retried.hyperparameters.values) == (trial.trial_id, trial.hyperparameters.values)


def test_a_trial_killed_between_its_two_state_files_is_retried_not_lost(tmp_path, dataset):
    text = HEAD.replace("max_trials: 2", "max_trials: 3") + (
        "hyperparameters:\n  lstm_units: {type: choice, values: [8, 16, 24, 32, 40, 48]}\n"
    )
    first = _tuner(tmp_path, dataset, text)
    oracle_file = tmp_path / "kt" / "s" / "oracle.json"
    before = oracle_file.read_bytes()
    trial = first.oracle.create_trial("tuner0")  # writes trial_0/trial.json, then oracle.json ...
    oracle_file.write_bytes(before)  # ... and the process is killed between the two
    again = _tuner(tmp_path, dataset, text)
    retried = again.oracle.create_trial("tuner0")
    assert (retried.trial_id, retried.hyperparameters.values) == (trial.trial_id, trial.hyperparameters.values)
    other = again.oracle.create_trial("tuner1")
    assert other.trial_id == "1" and other.hyperparameters.values != trial.hyperparameters.values


def test_keras_tuner_state_survives_a_kill_in_the_middle_of_a_write(tmp_path, dataset, monkeypatch):
    import tensorflow as tf

    text = HEAD + "hyperparameters:\n  lstm_units: {type: choice, values: [8, 16, 24]}\n"
    tuner = _tuner(tmp_path, dataset, text)
    tuner.oracle.create_trial("tuner0")

    def truncate_then_die(self, content):
        self._prewrite_check()  # Keras Tuner's writer truncates the file here ...
        raise KeyboardInterrupt  # ... and the process is killed before the content is written

    monkeypatch.setattr(tf.io.gfile.GFile, "write", truncate_then_die)
    try:
        tuner.oracle.save()
    except KeyboardInterrupt:
        pass
    monkeypatch.undo()
    assert json.loads((tmp_path / "kt" / "s" / "oracle.json").read_text())["ongoing_trials"] == {"tuner0": "0"}
    assert _tuner(tmp_path, dataset, text).oracle.create_trial("tuner0").trial_id == "0"


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # the finaliser's lost raise
def test_a_sigterm_swallowed_by_a_finaliser_still_stops_training():
    import signal

    import keras
    import numpy as np

    from pianotx.tuning.interrupt import INTERRUPTED, interrupt_on_sigterm
    from pianotx.tuning.tuner import InterruptWhenSignalled

    class Finalised:
        def __del__(self):  # where the handler's own raise is lost: "Exception ignored"
            os.kill(os.getpid(), signal.SIGTERM)

    class DropsASignal(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch == 1:
                Finalised()

    batches = []

    class Counts(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            batches.append(batch)

    previous = signal.getsignal(signal.SIGTERM)
    interrupt_on_sigterm()
    try:
        model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
        model.compile("sgd", "mse")
        x, y = np.zeros((40, 2), "float32"), np.zeros((40, 1), "float32")
        with pytest.raises(KeyboardInterrupt):
            callbacks = [DropsASignal(), InterruptWhenSignalled(), Counts()]
            model.fit(x, y, batch_size=4, epochs=1, verbose=0, callbacks=callbacks)
        assert INTERRUPTED.is_set()
        assert batches == [0]  # batch 1 ended in the interrupt, not the ten batches of the epoch
    finally:
        signal.signal(signal.SIGTERM, previous)
        INTERRUPTED.clear()


class _KilledAfterBackup(Exception):
    """What a SIGKILL between an epoch's backup and its logging amounts to, here."""


def test_an_epoch_backed_up_but_never_logged_is_in_the_resumed_runs_history(tmp_path):
    import keras
    import numpy as np

    from pianotx.tracking import SearchTracker
    from pianotx.train import SafeBackupAndRestore
    from pianotx.tuning.tuner import EpochLogger, EpochRecord

    tracker = SearchTracker(Store(f"sqlite:///{tmp_path / 'mlflow.db'}", (tmp_path / "artifacts").as_uri()), "k")
    tracker.start_search({}, {}, [], settle=0)
    rng = np.random.default_rng(0)
    x, y = rng.random((16, 4), dtype=np.float32), rng.random((16, 1), dtype=np.float32)

    class KillAfterBackupAt(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 2:  # epoch 3's backup is written, MLflow never hears of it
                raise _KilledAfterBackup

    def fit(run_id: str, epochs: int, *extra: keras.callbacks.Callback) -> keras.callbacks.History:
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
        record = EpochRecord(tmp_path / "trial" / "epochs.json")
        callbacks = [record, SafeBackupAndRestore(str(tmp_path / "trial" / "backup")), *extra]
        callbacks.append(EpochLogger(tracker, run_id, record, "0"))
        return model.fit(x, y, validation_data=(x, y), epochs=epochs, callbacks=callbacks, verbose=0)

    first = tracker.start_trial("0", {})
    with pytest.raises(_KilledAfterBackup):
        fit(first, 5, KillAfterBackupAt())
    assert [m.step for m in tracker.client.get_metric_history(first, "loss")] == [1, 2]
    recorded = json.loads((tmp_path / "trial" / "epochs.json").read_text())
    assert sorted(recorded) == ["1", "2", "3"] and recorded["3"]["learning_rate"] == pytest.approx(0.1)
    tracker.kill_runs([first], "interrupted")

    second = tracker.start_trial("0", {})
    history = fit(second, 5)
    assert len(history.history["loss"]) == 2  # went on from epoch 3's backup
    logged = sorted(tracker.client.get_metric_history(second, "loss"), key=lambda m: m.step)
    assert [m.step for m in logged] == [1, 2, 3, 4, 5]  # epoch 3 came from the record
    assert logged[2].value == pytest.approx(recorded["3"]["loss"])
    assert tracker.client.get_run(second).data.tags["pianotx.resumed_from"] == f"run {first} at epoch 3"
