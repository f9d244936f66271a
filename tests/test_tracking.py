from pianotx.tracking import find_store_dir, resolve_store, ui_command


def test_store_is_found_upwards_like_git(tmp_path, monkeypatch):
    (tmp_path / "project" / "mlruns").mkdir(parents=True)
    (tmp_path / "project" / "mlruns" / "mlflow.db").write_bytes(b"")
    deep = tmp_path / "project" / "notebooks" / "2026"
    deep.mkdir(parents=True)
    assert find_store_dir(deep) == tmp_path / "project" / "mlruns"
    assert find_store_dir(tmp_path / "elsewhere") == tmp_path / "elsewhere" / "mlruns"


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
