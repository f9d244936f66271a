"""Champion and challenger through the real MLflow registry, and fine-tuning searches
that start from an existing model (training tests are slow)."""

from pathlib import Path

import numpy as np
import pytest
from conftest import melody, write_pair
from typer.testing import CliRunner

from pianotx.build import build_dataset
from pianotx.config import (
    BuildConfig,
    ChunkConfig,
    ConfigError,
    DecodingConfig,
    FeatureConfig,
    ModelConfig,
    TrainConfig,
    model_metadata,
)
from pianotx.locations import Store
from pianotx.model import VELOCITY_LAYERS
from pianotx.tracking import MODEL_URI_TAG, SearchTracker, connect, register
from pianotx.transcribe import BUNDLED_MODEL, load_local
from pianotx.tuning.champion import comparison_metric

runner = CliRunner()
BUNDLED_FEATURES = FeatureConfig(bins_per_octave=36, n_bins=252)

SCRATCH = """
name: {name}
objective: {{name: {objective}, direction: max}}
tuner: {{type: random, max_trials: 1, seed: 1}}
note_eval_pieces: 2
fixed: {{epochs: 2, lstm_units: 8, recurrent_dropout: 0.0, dense_units: 8, batch_size: 4}}
"""

FINE_TUNE = """
name: {name}
objective: {{name: val_note_f1, direction: max}}
tuner: {{type: random, max_trials: 1, seed: 1}}
note_eval_pieces: 2
init_from: bundled
fixed: {{epochs: 1, steps_per_epoch: 2, batch_size: 2, learning_rate: 1.0e-4, train_layers: heads}}
"""


def _dataset(root: Path, features: FeatureConfig) -> Path:
    for i in range(10):
        write_pair(root / "pairs", f"p{i}", melody(i))
    config = BuildConfig(features=features, chunks=ChunkConfig(chunk_frames=64))
    build_dataset(root / "pairs", root / "ds", config, workers=1, progress=False, log=lambda _: None)
    return root / "ds"


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory) -> Path:
    return _dataset(tmp_path_factory.mktemp("champion"), FeatureConfig())


@pytest.fixture(scope="module")
def bundled_features_dataset(tmp_path_factory) -> Path:
    """A tiny dataset with the bundled model's features (36 CQT bins per octave)."""
    return _dataset(tmp_path_factory.mktemp("finetune"), BUNDLED_FEATURES)


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def _store(tmp_path: Path) -> Store:
    (tmp_path / "mlruns").mkdir(exist_ok=True)
    return Store(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}", (tmp_path / "mlruns" / "artifacts").as_uri())


def _space(tmp_path: Path, name: str, text: str, **values: str) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(text.format(name=name, **values))
    return path


def _register_silent(store: Store) -> None:
    """Register a model that never plays a note (every output sigmoid(-8)) as the champion."""
    import keras

    inputs = keras.Input((None, 84), name="cqt")
    dense = keras.layers.Dense(
        88, activation="sigmoid", name="frames", bias_initializer=keras.initializers.Constant(-8)
    )
    model = keras.Model(inputs, dense(inputs))
    tracker = SearchTracker(store, "silent")
    tracker.start_search({}, {}, [])
    run_id = tracker.start_trial("0", {})
    x = np.zeros((1, 3, 84), np.float32)
    meta = model_metadata(FeatureConfig(), DecodingConfig(), 64)
    tracker.log_model(run_id, model, (x, model.predict_on_batch(x)), meta)
    register(store, tracker.client.get_run(run_id).data.tags[MODEL_URI_TAG], "piano")


def test_each_objective_is_decided_by_the_evaluation_score_it_stands_for():
    assert comparison_metric("val_note_f1") == "note_f1"
    assert comparison_metric("val_note_with_offset_f1") == "note_with_offset_f1"
    assert comparison_metric("val_frame_f1") == "frame_f1"
    assert comparison_metric("val_f1") == "frame_f1" and comparison_metric("val_recall") == "frame_recall"
    assert comparison_metric("val_loss") == "note_f1" and comparison_metric("loss") == "note_f1"


def test_an_unknown_promotion_policy_is_one_line_before_anything_runs(tmp_path):
    space = _space(tmp_path, "policy", SCRATCH, objective="val_f1")
    result = runner.invoke(app(), ["search", str(space), "--data", str(tmp_path), "--promote", "maybe"])
    assert result.exit_code == 1
    assert result.output == "error: --promote must be one of if-better, always, never, got 'maybe'\n"
    assert not (tmp_path / "mlruns").exists()


def app():
    from pianotx.cli import app as cli_app

    return cli_app


@pytest.mark.slow
def test_a_better_challenger_is_promoted_and_transcribe_then_uses_it(bundled_features_dataset, tmp_path):
    from pianotx.transcribe import load_transcriber
    from pianotx.tuning.command import SearchOptions, search_command

    store = _store(tmp_path)
    _register_silent(store)  # version 1: a champion that plays no note
    space = _space(tmp_path, "better", FINE_TUNE)  # the challenger: the bundled model, its heads fine-tuned
    said: list[str] = []
    search_command(SearchOptions(space, bundled_features_dataset, store.tracking_uri), said.append)
    assert said[1] == "registered piano version 2 as models:/piano@challenger"
    assert said[2].startswith("promoted piano version 2 to champion: validation note F1 ")
    assert " against version 1's 0.0000; test " in said[2]
    assert said[3] == "pianotx transcribe uses models:/piano/Production: version 2"
    client = connect(store)
    first, second = sorted(client.search_model_versions("name = 'piano'"), key=lambda v: int(v.version))
    assert (first.current_stage, second.current_stage) == ("Archived", "Production")
    for alias in ("champion", "production", "challenger"):
        assert str(client.get_model_version_by_alias("piano", alias).version) == "2"
    (comparison,) = client.search_runs([client.get_experiment_by_name("evaluation").experiment_id])
    assert comparison.data.tags["pianotx.decision"] == "promoted"
    assert comparison.data.metrics["champion_validation_note_f1"] == 0.0
    assert comparison.data.metrics["challenger_validation_note_f1"] > 0.2
    transcriber = load_transcriber(None, store.tracking_uri)  # the default model is now the challenger
    assert transcriber.source == "models:/piano/Production"
    assert transcriber.model.count_params() > 10_000  # not the one-layer champion it replaced


@pytest.mark.slow
def test_never_keeps_the_champion_even_when_the_challenger_is_better(bundled_features_dataset, tmp_path):
    from pianotx.tuning.search import run_search

    store = _store(tmp_path)
    _register_silent(store)
    space = _space(tmp_path, "never", FINE_TUNE)
    result = run_search(space, bundled_features_dataset, store, "piano", verbose=0, promote="never")
    assert (result.outcome.challenger, result.outcome.champion, result.outcome.promoted) == (2, 1, False)
    assert result.outcome.summary.startswith(
        "kept piano version 1 as champion (--promote never): validation note F1 0.0000"
    )
    client = connect(store)
    assert str(client.get_model_version_by_alias("piano", "champion").version) == "1"
    assert str(client.get_model_version_by_alias("piano", "challenger").version) == "2"
    assert client.get_model_version("piano", "1").current_stage == "Production"


@pytest.mark.slow
def test_a_fine_tuning_search_starts_from_the_bundled_model_and_records_its_lineage(bundled_features_dataset, tmp_path):
    from pianotx.tracking import load_model
    from pianotx.tuning.search import run_search

    store = _store(tmp_path)
    space = _space(tmp_path, "tune", FINE_TUNE)
    result = run_search(space, bundled_features_dataset, store, None, verbose=0)
    assert result.trials == 1 and result.failed == 0
    run = connect(store).get_run(result.best_run_id)
    params = run.data.params
    assert params["init_from"] == "bundled" and params["init_model_uri"] == str(BUNDLED_MODEL)
    assert run.data.tags["pianotx.init_model"] == str(BUNDLED_MODEL)
    # the bundled architecture, whatever the defaults are
    assert (params["lstm_units"], params["onset_lstm_units"], params["bidirectional"]) == ("160", "160", "True")
    tuned, meta = load_model(store, run.data.tags[MODEL_URI_TAG])
    assert meta["init_from"] == str(BUNDLED_MODEL) and meta["model"]["lstm_units"] == 160
    bundled = load_local(BUNDLED_MODEL).model
    for layer in bundled.layers:  # only the output layers trained: the LSTMs are the bundled ones exactly
        if not layer.weights:
            continue
        before, after = layer.get_weights(), tuned.get_layer(layer.name).get_weights()
        same = all(np.array_equal(a, b) for a, b in zip(before, after, strict=True))
        assert same == (layer.name not in ("hidden", "frames", "onsets", *VELOCITY_LAYERS)), layer.name


def _without_velocity_head(folder: Path) -> Path:
    """The bundled model's frame and onset layers, exported without any velocity head."""
    import dataclasses

    from pianotx.model import build_model
    from pianotx.transcribe import export

    bundled = load_local(BUNDLED_MODEL)
    architecture = {**bundled.architecture, "velocity_head": False}
    config = ModelConfig(**architecture)
    net = build_model(config, TrainConfig(), 252)
    for layer in net.layers:
        if layer.weights:
            layer.set_weights(bundled.model.get_layer(layer.name).get_weights())
    plain = dataclasses.replace(bundled, model=net, architecture=dataclasses.asdict(config))
    return export(plain, folder, "plain")


@pytest.mark.slow
def test_a_fine_tuning_search_adds_a_velocity_head_and_leaves_the_notes_as_they_were(
    bundled_features_dataset, tmp_path
):
    from pianotx.tracking import load_model
    from pianotx.tuning.search import run_search

    store = _store(tmp_path)
    initial = _without_velocity_head(tmp_path / "initial")
    text = FINE_TUNE.replace("init_from: bundled", f"init_from: {initial}").replace(
        "train_layers: heads", "train_layers: velocity, velocity_head: true, velocity_units: 16"
    )
    result = run_search(_space(tmp_path, "vel", text), bundled_features_dataset, store, None, verbose=0)
    assert result.trials == 1 and result.failed == 0
    run = connect(store).get_run(result.best_run_id)
    assert run.data.params["velocity_head"] == "True" and run.data.params["lstm_units"] == "160"
    assert "velocities_loss" in run.data.metrics and "val_note_with_velocity_f1" in run.data.metrics
    tuned, meta = load_model(store, run.data.tags[MODEL_URI_TAG])
    assert meta["model"]["velocity_head"] is True and meta["model"]["velocity_units"] == 16
    plain = load_local(initial).model
    for layer in plain.layers:  # every layer the initial model has is exactly its own
        before, after = layer.get_weights(), tuned.get_layer(layer.name).get_weights()
        assert all(np.array_equal(a, b) for a, b in zip(before, after, strict=True)), layer.name
    x = np.random.default_rng(0).normal(size=(1, 40, 252)).astype(np.float32)
    old, new = plain.predict_on_batch(x), tuned.predict_on_batch(x)
    np.testing.assert_array_equal(new["frames"], old["frames"])
    np.testing.assert_array_equal(new["onsets"], old["onsets"])
    assert new["velocities"].shape == (1, 40, 88) and "velocities" not in old


@pytest.mark.slow
def test_fine_tuning_from_the_champion_of_a_fresh_store_registers_the_bundled_model_first(
    bundled_features_dataset, tmp_path
):
    from pianotx.tuning.search import run_search

    store = _store(tmp_path)
    space = _space(tmp_path, "champ", FINE_TUNE.replace("init_from: bundled", "init_from: champion"))
    result = run_search(space, bundled_features_dataset, store, "piano", verbose=0, promote="never")
    run = connect(store).get_run(result.best_run_id)
    assert run.data.params["init_model_uri"] == "models:/piano/1"
    version = connect(store).get_model_version("piano", "1")
    assert "pianotx.bundled" in version.tags and version.current_stage == "Production"
    assert result.outcome.challenger == 2 and result.outcome.champion == 1


def test_a_space_that_changes_the_initial_architecture_is_refused_before_anything_trains(
    bundled_features_dataset, tmp_path
):
    from pianotx.tuning.search import run_search

    store = _store(tmp_path)
    space = _space(tmp_path, "wide", FINE_TUNE.replace("epochs: 1,", "epochs: 1, lstm_units: 64,"))
    with pytest.raises(ConfigError) as error:
        run_search(space, bundled_features_dataset, store, None, verbose=0)
    assert str(error.value) == (
        f"{space}: fixed lstm_units 64 differs from the initial model's 160 "
        f"(init_from bundled: {BUNDLED_MODEL}); fine-tuning keeps the architecture"
    )
    searched = FINE_TUNE + "hyperparameters: {{lstm_layers: {{type: choice, values: [1, 2]}}}}\n"
    space = _space(tmp_path, "deep", searched)
    with pytest.raises(ConfigError, match=r"deep.yaml: lstm_layers is searched, but a trial starting from bundled"):
        run_search(space, bundled_features_dataset, store, None, verbose=0)
    client = connect(store)
    assert not client.search_runs([e.experiment_id for e in client.search_experiments()])  # no run began


def test_a_dataset_with_other_features_than_the_initial_model_is_refused(tiny_dataset, tmp_path):
    from pianotx.tuning.search import run_search

    space = _space(tmp_path, "bins", FINE_TUNE)
    with pytest.raises(ConfigError) as error:
        run_search(space, tiny_dataset, _store(tmp_path), None, verbose=0)
    assert str(error.value) == (
        f"{tiny_dataset}: built with 84 CQT bins at 12 per octave, hop 512, 16000 Hz, but the initial model "
        f"{BUNDLED_MODEL} was trained on 252 CQT bins at 36 per octave, hop 512, 16000 Hz; build the dataset "
        "with its features (pianotx data build ... --bins-per-octave 36 --n-bins 252)"
    )


def test_fine_tuning_trials_may_search_the_architecture_of_trials_from_scratch(bundled_features_dataset, tmp_path):
    from pianotx.tuning.initial import check_initial, resolve_initial
    from pianotx.tuning.space import load_spec

    text = (
        "name: mixed\ntuner: {type: random, max_trials: 2}\n"
        "hyperparameters:\n"
        "  init_from: {type: choice, values: [none, bundled]}\n"
        "  lstm_units: {type: choice, values: [8, 16], parent_name: init_from, parent_values: [none]}\n"
        "  dropout: {type: choice, values: [0.0, 0.3]}\n"
        "  train_layers: {type: choice, values: [all, frames], parent_name: init_from, parent_values: [bundled]}\n"
    )
    path = tmp_path / "mixed.yaml"
    path.write_text(text)
    spec = load_spec(path)
    initial = resolve_initial("bundled", tmp_path / "kt", _store(tmp_path), None)
    check_initial(str(spec.path), initial, spec.fixed, spec.hyperparameters, BUNDLED_FEATURES, "ds")  # no error
    trial = ModelConfig(lstm_units=8, dropout=0.3)  # what a trial's values parse to
    tuned = initial.architecture(trial, {"dropout": 0.3, "lstm_units": 8})
    assert (tuned.dropout, tuned.lstm_units) == (0.3, 160)  # dropout may change, the architecture not
    assert initial.architecture(trial, {}).dropout == 0.1  # dropout not searched: the model's own
    again = resolve_initial("bundled", tmp_path / "kt", _store(tmp_path), None)  # read back from the search folder
    assert all(np.array_equal(a, b) for a, b in zip(again.weights, initial.weights, strict=True))
