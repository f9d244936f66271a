"""The registered model as MLflow serves it: audio in, notes out, loadable without pianotx."""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from conftest import SR, synth

from pianotx.midi import Notes
from pianotx.serving import ServingError, audio_data, audio_suffix, notes_table, rows

REPO = Path(__file__).resolve().parents[1]


def _wav_bytes(samples: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, samples, SR, format="WAV")
    return buffer.getvalue()


def test_audio_bytes_are_taken_raw_or_as_base64_text():
    wav = _wav_bytes(np.zeros(160, np.float32))
    text = base64.b64encode(wav).decode()
    assert audio_data(wav, 0) == (wav, ".wav")
    assert audio_data(text, 0) == (wav, ".wav")
    assert audio_data(text.encode(), 0) == (wav, ".wav")  # what MLflow passes on for `inputs` requests
    assert audio_data(base64.encodebytes(wav).decode(), 0) == (wav, ".wav")  # with line breaks
    assert [audio_suffix(b) for b in (b"fLaC..", b"OggS..", b"ID3..", b"\xff\xfb\x90", b"PK\x03\x04")] == [
        ".flac",
        ".ogg",
        ".mp3",
        ".mp3",
        None,
    ]
    with pytest.raises(ServingError) as err:
        audio_data(b"hello there", 3)
    assert str(err.value) == "row 3: audio_bytes is not WAV, FLAC, OGG or MP3 data (nor base64 text of it)"
    with pytest.raises(ServingError) as err:
        audio_data(7, 1)
    assert str(err.value) == "row 1: audio_bytes must be bytes or base64 text, got int"


def test_each_row_gives_one_of_the_two_columns():
    frame = pd.DataFrame({"audio": ["a.wav", None], "audio_bytes": [None, b"RIFF"]})
    assert rows(frame) == [("audio", "a.wav"), ("audio_bytes", b"RIFF")]
    assert rows(pd.DataFrame({"audio": ["a.wav", "b.mp3"]})) == [("audio", "a.wav"), ("audio", "b.mp3")]
    with pytest.raises(ServingError) as err:
        rows(pd.DataFrame({"audio": ["a.wav"], "audio_bytes": [b"RIFF"]}))
    assert str(err.value) == "row 0: give exactly one of audio and audio_bytes"
    with pytest.raises(ServingError) as err:
        rows(pd.DataFrame({"path": ["a.wav"]}))
    assert str(err.value) == (
        "the input needs a column audio (file paths) or audio_bytes (file contents); got ['path']"
    )


def test_notes_table_numbers_the_inputs():
    first = Notes.from_lists([(0.5, 1.0), (0.1, 0.3)], [60, 64], [90, 70])
    table = notes_table([first, Notes.empty(), Notes.from_lists([(0.0, 2.0)], [21], [1])])
    assert list(table.columns) == ["input", "onset", "offset", "pitch", "velocity"]
    assert [str(d) for d in table.dtypes] == ["int64", "float64", "float64", "int64", "int64"]
    assert table.values.tolist() == [[0, 0.1, 0.3, 64, 70], [0, 0.5, 1.0, 60, 90], [2, 0.0, 2.0, 21, 1]]
    assert notes_table([]).shape == (0, 5)


def _log_a4_model(store) -> str:
    """Register (as `piano`, Production) a model that hears A4 (MIDI 69) in every frame
    of any input and nothing else; the version's URI."""
    import keras

    from pianotx.config import DecodingConfig, FeatureConfig, model_metadata
    from pianotx.tracking import MODEL_URI_TAG, SearchTracker, register

    inputs = keras.Input((None, 84), name="cqt")
    dense = keras.layers.Dense(88, activation="sigmoid", name="frames")
    model = keras.Model(inputs, dense(inputs))
    bias = np.full(88, -8.0, np.float32)
    bias[69 - 21] = 8.0
    dense.set_weights([np.zeros((84, 88), np.float32), bias])
    tracker = SearchTracker(store, "a4")
    tracker.start_search({}, {}, [])
    run_id = tracker.start_trial("0", {})
    meta = model_metadata(FeatureConfig(), DecodingConfig(), 64, note="kept")
    tracker.log_model(run_id, model, None, meta)
    version = register(store, tracker.client.get_run(run_id).data.tags[MODEL_URI_TAG], "piano")
    return f"models:/piano/{version}"


def _store(tmp_path):
    from pianotx.locations import Store

    return Store(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}", (tmp_path / "mlruns" / "artifacts").as_uri())


def _fresh_env(store) -> dict[str, str]:
    """The environment of a Python that has not imported pianotx and cannot find the
    repository's copy (run outside it, without PYTHONPATH)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return env | {"MLFLOW_TRACKING_URI": store.tracking_uri}


FRESH_PREDICT = """
import json, sys
import mlflow, pandas as pd
assert "pianotx" not in sys.modules
loaded = mlflow.pyfunc.load_model(sys.argv[1])
import pianotx
path = sys.argv[2]
frame = pd.DataFrame({"audio": [path, None], "audio_bytes": [None, open(path, "rb").read()]})
notes = loaded.predict(frame)
transcriber = loaded.unwrap_python_model().transcriber
print(json.dumps({
    "package": pianotx.__file__,
    "columns": list(notes.columns),
    "dtypes": [str(d) for d in notes.dtypes],
    "rows": notes.values.tolist(),
    "keras": type(transcriber.model).__name__,
    "context": transcriber.context,
}))
"""


@pytest.mark.slow
def test_a_fresh_python_loads_the_registered_model_and_transcribes_audio(tmp_path):
    store = _store(tmp_path)
    uri = _log_a4_model(store)
    sf.write(tmp_path / "a4.wav", synth(Notes.from_lists([(0.2, 0.8)], [69], [100]), seconds=1.0), SR)
    cmd = [sys.executable, "-c", FRESH_PREDICT, uri, str(tmp_path / "a4.wav")]
    done = subprocess.run(cmd, cwd=tmp_path, env=_fresh_env(store), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    # pianotx came with the model (its code folder), not from the repository
    assert out["package"].endswith("/code/pianotx/__init__.py") and not out["package"].startswith(str(REPO))
    assert out["columns"] == ["input", "onset", "offset", "pitch", "velocity"]
    assert out["dtypes"] == ["int64", "float64", "float64", "int64", "int64"]
    # 1 s at 16 kHz is 32 frames of 1/31.25 s; A4 sounds in all: one note 0-1.024 s, velocity
    # round(127 * sigmoid(8)) = 127, from the path (row 0) and from the bytes (row 1) alike
    assert out["rows"] == [[0, 0.0, 1.024, 69, 127], [1, 0.0, 1.024, 69, 127]]
    assert out["keras"] == "Functional" and out["context"] == 64


def test_the_logged_model_names_what_it_needs_and_not_pianotx(tmp_path):
    import mlflow
    from packaging.requirements import Requirement

    from pianotx.tracking import PIP_REQUIREMENTS, connect

    store = _store(tmp_path)
    uri = _log_a4_model(store)
    connect(store)
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri))
    requirements = [Requirement(r) for r in (local / "requirements.txt").read_text().split()]
    assert requirements[0].name == "mlflow" and requirements[1:] == [Requirement(r) for r in PIP_REQUIREMENTS]
    assert "pianotx" not in {r.name for r in requirements}
    assert sorted(p.name for p in (local / "artifacts" / "transcriber").iterdir()) == ["piano.json", "piano.keras"]
    assert json.loads((local / "artifacts" / "transcriber" / "piano.json").read_text())["note"] == "kept"
    code = local / "code" / "pianotx"
    assert (code / "serving.py").is_file() and (code / "model.py").is_file()
    assert not list(code.rglob("*.keras")) and not list(code.rglob("__pycache__"))
    signature = mlflow.models.Model.load(str(local)).signature.to_dict()
    assert json.loads(signature["inputs"]) == [
        {"type": "string", "name": "audio", "required": False},
        {"type": "binary", "name": "audio_bytes", "required": False},
    ]
    assert json.loads(signature["outputs"]) == [
        {"type": "long", "name": "input", "required": True},
        {"type": "double", "name": "onset", "required": True},
        {"type": "double", "name": "offset", "required": True},
        {"type": "long", "name": "pitch", "required": True},
        {"type": "long", "name": "velocity", "required": True},
    ]
    example = json.loads((local / "serving_input_example.json").read_text())
    assert example["dataframe_split"]["columns"] == ["audio_bytes"]
    assert base64.b64decode(example["dataframe_split"]["data"][0][0])[:4] == b"RIFF"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _post(url: str, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=300) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def _assert_one_a4(predictions: list[dict]) -> None:
    """The bundled model hears the synthesized A4 of 0.5-1.5 s as one note (0.4771-1.4691 s
    on a CPU), within mir_eval's onset tolerance of 0.05 s."""
    assert [sorted(n) for n in predictions] == [["input", "offset", "onset", "pitch", "velocity"]]
    (note,) = predictions
    assert (note["input"], note["pitch"]) == (0, 69)
    assert abs(note["onset"] - 0.5) <= 0.05 and abs(note["offset"] - 1.5) <= 0.05
    assert 1 <= note["velocity"] <= 127


@pytest.mark.slow
def test_mlflow_models_serve_answers_audio_with_notes(tmp_path):
    from pianotx.tuning.champion import register_bundled

    store = _store(tmp_path)
    register_bundled(store, "piano")  # the bundled model, logged and registered as pianotx does
    clip = synth(Notes.from_lists([(0.5, 1.5)], [69], [100]), seconds=2.0)  # A4 from 0.5 to 1.5 s
    sf.write(tmp_path / "a4.wav", clip, SR)
    mp3 = "MP3" in sf.available_formats()  # libsndfile 1.1 and later encode MP3
    if mp3:
        sf.write(tmp_path / "a4.mp3", clip, SR, format="MP3", subtype="MPEG_LAYER_III")
    port = _free_port()
    mlflow_bin = Path(sys.executable).with_name("mlflow")
    cmd = [str(mlflow_bin), "models", "serve", "-m", "models:/piano/Production", "--env-manager", "local"]
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    log = (tmp_path / "serve.log").open("w")
    # `mlflow models serve` runs `uvicorn` from PATH: this Python's, as in an activated venv
    env = _fresh_env(store) | {"PATH": f"{mlflow_bin.parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    server = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 400
        while True:
            assert server.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, (tmp_path / "serve.log").read_text()[-3000:]
            time.sleep(2)
        url = f"http://127.0.0.1:{port}/invocations"
        wav = base64.b64encode((tmp_path / "a4.wav").read_bytes()).decode()
        status, body = _post(url, {"dataframe_split": {"columns": ["audio_bytes"], "data": [[wav]]}})
        assert status == 200, body
        _assert_one_a4(body["predictions"])
        if mp3:
            data = base64.b64encode((tmp_path / "a4.mp3").read_bytes()).decode()
            status, body = _post(url, {"inputs": {"audio_bytes": [data]}})
            assert status == 200, body
            _assert_one_a4(body["predictions"])
        status, body = _post(url, {"dataframe_split": {"columns": ["audio_bytes"], "data": [["aGVsbG8="]]}})
        assert status == 400
        assert body["message"].endswith("row 0: audio_bytes is not WAV, FLAC, OGG or MP3 data (nor base64 text of it)")
    finally:
        _stop(server)
        log.close()


def _stop(server: subprocess.Popen) -> None:
    """Stop the server and the workers it started (its process group)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(server.pid, sig)
        except ProcessLookupError:  # the group is gone already
            break
        try:
            server.wait(timeout=30)
            break
        except subprocess.TimeoutExpired:
            continue
    server.wait()
