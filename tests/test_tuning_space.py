from pathlib import Path

import pytest

from pianotx.config import ConfigError
from pianotx.tuning.space import configs_from_values, load_spec, to_hyperparameters

ROOT = Path(__file__).resolve().parent.parent


def _spec(tmp_path, text):
    path = tmp_path / "space.yaml"
    path.write_text(text)
    return path


def test_shipped_spaces_parse():
    objectives = {"seed": "val_f1", "quick": "val_note_f1", "full": "val_note_f1", "bundled": "val_note_f1"}
    for name, objective in objectives.items():
        spec = load_spec(ROOT / "search_spaces" / f"{name}.yaml")
        assert spec.name == name and spec.objective == objective and spec.direction == "max"
        hp = to_hyperparameters(spec)
        assert {h.name for h in hp.space} == set(spec.hyperparameters) | set(spec.fixed)
        assert {k: hp.values[k] for k in spec.fixed} == spec.fixed


def test_seed_space_is_the_seed_model_in_one_trial():
    spec = load_spec(ROOT / "search_spaces" / "seed.yaml")
    assert spec.tuner_settings["max_trials"] == 1 and spec.hyperparameters == {}
    model, train = configs_from_values(spec.fixed)
    assert (model.lstm_layers, model.lstm_units, model.dropout, model.recurrent_dropout, model.dense_units) == (
        1,
        120,
        0.2,
        0.2,
        120,
    )
    assert model.bidirectional is False and train.optimizer == "adam"


def test_hyperparameters_become_keras_tuner_entries(tmp_path):
    spec = load_spec(
        _spec(
            tmp_path,
            """
tuner: {type: bayesian, max_trials: 3, num_initial_points: 2}
hyperparameters:
  lstm_units: {type: int, min_value: 32, max_value: 96, step: 32}
  learning_rate: {type: float, min_value: 1.0e-4, max_value: 1.0e-2, sampling: log}
  optimizer: {type: choice, values: [adam, sgd]}
  bidirectional: {type: boolean}
fixed: {epochs: 3}
""",
        )
    )
    hp = to_hyperparameters(spec)
    assert {h.name: type(h).__name__ for h in hp.space} == {
        "epochs": "Fixed",
        "lstm_units": "Int",
        "learning_rate": "Float",
        "optimizer": "Choice",
        "bidirectional": "Boolean",
    }
    assert hp.values["lstm_units"] == 32 and hp.values["epochs"] == 3


@pytest.mark.parametrize(
    "text, message",
    [
        ("tuner: {type: random}\nsampler: x\n", r"unknown key\(s\) sampler"),
        ("tuner: {type: grid}\n", "tuner.type must be one of random, bayesian, hyperband"),
        ("tuner: {type: random, max_epochs: 3}\n", r"tuner \(random\): unknown key\(s\) max_epochs"),
        (
            "tuner: {type: random}\nhyperparameters: {units: {type: int, min_value: 1, max_value: 2}}\n",
            "'units' is not a model or training setting",
        ),
        (
            "tuner: {type: random}\nhyperparameters: {lstm_units: {type: int, min_value: 1}}\n",
            r"missing key\(s\) max_value",
        ),
        (
            "tuner: {type: random}\nhyperparameters: {learning_rate: {type: float, min_value: 1e-4, max_value: 1.0}}\n",
            "write 1.0e-4, not 1e-4",
        ),
        (
            "tuner: {type: random}\nhyperparameters: {dropout: {type: int, min_value: 1, max_value: 2, stepp: 1}}\n",
            r"unknown key\(s\) stepp",
        ),
        ("tuner: {type: hyperband, max_epochs: 9}\nfixed: {epochs: 3}\n", "epoch budget is tuner.max_epochs"),
        ("tuner: {type: random}\nfixed: {optimizer: rmsprop}\n", "optimizer must be 'adam' or 'sgd'"),
        (
            "tuner: {type: random}\nfixed: {lstm_units: 8}\nhyperparameters: {lstm_units: {type: boolean}}\n",
            "both searched and fixed",
        ),
        ("- just\n- a list\n", "a search space is a mapping"),
        ("tuner: {type: random}\nobjective: {name: val_f2}\n", "objective.name must be one of val_f1"),
        ("tuner: {type: random, max_trials: ten}\n", "tuner.max_trials must be an integer, got 'ten'"),
    ],
)
def test_malformed_spaces_are_clear_errors(tmp_path, text, message):
    path = _spec(tmp_path, text)
    with pytest.raises(ConfigError, match=message) as info:
        load_spec(path)
    assert str(info.value).startswith(str(path))


def test_conditional_hyperparameter_is_active_only_under_its_parent(tmp_path):
    import keras_tuner as kt

    spec = load_spec(
        _spec(
            tmp_path,
            "tuner: {type: random, max_trials: 30, seed: 0}\n"
            "hyperparameters:\n"
            "  optimizer: {type: choice, values: [adam, sgd]}\n"
            "  momentum: {type: float, min_value: 0.5, max_value: 0.95,"
            " parent_name: optimizer, parent_values: [sgd]}\n",
        )
    )
    hp = to_hyperparameters(spec)
    oracle = kt.oracles.RandomSearchOracle(hyperparameters=hp, max_trials=30, seed=1)
    draws = [oracle._random_values() for _ in range(30)]
    assert {d["optimizer"] for d in draws} == {"adam", "sgd"}
    assert all(("momentum" in d) == (d["optimizer"] == "sgd") for d in draws)


@pytest.mark.parametrize(
    "entry, message",
    [
        (
            "{type: float, min_value: 0.5, max_value: 0.9, parent_name: optimizer}",
            "needs parent_name and parent_values",
        ),
        ("{type: float, min_value: 0.5, max_value: 0.9, parent_name: nope, parent_values: [x]}", "must name a choice"),
        (
            "{type: float, min_value: 0.5, max_value: 0.9, parent_name: optimizer, parent_values: [rms]}",
            "must be among",
        ),
    ],
)
def test_bad_conditions_are_refused(tmp_path, entry, message):
    text = (
        "tuner: {type: random, max_trials: 3}\nhyperparameters:\n"
        f"  optimizer: {{type: choice, values: [adam, sgd]}}\n  momentum: {entry}\n"
    )
    with pytest.raises(ConfigError, match=message):
        load_spec(_spec(tmp_path, text))


def test_quick_space_searches_what_the_design_names():
    spec = load_spec(ROOT / "search_spaces" / "quick.yaml")
    assert {"lstm_units", "lstm_layers", "dropout", "learning_rate"} <= set(spec.hyperparameters)
    assert spec.tuner == "hyperband" and spec.tuner_settings["max_epochs"] > 1  # epochs: Hyperband's budget
    assert all(spec.hyperparameters[k][0]["type"] == "choice" for k in ("lstm_units", "lstm_layers", "dropout"))
    assert spec.fixed["optimizer"] == "adam"  # SGD did not learn within this budget
    full = load_spec(ROOT / "search_spaces" / "full.yaml")
    assert [e["parent_values"] for e in full.hyperparameters["learning_rate"]] == [["adam"], ["sgd"]]
    assert full.hyperparameters["momentum"][0]["parent_values"] == ["sgd"]


PER_OPTIMIZER = """tuner: {type: random, max_trials: 40, seed: 0}
hyperparameters:
  optimizer: {type: choice, values: [adam, sgd]}
  learning_rate:
    - {type: float, min_value: 1.0e-3, max_value: 6.0e-3, sampling: log, parent_name: optimizer, parent_values: [adam]}
    - {type: float, min_value: 3.0e-2, max_value: 0.3, sampling: log, parent_name: optimizer, parent_values: [sgd]}
"""


def test_one_name_can_have_a_range_per_condition(tmp_path):
    import keras_tuner as kt

    spec = load_spec(_spec(tmp_path, PER_OPTIMIZER))
    assert [e["parent_values"] for e in spec.hyperparameters["learning_rate"]] == [["adam"], ["sgd"]]
    hp = to_hyperparameters(spec)
    assert [h.name for h in hp.space] == ["optimizer", "learning_rate", "learning_rate"]
    for oracle_type in (kt.oracles.RandomSearchOracle, kt.oracles.BayesianOptimizationOracle):
        oracle = oracle_type(hyperparameters=hp, max_trials=40, seed=1)
        draws = [oracle._random_values() for _ in range(40)]
        adam = [d["learning_rate"] for d in draws if d["optimizer"] == "adam"]
        sgd = [d["learning_rate"] for d in draws if d["optimizer"] == "sgd"]
        assert adam and sgd and len(adam) + len(sgd) == 40
        assert all(1.0e-3 <= v <= 6.0e-3 for v in adam) and all(3.0e-2 <= v <= 0.3 for v in sgd)


def test_a_trial_keeps_the_value_of_its_active_entry_whichever_entry_comes_first(tmp_path):
    """Keras Tuner's own ensure_active_values dropped the value of an active entry declared
    before an inactive one of the same name: Adam's (and scratch trials') learning rate
    then fell back to the default. pianotx keeps it."""
    import keras_tuner as kt

    from pianotx.tuning.tuner import keep_values_of_conditional_names

    keep_values_of_conditional_names()
    for text, parent, low in ((PER_OPTIMIZER, "optimizer", {"adam": 1.0e-3, "sgd": 3.0e-2}),):
        hp = to_hyperparameters(load_spec(_spec(tmp_path, text)))
        for oracle_type in (kt.oracles.RandomSearchOracle, kt.oracles.HyperbandOracle):
            settings = {"max_trials": 12} if oracle_type is kt.oracles.RandomSearchOracle else {"max_epochs": 50}
            oracle = oracle_type(objective=kt.Objective("x", "max"), hyperparameters=hp, seed=1, **settings)
            oracle._set_project_dir(str(tmp_path / "kt"), oracle_type.__name__)
            values = [oracle.create_trial(f"t{i}").hyperparameters.values for i in range(12)]
            assert {v[parent] for v in values} == set(low)
            for v in values:
                assert low[v[parent]] <= v["learning_rate"] <= 10 * low[v[parent]], v
    quick = to_hyperparameters(load_spec(ROOT / "search_spaces" / "quick.yaml"))
    oracle = kt.oracles.HyperbandOracle(objective=kt.Objective("x", "max"), hyperparameters=quick, max_epochs=6, seed=1)
    oracle._set_project_dir(str(tmp_path / "kt"), "quick")
    values = [oracle.create_trial(f"q{i}").hyperparameters.values for i in range(5)]
    assert {v["init_from"] for v in values} == {"none", "champion"}
    for v in values:  # from scratch 1e-3..6e-3; fine-tuning a tenth of that
        assert (1.0e-3 <= v["learning_rate"] <= 6.0e-3) if v["init_from"] == "none" else (v["learning_rate"] <= 6.0e-4)
        assert ("lstm_units" in v) == (v["init_from"] == "none") and ("train_layers" in v) == (v["init_from"] != "none")


@pytest.mark.parametrize(
    "second, message",
    [
        ("{type: float, min_value: 0.03, max_value: 0.3}", "each of its entries needs parent_name"),
        (
            "{type: float, min_value: 0.03, max_value: 0.3, parent_name: optimizer, parent_values: [adam]}",
            "overlap: a parent value may select only one",
        ),
        (
            "{type: float, min_value: 0.03, max_value: 0.3, parent_name: bidirectional, parent_values: [true]}",
            "must all depend on one parent",
        ),
    ],
)
def test_bad_per_condition_ranges_are_refused(tmp_path, second, message):
    text = (
        "tuner: {type: random, max_trials: 3}\nhyperparameters:\n"
        "  optimizer: {type: choice, values: [adam, sgd]}\n  bidirectional: {type: boolean}\n"
        "  learning_rate:\n"
        "    - {type: float, min_value: 1.0e-3, max_value: 6.0e-3, parent_name: optimizer, parent_values: [adam]}\n"
        f"    - {second}\n"
    )
    with pytest.raises(ConfigError, match=message):
        load_spec(_spec(tmp_path, text))


def test_every_end_of_a_range_is_checked_against_the_config(tmp_path):
    text = "tuner: {type: random, max_trials: 3}\nhyperparameters:\n"
    text += "  dropout: {type: float, min_value: 0.0, max_value: 1.5}\n"
    with pytest.raises(ConfigError, match=r"dropout and recurrent_dropout must be in \[0, 1\)"):
        load_spec(_spec(tmp_path, text))
