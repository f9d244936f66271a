"""Transcription with real models: windowing without seams, the CLI, bad input."""

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import SR, melody, synth
from typer.testing import CliRunner

from pianotx.cli import app
from pianotx.decoding import decode
from pianotx.features import compute_features
from pianotx.midi import Notes, read_notes
from pianotx.transcribe import BUNDLED_MODEL, load_local, transcribe_file
from pianotx.windows import predict_frames

runner = CliRunner()


@pytest.fixture(scope="module")
def bundled():
    return load_local(BUNDLED_MODEL)


def test_bundled_model_is_small_and_carries_its_feature_config(bundled):
    assert BUNDLED_MODEL.stat().st_size < 10 * 10**6  # the limit: under 10 MB
    features = bundled.features  # three bins per semitone: what paid most on the held-out piano
    assert (features.n_bins, features.bins_per_octave, features.hop_length) == (252, 36, 512)
    assert sorted(bundled.model.output_names) == ["frames", "onsets", "velocities"]
    assert [tuple(s) for s in bundled.model.output_shape] == [(None, None, 88)] * 3
    assert bundled.context == 1024  # tuned on validation:
    assert (bundled.decoding.threshold, bundled.decoding.onset_threshold) == (0.3, 0.9)
    assert (bundled.decoding.onsetless_min_duration, bundled.decoding.onsetless_threshold) == (2.0, 0.6)


def test_overlapping_windows_match_one_pass(bundled):
    features = compute_features(synth(melody(3, seconds=40)), bundled.features)  # 1,254 frames
    whole = bundled.model.predict_on_batch(features[None])["frames"][0]
    # windows of 128 kept frames with the model's context each side: windows of several lengths
    windowed = predict_frames(
        bundled.model.predict_on_batch, features, window=128, context=bundled.context, batch_size=2
    )
    assert windowed.shape == (len(features), 88)
    assert np.abs(windowed - whole).max() < 1e-3  # with half the context: 0.019
    naive = predict_frames(bundled.model.predict_on_batch, features, window=128, context=0)
    assert np.abs(naive - whole).max() > 0.01
    # no seam: the notes decoded from the windows are exactly those of one pass
    expected, got = decode(whole, 31.25, bundled.decoding), decode(windowed, 31.25, bundled.decoding)
    assert len(expected) > 40 and got.pitches.tolist() == expected.pitches.tolist()
    np.testing.assert_array_equal(got.intervals, expected.intervals)


@pytest.mark.slow
def test_rendered_piece_is_transcribed_with_matching_notes(bundled, tmp_path):
    from pianotx.evaluate import evaluate_piece
    from pianotx.render.corpus import RenderOptions, render_corpus

    render_corpus(
        tmp_path / "r",
        RenderOptions(
            corpus=("bach/bwv",), pieces=1, seconds=12, generated=0, pianos=("FluidR3_GM",), seed=7, augment="off"
        ),
    )
    (wav,) = sorted((tmp_path / "r").glob("*.wav"))
    result = transcribe_file(bundled, wav, tmp_path / "out")
    assert not result.error and result.notes > 10
    scores = evaluate_piece(read_notes(wav.with_suffix(".mid")), read_notes(result.midi))
    assert scores["frame_f1"] > 0.6 and scores["note_f1"] > 0.5


def test_cli_transcribes_many_files_and_reports_each_failure(tmp_path):
    good = tmp_path / "in" / "tone.wav"
    good.parent.mkdir()
    t = np.arange(SR * 2) / SR
    sf.write(good, (0.3 * np.sin(2 * np.pi * 440 * t) * np.exp(-t)).astype(np.float32), SR)
    sf.write(tmp_path / "in" / "silence.wav", np.zeros(SR * 3, np.float32), SR)
    sf.write(tmp_path / "in" / "blip.wav", np.zeros(SR // 10, np.float32), SR)  # shorter than a chunk
    (tmp_path / "notaudio.wav").write_text("hello")
    (tmp_path / "notes.txt").write_text("hello")
    args = [
        "transcribe",
        str(tmp_path / "in"),
        str(tmp_path / "missing.wav"),
        str(tmp_path / "notaudio.wav"),
        str(tmp_path / "notes.txt"),
        "-o",
        str(tmp_path / "out"),
        "--model",
        str(BUNDLED_MODEL),
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 1
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: {tmp_path / 'missing.wav'}: no such file",
        f"error: {tmp_path / 'notaudio.wav'}: cannot decode audio (no decoder recognises the file)",
        f"error: {tmp_path / 'notes.txt'}: unsupported format .txt; expected .wav, .flac, .ogg, .mp3, .opus, .oga, "
        ".aiff, .aif, .m4a, .aac, .mp4",
    ]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["blip.mid", "silence.mid", "tone.mid"]
    assert len(read_notes_or_empty(tmp_path / "out" / "silence.mid")) == 0
    assert len(read_notes_or_empty(tmp_path / "out" / "blip.mid")) == 0


def read_notes_or_empty(path: Path) -> Notes:
    import pretty_midi

    pm = pretty_midi.PrettyMIDI(str(path))
    return Notes.from_lists(
        [(n.start, n.end) for i in pm.instruments for n in i.notes], [n.pitch for i in pm.instruments for n in i.notes]
    )


def test_cli_unknown_registered_model_lists_what_exists(tmp_path):
    store = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    (tmp_path / "store").mkdir()
    sf.write(tmp_path / "a.wav", np.zeros(SR, np.float32), SR)
    args = ["transcribe", str(tmp_path / "a.wav"), "--model", "models:/nope/Production", "--tracking-uri", store]
    result = runner.invoke(app, args)
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1] == (
        f"error: model models:/nope/Production not found in {store} (registered models: none)"
    )


def test_cli_unwritable_output_is_one_error_line(tmp_path):
    sf.write(tmp_path / "a.wav", np.zeros(SR, np.float32), SR)
    (tmp_path / "taken").write_text("a file, not a folder")
    result = runner.invoke(
        app, ["transcribe", str(tmp_path / "a.wav"), "-o", str(tmp_path / "taken"), "--model", str(BUNDLED_MODEL)]
    )
    assert result.exit_code == 1
    assert result.output.strip() == f"error: {tmp_path / 'taken'}: cannot create output folder (File exists)"


def test_without_a_registered_model_the_bundled_one_is_used(tmp_path):
    # the autouse fixture points MLFLOW_TRACKING_URI at an empty store
    from pianotx.transcribe import load_transcriber

    assert load_transcriber(None).source == str(BUNDLED_MODEL)
    t = np.arange(SR * 2) / SR
    sf.write(tmp_path / "c4.wav", (0.3 * np.sin(2 * np.pi * 261.63 * t)).astype(np.float32), SR)
    result = runner.invoke(app, ["transcribe", str(tmp_path / "c4.wav")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "c4.mid").is_file()


def _register_dense(store, bias: float) -> None:
    """Log a one-layer model (every output sigmoid(bias)) and register it as `piano`."""
    import keras

    from pianotx.config import DecodingConfig, FeatureConfig, model_metadata
    from pianotx.tracking import MODEL_URI_TAG, SearchTracker, register

    inputs = keras.Input((None, 84), name="cqt")
    dense = keras.layers.Dense(
        88, activation="sigmoid", name="frames", bias_initializer=keras.initializers.Constant(bias)
    )
    model = keras.Model(inputs, dense(inputs))
    tracker = SearchTracker(store, f"s{bias}")
    tracker.start_search({}, {}, [])
    run_id = tracker.start_trial("0", {})
    x = np.zeros((1, 3, 84), np.float32)
    tracker.log_model(
        run_id, model, (x, model.predict_on_batch(x)), model_metadata(FeatureConfig(), DecodingConfig(), 64)
    )
    register(store, tracker.client.get_run(run_id).data.tags[MODEL_URI_TAG], "piano")


LOAD_AND_SAY = """
import sys
import numpy as np
from pianotx.transcribe import load_transcriber
t = load_transcriber("models:/piano/Production", sys.argv[1])
p = t.probabilities(np.zeros((4, 84), np.float32))["frames"]
print(t.source, round(float(p[0, 0]), 4), "mlflow" in sys.modules)
print(t.name)
"""


def test_a_registered_model_is_cached_until_the_registry_changes(tmp_path, monkeypatch):
    import os
    import subprocess
    import sys

    from pianotx.locations import Store

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    store = Store(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}", (tmp_path / "mlruns" / "artifacts").as_uri())
    _register_dense(store, 0.0)

    def load() -> str:
        cmd = [sys.executable, "-c", LOAD_AND_SAY, store.tracking_uri]
        return subprocess.run(cmd, capture_output=True, text=True, check=True, env=os.environ).stdout.strip()

    first = "models:/piano/Production (piano version 1)"
    assert load() == f"models:/piano/Production 0.5 True\n{first}"  # resolved through MLflow, then cached
    assert load() == f"models:/piano/Production 0.5 False\n{first}"  # the cached copy: MLflow not imported
    _register_dense(store, 2.0)  # a new Production version: the store changed
    second = "models:/piano/Production (piano version 2)"
    assert load() == f"models:/piano/Production 0.8808 True\n{second}"
    assert load() == f"models:/piano/Production 0.8808 False\n{second}"


def test_cli_onset_threshold_reaches_the_decoding(tmp_path):
    sf.write(tmp_path / "a.wav", np.zeros(SR, np.float32), SR)
    args = ["transcribe", str(tmp_path / "a.wav"), "-o", str(tmp_path / "out"), "--model", str(BUNDLED_MODEL)]
    result = runner.invoke(app, [*args, "--onset-threshold", "2"])
    assert result.exit_code == 1
    assert (
        result.output.strip().splitlines()[-1]
        == "error: decoding options: threshold and onset_threshold must be in [0, 1]"
    )
    assert runner.invoke(app, [*args, "--onset-threshold", "0.6"]).exit_code == 0


def test_export_tune_on_tunes_the_decoding_afresh_on_the_validation_pieces(tmp_path):
    import json

    from conftest import write_pair

    from pianotx.build import build_dataset
    from pianotx.config import BuildConfig, ChunkConfig, DecodingConfig
    from pianotx.evaluate import split_rolls, tune_decoding
    from pianotx.store import load_manifest

    for i in range(10):
        write_pair(tmp_path / "pairs", f"p{i}", melody(i, seconds=4))
    config = BuildConfig(chunks=ChunkConfig(chunk_frames=64))
    build_dataset(tmp_path / "pairs", tmp_path / "ds", config, workers=1, progress=False, log=lambda _: None)

    export = ["export", str(BUNDLED_MODEL), str(tmp_path / "out"), "--tune-on"]
    missing = runner.invoke(app, [*export, str(tmp_path)])
    assert missing.exit_code == 1 and str(tmp_path) in missing.output
    assert not (tmp_path / "out").exists()  # nothing written for a dataset that is not there

    result = runner.invoke(app, [*export, str(tmp_path / "ds")])
    assert result.exit_code == 0, result.output
    decoding = json.loads((tmp_path / "out" / "piano.json").read_text())["decoding"]
    # what a search trial's tuning gives on the same pieces, from the default settings
    bundled = load_local(BUNDLED_MODEL)
    rolls = split_rolls(bundled.probabilities, load_manifest(tmp_path / "ds"), "validation", 24, bundled.features)
    expected, _ = tune_decoding([(r, ref) for _, r, ref in rolls], bundled.features.frame_rate, DecodingConfig())
    assert decoding == dataclasses.asdict(dataclasses.replace(expected, min_duration=bundled.decoding.min_duration))
    assert decoding != dataclasses.asdict(bundled.decoding)  # the tiny sine melodies call for other settings
    exported = load_local(tmp_path / "out" / "piano.keras")
    for a, b in zip(exported.model.get_weights(), bundled.model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def _tone(path: Path, seconds: float = 2.0) -> None:
    t = np.arange(int(SR * seconds)) / SR
    sf.write(path, (0.3 * np.sin(2 * np.pi * 440 * t) * np.exp(-t)).astype(np.float32), SR)


def test_transcribe_names_its_model_and_marks_each_midi_file(tmp_path):
    import mido

    _tone(tmp_path / "a.wav")
    result = runner.invoke(app, ["transcribe", str(tmp_path / "a.wav")])  # no store: the bundled model
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "transcribing with the bundled model"
    assert lines[1].startswith(f"{tmp_path / 'a.mid'}: ") and len(lines) == 2
    texts = [m.text for m in mido.MidiFile(tmp_path / "a.mid").tracks[0] if m.type == "text"]
    from pianotx import __version__

    assert texts == [f"pianotx {__version__} transcription with the bundled model"]
    assert runner.invoke(app, ["transcribe", "-q", str(tmp_path / "a.wav")]).output == ""


def test_transcribe_never_replaces_a_midi_file_it_did_not_write(tmp_path):
    # a folder of audio + reference MIDI pairs, as `data build` reads them
    for name in ("a", "b"):
        _tone(tmp_path / f"{name}.wav")
    reference = tmp_path / "a.mid"
    reference.write_bytes(b"the user's own file")
    args = ["transcribe", str(tmp_path), "--model", str(BUNDLED_MODEL)]
    result = runner.invoke(app, args)
    assert result.exit_code == 1
    lines = result.output.splitlines()
    why = f"{reference} is there and pianotx did not write it (--overwrite replaces it)"
    assert f"skipped {tmp_path / 'a.wav'}: {why}" in lines
    assert lines[-1] == "2 inputs: 1 written, 1 skipped"
    assert reference.read_bytes() == b"the user's own file"
    # its own output is replaced without asking; the user's file only with --overwrite
    own = (tmp_path / "b.mid").stat().st_mtime_ns
    result = runner.invoke(app, [*args, "--overwrite"])
    assert result.exit_code == 0, result.output
    assert reference.read_bytes()[:4] == b"MThd" and (tmp_path / "b.mid").stat().st_mtime_ns != own


def test_transcribe_file_reports_its_progress_to_the_end(bundled, tmp_path):
    from pianotx.features import CHUNK_SAMPLES

    _tone(tmp_path / "a.wav", seconds=180)  # 5,626 frames: three windows of 2,048 kept frames or fewer
    seen: list[float] = []
    result = transcribe_file(bundled, tmp_path / "a.wav", tmp_path / "out", progress=seen.append)
    assert not result.error
    n = 180 * SR
    # one fraction over the file: the mean of the features' (the chunks pushed, but the last)
    # and the model's (each window in a batch of its own: no two have one length with their
    # context); the first window runs once 13 chunks gave its frames, the others at the end
    features = [k * CHUNK_SAMPLES / n for k in range(1, n // CHUNK_SAMPLES + 1)]
    assert len(features) == 21
    assert seen == [
        *[(f + 0.0) / 2 for f in features[:13]],
        *[(f + 1 / 3) / 2 for f in features[12:]],
        (features[-1] + 2 / 3) / 2,
        (features[-1] + 1.0) / 2,
        1.0,
    ]


def test_a_damaged_keras_file_is_one_line_with_keras_reason(tmp_path):
    import zipfile

    with zipfile.ZipFile(tmp_path / "m.keras", "w") as archive:
        archive.writestr("config.json", '{"class_name": "NoSuchLayer", "config": {}}')
        archive.writestr("metadata.json", "{}")
    (tmp_path / "m.json").write_text('{"features": {}}')
    _tone(tmp_path / "a.wav")
    result = runner.invoke(app, ["transcribe", str(tmp_path / "a.wav"), "--model", str(tmp_path / "m.keras")])
    assert result.exit_code == 1
    (line,) = result.output.strip().splitlines()
    assert line.startswith(f"error: {tmp_path / 'm.keras'}: Keras cannot load it (") and "Traceback" not in line
    assert "NoSuchLayer" in line


def test_version_and_short_help():
    from pianotx import __version__

    assert runner.invoke(app, ["--version"]).output == f"pianotx {__version__}\n"
    short, long = runner.invoke(app, ["transcribe", "-h"]), runner.invoke(app, ["transcribe", "--help"])
    assert short.exit_code == 0 and short.output == long.output and "--overwrite" in short.output


@pytest.mark.parametrize("window", [2048, 160])  # one window; windows in several batches, the decoding in blocks
def test_a_file_streamed_gives_the_midi_of_the_whole_file_path(tmp_path, monkeypatch, window):
    from pianotx import transcribe
    from pianotx.features import file_features
    from pianotx.midi import write_midi
    from pianotx.transcribe import load_bundled, midi_mark

    monkeypatch.setattr(transcribe, "WINDOW_FRAMES", window)
    model = load_bundled()
    samples = synth(melody(11, seconds=40), sample_rate=44100, seconds=40.0)
    sf.write(tmp_path / "piece.wav", np.stack([samples, 0.5 * samples], axis=1), 44100, subtype="PCM_16")
    # the whole-file path: the file's features, then the model over them, then the decoding
    features, n_samples = file_features(tmp_path / "piece.wav", model.features)
    whole = model.notes(features)
    write_midi(whole, tmp_path / "whole.mid", text=midi_mark(model))
    result = transcribe_file(model, tmp_path / "piece.wav", tmp_path / "out")
    assert not result.error and result.notes == len(whole) > 40 and n_samples == 640000
    streamed, _ = model.file_notes(tmp_path / "piece.wav")
    np.testing.assert_array_equal(streamed.intervals, whole.intervals)
    np.testing.assert_array_equal(streamed.pitches, whole.pitches)
    np.testing.assert_array_equal(streamed.velocities, whole.velocities)
    assert result.midi.read_bytes() == (tmp_path / "whole.mid").read_bytes()


def test_a_model_failing_mid_file_is_its_own_error_not_a_decoding_one(bundled, tmp_path):
    class Failing:
        def predict_on_batch(self, batch):
            raise RuntimeError("out of memory in the model")

    _tone(tmp_path / "a.wav", seconds=5)
    result = transcribe_file(dataclasses.replace(bundled, model=Failing()), tmp_path / "a.wav", tmp_path / "out")
    assert (result.midi, result.error) == (None, "RuntimeError: out of memory in the model")
    assert not (tmp_path / "out").exists()


class _FeatureEcho:
    """A stand-in model: the first 88 feature bins as frame and onset probabilities."""

    def predict_on_batch(self, batch):
        return {"frames": batch[:, :, :88], "onsets": batch[:, :, 1:89]}


def test_transcribing_a_file_holds_no_more_for_a_longer_file(tmp_path, monkeypatch):
    import tracemalloc

    from pianotx import transcribe
    from pianotx.config import DecodingConfig, FeatureConfig
    from pianotx.transcribe import Transcriber

    monkeypatch.setattr(transcribe, "WINDOW_FRAMES", 512)
    monkeypatch.setattr(transcribe, "BATCH_WINDOWS", 2)
    model = Transcriber(_FeatureEcho(), FeatureConfig(n_bins=96), DecodingConfig(threshold=0.6), "echo", context=64)
    phrase = synth(melody(4, seconds=30), seconds=30.0)
    peaks, counts = {}, {}
    for minutes in (2, 12):
        sf.write(tmp_path / f"{minutes}.wav", np.tile(phrase, minutes * 2), SR)
        model.file_notes(tmp_path / f"{minutes}.wav")  # the filter bases built before measuring
        tracemalloc.start()
        notes, _ = model.file_notes(tmp_path / f"{minutes}.wav")
        peaks[minutes] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        counts[minutes] = len(notes)
    assert counts == {2: 10716, 12: 64296}
    # Ten minutes more would hold 10 * 1,875 frames of features and rolls (20 MB) on the
    # whole-array path; here only the notes themselves grow (32 bytes each, twice while
    # they are sorted together at the end).
    assert peaks[12] - peaks[2] < 64 * (counts[12] - counts[2]) and peaks[12] < 12e6
