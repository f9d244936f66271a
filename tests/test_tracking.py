import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from pianotx.locations import Store, find_store_dir, resolve_store
from pianotx.tracking import connect, has_model, ui_command


def test_store_is_the_projects_mlruns_folder_found_upwards(tmp_path):
    (tmp_path / "project" / "mlruns").mkdir(parents=True)  # a fresh clone: the folder, no database yet
    deep = tmp_path / "project" / "notebooks" / "2026"
    deep.mkdir(parents=True)
    assert find_store_dir(deep) == tmp_path / "project" / "mlruns"
    assert find_store_dir(tmp_path / "project") == tmp_path / "project" / "mlruns"


def test_reading_a_store_that_does_not_exist_creates_nothing(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    monkeypatch.chdir(tmp_path)
    store = resolve_store(None)
    assert not store.exists and not has_model(store, "models:/piano/Production")
    assert not (tmp_path / "mlruns").exists()


def test_explicit_uri_then_environment_then_default(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/env/mlflow.db")
    assert resolve_store("http://tracking:5000").tracking_uri == "http://tracking:5000"
    assert resolve_store("http://tracking:5000").artifact_root is None
    env = resolve_store(None)
    assert env.tracking_uri == f"sqlite:///{tmp_path}/env/mlflow.db"
    assert env.artifact_root == (tmp_path / "env" / "artifacts").as_uri()
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    monkeypatch.chdir(tmp_path)
    default = resolve_store(None)
    assert default.tracking_uri == f"sqlite:///{tmp_path}/mlruns/mlflow.db"
    assert ui_command(default)[:6] == [
        "mlflow",
        "ui",
        "--backend-store-uri",
        default.tracking_uri,
        "--host",
        "127.0.0.1",
    ]


def _open_search(args):
    from pianotx.locations import Store
    from pianotx.tracking import SearchTracker

    folder, name = args
    tracker = SearchTracker(Store(f"sqlite:///{folder}/mlflow.db", None), name)
    return tracker.start_search({}, {}, [])


def test_two_processes_open_a_new_store_at_once(tmp_path):
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(2) as pool:
        runs = pool.map(_open_search, [(str(tmp_path), "one"), (str(tmp_path), "two")])
    assert len(set(runs)) == 2
    with multiprocessing.get_context("spawn").Pool(2) as pool:  # the same experiment, created at once
        pool.map(_open_search, [(str(tmp_path / "b"), "same"), (str(tmp_path / "b"), "same")])


@pytest.mark.slow
def test_a_trial_run_stays_running_until_its_outcome_is_recorded(tmp_path):
    """Logging the model must not end the run: a kill before the objective is logged
    would leave a FINISHED run that no resume closes (RUNNING ones are marked KILLED)."""
    import keras
    import numpy as np

    from pianotx.config import DecodingConfig, FeatureConfig, model_metadata
    from pianotx.locations import Store
    from pianotx.tracking import OBJECTIVE_METRIC, SearchTracker

    store = Store(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}", (tmp_path / "mlruns" / "artifacts").as_uri())
    tracker = SearchTracker(store, "s")
    tracker.start_search({}, {}, [])
    run_id = tracker.start_trial("0", {"lstm_units": 8})
    model = keras.Sequential([keras.Input((None, 84)), keras.layers.Dense(88, activation="sigmoid")])
    x = np.zeros((1, 3, 84), np.float32)
    tracker.log_model(
        run_id, model, (x, model.predict_on_batch(x)), model_metadata(FeatureConfig(), DecodingConfig(), 64)
    )
    assert tracker.client.get_run(run_id).info.status == "RUNNING"
    assert tracker.complete_trial_run("0") is None
    tracker.log_metrics(run_id, {OBJECTIVE_METRIC: 0.5})
    tracker.end_trial(run_id)
    assert tracker.client.get_run(run_id).info.status == "FINISHED"
    assert tracker.complete_trial_run("0").info.run_id == run_id


KILLED_IN_SCHEMA = """
import os, re, signal, sys
from pathlib import Path
from sqlalchemy import event
from sqlalchemy.engine import Engine
from pianotx.locations import Store
from pianotx.tracking import connect
seen = {"versioned": False, "made": False}
@event.listens_for(Engine, "before_cursor_execute")
def die(conn, cursor, statement, parameters, context, executemany):
    if seen["made"]:  # a migration made a table and has not recorded itself: die here
        os.kill(os.getpid(), signal.SIGKILL)
    table = re.match(r"\\s*CREATE TABLE (\\w+)", statement)
    if table and table.group(1) == "alembic_version":
        seen["versioned"] = True
    elif table and seen["versioned"] and not table.group(1).startswith("_alembic"):
        seen["made"] = True
root = Path(sys.argv[1])
connect(Store(f"sqlite:///{root / 'mlflow.db'}", (root / "artifacts").as_uri()))
"""


def test_a_store_whose_creation_was_killed_is_made_again(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    killed = subprocess.run([sys.executable, "-c", KILLED_IN_SCHEMA, str(tmp_path)], env=env, capture_output=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()[-2000:]
    client = connect(Store(f"sqlite:///{tmp_path / 'mlflow.db'}", (tmp_path / "artifacts").as_uri()))
    assert [e.name for e in client.search_experiments()] == ["Default"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".schema.lock", "mlflow.db"]


def test_pip_requirements_are_pyprojects_without_pianotx():
    """A logged model's requirements are pianotx's own dependencies as pyproject.toml pins
    them (TensorFlow as the cpu/gpu extras do), never pianotx, which no index has."""
    from pianotx.tracking import PIP_REQUIREMENTS

    tomllib = pytest.importorskip("tomllib")  # Python 3.11 and later

    project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]
    tensorflow, *rest = PIP_REQUIREMENTS
    assert set(rest) <= set(project["dependencies"])
    assert tensorflow.removeprefix("tensorflow") == project["optional-dependencies"]["cpu"][0].removeprefix(
        "tensorflow-cpu"
    )
    assert not any(r.startswith("pianotx") for r in PIP_REQUIREMENTS)


def _dense_model(bias: float):
    import keras

    inputs = keras.Input((None, 84), name="cqt")
    dense = keras.layers.Dense(
        88, activation="sigmoid", name="frames", bias_initializer=keras.initializers.Constant(bias)
    )
    model = keras.Model(inputs, dense(inputs))
    model.compile(optimizer="adam", loss="binary_crossentropy")
    return model


def test_load_model_reads_the_keras_model_and_metadata_of_a_served_model(tmp_path):
    import numpy as np

    from pianotx.config import DecodingConfig, FeatureConfig, model_metadata
    from pianotx.tracking import MODEL_URI_TAG, SearchTracker, load_model

    store = Store(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}", (tmp_path / "mlruns" / "artifacts").as_uri())
    tracker = SearchTracker(store, "s")
    tracker.start_search({}, {}, [])
    run_id = tracker.start_trial("0", {})
    meta = model_metadata(FeatureConfig(), DecodingConfig(threshold=0.4), 64, dataset_fingerprint="abc")
    tracker.log_model(run_id, _dense_model(2.0), None, meta)
    uri = tracker.client.get_run(run_id).data.tags[MODEL_URI_TAG]
    model, loaded_meta = load_model(store, uri)
    assert loaded_meta == meta
    assert getattr(model, "optimizer", None) is None  # logged without its optimizer state
    p = model.predict_on_batch(np.zeros((1, 4, 84), np.float32))
    assert p.shape == (1, 4, 88) and round(float(p[0, 0, 0]), 4) == 0.8808  # sigmoid(2)


def test_models_logged_by_earlier_versions_in_the_keras_flavour_still_load(tmp_path, monkeypatch):
    """Stores made before models were served as audio-to-notes models hold MLflow Keras
    models: pianotx loads them as it did (tracking.load_model, load_transcriber)."""
    import mlflow
    import mlflow.keras
    import numpy as np
    from mlflow.models import infer_signature

    from pianotx.config import DecodingConfig, FeatureConfig, model_metadata
    from pianotx.tracking import connect, load_model, register
    from pianotx.transcribe import load_transcriber

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    store = Store(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}", (tmp_path / "mlruns" / "artifacts").as_uri())
    connect(store)
    model = _dense_model(-2.0)
    x = np.zeros((1, 3, 84), np.float32)
    meta = model_metadata(FeatureConfig(), DecodingConfig(), 64)
    with mlflow.start_run():  # as pianotx 0.1 logged a trial's model
        info = mlflow.keras.log_model(
            model,
            name="model",
            signature=infer_signature(x, model.predict_on_batch(x)),
            pip_requirements=["pianotx", "tensorflow", "keras>=3"],
            metadata={"pianotx": meta},
        )
    register(store, info.model_uri, "piano")
    loaded, loaded_meta = load_model(store, "models:/piano/Production")
    assert loaded_meta == meta
    assert round(float(loaded.predict_on_batch(x)[0, 0, 0]), 4) == 0.1192  # sigmoid(-2)
    transcriber = load_transcriber("models:/piano/Production", store.tracking_uri)
    assert transcriber.context == 64 and transcriber.decoding == DecodingConfig()
