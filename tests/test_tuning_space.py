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
    objectives["velocity"] = "val_note_with_velocity_f1"
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


BOMB = (  # 400 bytes that expand to 9**6 = 531441 strings
    "tuner: {type: random}\n"
    "description:\n"
    "  a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n"
    "  b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
    "  c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\n"
    "  d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
    "  e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]\n"
    "  f: [*e, *e, *e, *e, *e, *e, *e, *e, *e]\n"
)
CHOICE = "tuner: {type: random}\nhyperparameters:\n  lstm_units: {type: choice, values: [%s]}\n"
RULE = "must be letters, digits, '.', '_' or '-', starting with a letter or digit, at most 100 characters"


@pytest.mark.parametrize(
    "text, message",
    [
        (BOMB, "line 3: YAML anchors (&a) are not allowed; write each value out"),
        ("tuner: {type: random}\ndescription: *a\n", "line 2: YAML aliases (*a) are not allowed; write each value out"),
        ("tuner: {<<: {type: random}}\n", "line 1: YAML merge keys (<<) are not allowed; write each key out"),
        ("tuner: {type: random}\ntuner: {type: bayesian}\n", "line 2: key 'tuner' is given twice (first on line 1)"),
        (
            "tuner: {type: random, max_trials: 2, max_trials: 9}\n",
            "line 1: key 'max_trials' is given twice (first on line 1)",
        ),
        (
            "tuner: {type: random}\nfixed:\n  epochs: 2\n  dropout: 0.1\n  epochs: 3\n",
            "line 5: key 'epochs' is given twice (first on line 3)",
        ),
        (
            "tuner: {type: random}\ndescription: " + "[" * 30 + "]" * 30 + "\n",
            "line 2: nested more than 20 levels deep",
        ),
        ("tuner: {type: random\n", "not valid YAML: line 2, column 1: expected ',' or '}', but got '<stream end>'"),
        ("tuner: {type: random}\x00\n", "not valid YAML: the control character U+0000 at offset 21 is not allowed"),
        (
            "tuner: [random]\n",
            "tuner must be a mapping (type: random | bayesian | hyperband, and its settings), got a list",
        ),
        (
            "tuner: random\n",
            "tuner must be a mapping (type: random | bayesian | hyperband, and its settings), got text",
        ),
        ("tuner: {type: [random]}\n", "tuner.type must be one of random, bayesian, hyperband"),
        (
            "tuner: {type: random}\nobjective: [val_f1]\n",
            "objective must be a mapping (name: an objective, direction: max | min; or just the name), got a list",
        ),
        (
            "tuner: {type: random}\nobjective: val_f2\n",
            "objective.name must be one of val_f1, val_precision, val_recall, val_loss, loss, val_note_f1, "
            "val_note_with_offset_f1, val_note_with_velocity_f1, val_frame_f1",
        ),
        (
            "tuner: {type: random}\nhyperparameters: [lstm_units]\n",
            "hyperparameters must be a mapping (setting names to entries), got a list",
        ),
        ("tuner: {type: random}\nfixed: 3\n", "fixed must be a mapping (setting names to values), got a number"),
        ("tuner: {type: random, max_trials: -3}\n", "tuner.max_trials must be a positive integer, got -3"),
        ("tuner: {type: random, max_trials: 0}\n", "tuner.max_trials must be a positive integer, got 0"),
        ("tuner: {type: random, max_trials: 2.5}\n", "tuner.max_trials must be an integer, got 2.5"),
        ("tuner: {type: random, max_trials: .inf}\n", "tuner.max_trials must be an integer, got inf"),
        ("tuner: {type: random, max_trials: true}\n", "tuner.max_trials must be an integer, got True"),
        ("tuner: {type: hyperband, max_epochs: 0}\n", "tuner.max_epochs must be a positive integer, got 0"),
        ("tuner: {type: hyperband, factor: 1}\n", "tuner.factor must be an integer of 2 or more, got 1"),
        (
            "tuner: {type: hyperband, hyperband_iterations: -1}\n",
            "tuner.hyperband_iterations must be a positive integer, got -1",
        ),
        (
            "tuner: {type: random, max_consecutive_failed_trials: 0}\n",
            "tuner.max_consecutive_failed_trials must be a positive integer, got 0",
        ),
        ("tuner: {type: random, seed: -1}\n", "tuner.seed must be 0 or more, got -1"),
        ("tuner: {type: random, seed: abc}\n", "tuner.seed must be an integer, got 'abc'"),
        (
            "tuner: {type: bayesian, num_initial_points: -2}\n",
            "tuner.num_initial_points must be 0 or more, got -2",
        ),
        ("tuner: {type: bayesian, alpha: .nan}\n", "tuner.alpha must be a number, got nan"),
        (
            "tuner: {type: random, 1: 2, zz: 3}\n",
            "tuner (random): unknown key(s) 1, zz; expected some of max_consecutive_failed_trials, max_trials, seed",
        ),
        (
            CHOICE % ", ".join(str(i) for i in range(1, 1002)),
            "hyperparameters: lstm_units.values has 1001 values; at most 1000",
        ),
        (
            "tuner: {type: random}\nhyperparameters:\n  optimizer: {type: choice, values: [adam, sgd]}\n"
            "  momentum: {type: float, min_value: 0.5, max_value: 0.9, parent_name: optimizer, "
            f"parent_values: [{', '.join(['sgd'] * 1001)}]}}\n",
            "hyperparameters: momentum.parent_values has 1001 values; at most 1000",
        ),
        (
            "tuner: {type: random}\nhyperparameters: {lstm_units: {type: int, min_value: .nan, max_value: 8}}\n",
            "hyperparameters: lstm_units.min_value must be a number, got nan (write 1.0e-4, not 1e-4)",
        ),
        (
            "tuner: {type: random}\nhyperparameters: {lstm_units: {type: [int]}}\n",
            "hyperparameters: lstm_units needs type: one of int, float, choice, boolean",
        ),
        ("name: ..\ntuner: {type: random}\n", f"name '..' {RULE}"),
        ("name: .\ntuner: {type: random}\n", f"name '.' {RULE}"),
        ("name: /tmp/x\ntuner: {type: random}\n", f"name '/tmp/x' {RULE}"),
        ("name: ../x\ntuner: {type: random}\n", f"name '../x' {RULE}"),
        ("name: a/b\ntuner: {type: random}\n", f"name 'a/b' {RULE}"),
        ("name: .hidden\ntuner: {type: random}\n", f"name '.hidden' {RULE}"),
        (f"name: {'a' * 101}\ntuner: {{type: random}}\n", f"name '{'a' * 101}' {RULE}"),
        ("name: 12\ntuner: {type: random}\n", "name must be text, got 12 (quote it)"),
    ],
)
def test_bad_space_files_are_one_exact_line(tmp_path, text, message):
    path = _spec(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_spec(path)
    assert str(info.value) == f"{path}: {message}"


def test_a_space_file_must_be_short_utf8_text(tmp_path):
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"tuner: {type: random}\n\x89PNG\xff\x00")
    with pytest.raises(ConfigError) as info:
        load_spec(binary)
    assert str(info.value) == f"{binary}: not UTF-8 text (byte 22 is 0x89); a search space is a YAML text file"
    huge = tmp_path / "huge.yaml"
    huge.write_bytes(b"tuner: {type: random}\n" + b"#" * (1 << 20))
    with pytest.raises(ConfigError) as info:
        load_spec(huge)
    assert str(info.value) == f"{huge}: more than 1048576 bytes; a search space is a short YAML text file"
    most = tmp_path / "most.yaml"
    most.write_bytes(b"tuner: {type: random}\n" + b"#" * ((1 << 20) - 23) + b"\n")
    assert load_spec(most).tuner == "random"  # exactly 1 MiB: read


def test_a_file_name_that_cannot_name_the_search_needs_a_name(tmp_path):
    path = tmp_path / "my space.yaml"
    path.write_text("tuner: {type: random}\n")
    with pytest.raises(ConfigError) as info:
        load_spec(path)
    assert str(info.value) == (
        f"{path}: the file's name 'my space' cannot name the search (letters, digits, '.', '_' or '-', starting "
        "with a letter or digit, at most 100 characters); give it a name: in the file"
    )
    path.write_text("name: my_space-2.b\ntuner: {type: random}\n")
    assert load_spec(path).name == "my_space-2.b"
    other = tmp_path / "v1.2_space-b.yaml"
    other.write_text("name:\ntuner: {type: random}\n")
    assert load_spec(other).name == "v1.2_space-b"


@pytest.mark.parametrize(
    "objective, name, direction",
    [
        ("val_f1", "val_f1", "max"),
        ("val_note_f1", "val_note_f1", "max"),
        ("val_loss", "val_loss", "min"),
        ("loss", "loss", "min"),
        ("{name: val_loss}", "val_loss", "min"),
        ("{name: val_loss, direction: max}", "val_loss", "max"),
        ("{direction: min}", "val_f1", "min"),
    ],
)
def test_an_objective_by_name_alone_takes_its_natural_direction(tmp_path, objective, name, direction):
    spec = load_spec(_spec(tmp_path, f"tuner: {{type: random}}\nobjective: {objective}\n"))
    assert (spec.objective, spec.direction) == (name, direction)


def test_integer_tuner_settings_are_integers(tmp_path):
    spec = load_spec(_spec(tmp_path, "tuner: {type: hyperband, max_epochs: 6.0, factor: 2, seed: 0}\n"))
    assert spec.tuner_settings == {"max_epochs": 6, "factor": 2, "seed": 0}
    assert type(spec.tuner_settings["max_epochs"]) is int
    choice = load_spec(_spec(tmp_path, CHOICE % ", ".join(str(i) for i in range(1, 1001))))
    assert choice.hyperparameters["lstm_units"][0]["values"] == list(range(1, 1001))
