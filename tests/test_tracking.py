from pianotx.locations import find_store_dir, resolve_store
from pianotx.tracking import has_model, ui_command


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
