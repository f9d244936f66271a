"""The bad-input catalogue (docs/errors.md): each kind gets one `error:` line naming
the file and the reason, exit status 1, no traceback, and nothing written."""

import json
import os
import shutil

import numpy as np
import pytest
from conftest import melody, write_pair
from typer.testing import CliRunner

from pianotx.build import build_dataset
from pianotx.cli import app
from pianotx.transcribe import BUNDLED_MODEL

runner = CliRunner()


def _one_line(result, expected=None, contains=()):
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.output, lines
    if expected is not None:
        assert lines[0] == f"error: {expected}"
    for part in contains:
        assert part in lines[0], lines[0]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad")
    for i in range(4):
        write_pair(root / "pairs", f"p{i}", melody(i, seconds=4.0))
    build_dataset(root / "pairs", root / "ds", workers=1, progress=False, log=lambda _: None)
    return root / "ds"


def _copy(dataset, tmp_path):
    target = tmp_path / "ds"
    shutil.copytree(dataset, target)
    return target


def _edit_manifest(ds, change):
    path = ds / "manifest.json"
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def _first_train_piece(data):
    return next(p for p in data["pieces"] if p["split"] == "train" and not p["excluded"])


# ---------------------------------------------------------------- data build


def test_build_missing_input(tmp_path):
    result = runner.invoke(app, ["data", "build", str(tmp_path / "nope"), str(tmp_path / "ds")])
    _one_line(result, f"{tmp_path / 'nope'}: input folder does not exist")


def test_build_given_a_file_says_it_is_a_file(tmp_path):
    write_pair(tmp_path, "a", melody(0, seconds=3.0))
    result = runner.invoke(app, ["data", "build", str(tmp_path / "a.wav"), str(tmp_path / "ds")])
    _one_line(
        result, f"{tmp_path / 'a.wav'}: the input is a file, not a folder (give the folder of audio and MIDI pairs)"
    )
    assert not (tmp_path / "ds").exists()


def test_build_strict_names_a_folder_named_like_audio(tmp_path):
    write_pair(tmp_path / "pairs", "a", melody(0, seconds=3.0))
    (tmp_path / "pairs" / "x.wav").mkdir()
    result = runner.invoke(app, ["data", "build", str(tmp_path / "pairs"), str(tmp_path / "ds"), "--strict"])
    error = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert result.exit_code == 1 and error == [
        f"error: {tmp_path / 'pairs' / 'x.wav'}: a folder, not an audio file (--strict)"
    ]


def test_build_strict_names_a_midi_of_a_24_hour_note(tmp_path):
    import mido

    write_pair(tmp_path / "pairs", "a", melody(0, seconds=3.0))
    day = mido.MidiFile(ticks_per_beat=480)
    note = [mido.Message("note_on", note=60, velocity=80), mido.Message("note_off", note=60, time=82_944_000)]
    day.tracks.append(mido.MidiTrack(note))
    day.save(str(tmp_path / "pairs" / "a.mid"))
    result = runner.invoke(
        app, ["data", "build", str(tmp_path / "pairs"), str(tmp_path / "ds"), "--strict", "--workers", "1"]
    )
    error = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert result.exit_code == 1 and error == [
        f"error: {tmp_path / 'pairs' / 'a.mid'}: MIDI lasts 86400 s, longer than the 7200 s (2 hours) pianotx reads "
        "(--strict)"
    ]


def test_render_refuses_a_text_file_named_sf2(tmp_path):
    (tmp_path / "piano.sf2").write_text("not a soundfont\n")
    result = runner.invoke(app, ["data", "render", str(tmp_path / "out"), "--piano", str(tmp_path / "piano.sf2")])
    _one_line(result, f"{tmp_path / 'piano.sf2'}: not a SoundFont file (no RIFF sfbk header)")
    assert not (tmp_path / "out").exists()


def test_build_negative_max_lag(tmp_path):
    write_pair(tmp_path / "pairs", "a", melody(0, seconds=3.0))
    result = runner.invoke(app, ["data", "build", str(tmp_path / "pairs"), str(tmp_path / "ds"), "--max-lag", "-1"])
    _one_line(result, contains=("max_lag_seconds must be positive", "-1.0"))
    assert not (tmp_path / "ds").exists()


def test_build_strict_names_the_bad_midi_and_a_reason(tmp_path):
    write_pair(tmp_path / "pairs", "a", melody(0, seconds=3.0))
    (tmp_path / "pairs" / "a.mid").write_bytes(b"MThd\x00\x00")
    result = runner.invoke(app, ["data", "build", str(tmp_path / "pairs"), str(tmp_path / "ds"), "--strict"])
    assert result.exit_code == 1
    error = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert error == [
        f"error: {tmp_path / 'pairs' / 'a.mid'}: MIDI does not parse "
        "(EOFError: the file ends early or is malformed) (--strict)"
    ]


# ---------------------------------------------------------------- search


def test_search_missing_space(tmp_path, dataset):
    result = runner.invoke(app, ["search", str(tmp_path / "nope.yaml"), "--data", str(dataset)])
    _one_line(result, f"{tmp_path / 'nope.yaml'}: no such search-space file")


def test_search_folder_that_is_no_dataset(tmp_path):
    space = tmp_path / "s.yaml"
    space.write_text("tuner: {type: random, max_trials: 1}\n")
    (tmp_path / "mlruns").mkdir()
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    result = runner.invoke(app, ["search", str(space), "--data", str(tmp_path), "--tracking-uri", uri])
    _one_line(result, f"{tmp_path}: not a pianotx dataset (no manifest.json); run `pianotx data build`")


# ---------------------------------------------------------------- transcribe


def test_text_named_mp3_is_one_quiet_line(tmp_path, capfd):
    (tmp_path / "song.mp3").write_text("not audio")
    result = runner.invoke(app, ["transcribe", "-q", str(tmp_path / "song.mp3"), "--model", str(BUNDLED_MODEL)])
    _one_line(result, f"{tmp_path / 'song.mp3'}: cannot decode audio (no decoder recognises the file)")
    # without -q the model is named first, on a line of its own
    said = runner.invoke(app, ["transcribe", str(tmp_path / "song.mp3"), "--model", str(BUNDLED_MODEL)]).output
    assert said.splitlines() == [f"transcribing with {BUNDLED_MODEL}", result.output.strip()]
    assert capfd.readouterr().err == ""  # nothing from the native decoders either
    assert sorted(p.name for p in tmp_path.iterdir()) == ["song.mp3"]


def test_text_named_keras_is_not_a_model(tmp_path):
    (tmp_path / "m.keras").write_text("hello")
    (tmp_path / "m.json").write_text('{"features": {}}')
    result = runner.invoke(app, ["transcribe", str(tmp_path / "x.wav"), "--model", str(tmp_path / "m.keras")])
    _one_line(result, f"{tmp_path / 'm.keras'}: not a Keras model file (a .keras file is a zip archive)")


def test_http_model_uri_is_refused(tmp_path):
    (tmp_path / "x.wav").write_bytes(b"")
    result = runner.invoke(app, ["transcribe", str(tmp_path / "x.wav"), "--model", "http://127.0.0.1:9/x"])
    _one_line(result, contains=("http://127.0.0.1:9/x: pianotx cannot load a model from http: URIs",))


def test_model_uri_of_a_store_that_does_not_exist_creates_nothing(tmp_path):
    (tmp_path / "x.wav").write_bytes(b"")
    uri = f"sqlite:///{tmp_path / 'nostore' / 'mlflow.db'}"
    result = runner.invoke(
        app, ["transcribe", str(tmp_path / "x.wav"), "--model", "models:/piano/1", "--tracking-uri", uri]
    )
    _one_line(result, f"model models:/piano/1 not found in {uri} (registered models: none)")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.wav"]


def test_decoding_value_out_of_range(tmp_path):
    (tmp_path / "x.wav").write_bytes(b"")
    result = runner.invoke(
        app, ["transcribe", str(tmp_path / "x.wav"), "--model", str(BUNDLED_MODEL), "--threshold", "2"]
    )
    _one_line(result, "decoding options: threshold and onset_threshold must be in [0, 1]")


def test_failed_transcription_leaves_no_output_folder(tmp_path):
    (tmp_path / "x.wav").write_text("not audio")
    result = runner.invoke(
        app, ["transcribe", str(tmp_path / "x.wav"), "-o", str(tmp_path / "out"), "--model", str(BUNDLED_MODEL)]
    )
    assert result.exit_code == 1 and not (tmp_path / "out").exists()


def test_midi_files_follow_the_umask(tmp_path):
    import soundfile as sf

    sf.write(tmp_path / "a.wav", np.zeros(16000, np.float32), 16000)
    old = os.umask(0o022)
    try:
        result = runner.invoke(app, ["transcribe", str(tmp_path / "a.wav"), "--model", str(BUNDLED_MODEL)])
    finally:
        os.umask(old)
    assert result.exit_code == 0
    assert (tmp_path / "a.mid").stat().st_mode & 0o777 == 0o644


# ---------------------------------------------------------------- evaluate on an edited dataset


def _evaluate(ds):
    return runner.invoke(app, ["evaluate", str(ds), "--model", str(BUNDLED_MODEL), "--split", "train", "--no-log"])


def test_evaluate_renamed_piece(dataset, tmp_path):
    ds = _copy(dataset, tmp_path)
    _edit_manifest(ds, lambda d: _first_train_piece(d).update(name="renamed"))
    _one_line(
        _evaluate(ds), f"{ds / 'train' / 'notes.npz'}: no reference notes for piece 'renamed'; rebuild the dataset"
    )


def test_evaluate_missing_shard(dataset, tmp_path):
    ds = _copy(dataset, tmp_path)
    (ds / "train" / "features-000.npy").unlink()
    _one_line(_evaluate(ds), f"{ds / 'train' / 'features-000.npy'}: shard missing or unreadable; rebuild the dataset")


def test_evaluate_mis_indexed_shard(dataset, tmp_path):
    ds = _copy(dataset, tmp_path)
    _edit_manifest(ds, lambda d: d["splits"]["train"]["shards"][0].update(index=7))
    _one_line(_evaluate(ds), f"{ds / 'train' / 'features-007.npy'}: shard missing or unreadable; rebuild the dataset")


def test_evaluate_non_integer_chunk_index(dataset, tmp_path):
    ds = _copy(dataset, tmp_path)
    _edit_manifest(ds, lambda d: _first_train_piece(d).update(chunk_start="zero"))
    _one_line(_evaluate(ds), contains=(f"{ds / 'manifest.json'}: piece ", "has no integer chunk range"))


def test_evaluate_chunk_range_outside_the_shards(dataset, tmp_path):
    ds = _copy(dataset, tmp_path)
    _edit_manifest(ds, lambda d: _first_train_piece(d).update(chunk_start=10**6))
    _one_line(_evaluate(ds), contains=("lies outside the train shards",))


def test_evaluate_json_into_a_missing_folder(dataset, tmp_path):
    result = runner.invoke(
        app, ["evaluate", str(dataset), "--model", str(BUNDLED_MODEL), "--json", str(tmp_path / "no" / "x.json")]
    )
    _one_line(result, f"{tmp_path / 'no' / 'x.json'}: its folder does not exist")
