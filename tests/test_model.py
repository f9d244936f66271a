"""Tests for pianotx.model: the seed architecture, variants and optimisers."""

from __future__ import annotations

import ast
from pathlib import Path

import keras
import numpy as np
import pytest

from pianotx.config import ModelConfig, TrainConfig
from pianotx.model import build_model

PACKAGE = Path(__file__).resolve().parents[1] / "pianotx"


def lstm_params(n_in: int, units: int) -> int:
    """Kernel, recurrent kernel and bias of the four gates."""
    return 4 * (units * (n_in + units) + units)


def dense_params(n_in: int, n_out: int) -> int:
    return n_in * n_out + n_out


def test_seed_model_has_exactly_the_seed_parameter_count() -> None:
    model = build_model(ModelConfig(), TrainConfig())
    expected = lstm_params(84, 120) + dense_params(120, 120) + dense_params(120, 88)
    assert expected == 123_568
    assert model.count_params() == 123_568
    assert [layer.name for layer in model.layers] == ["cqt", "lstm_1", "hidden", "frames"]
    lstm = model.get_layer("lstm_1")
    assert (lstm.dropout, lstm.recurrent_dropout) == (0.2, 0.2)


def test_any_time_length_gives_frames_by_keys() -> None:
    model = build_model(ModelConfig(lstm_units=8, dense_units=8), TrainConfig())
    for shape in [(2, 37, 84), (1, 5, 84)]:
        x = np.random.default_rng(0).random(shape, dtype=np.float32)
        probs = model.predict_on_batch(x)
        assert probs.shape == shape[:2] + (88,)
        assert np.all((probs >= 0) & (probs <= 1))


@pytest.mark.parametrize(
    ("layers", "units", "bidirectional", "dense", "bins"),
    [(2, 16, False, 0, 84), (1, 12, True, 20, 84), (3, 10, True, 0, 48), (2, 6, False, 7, 88)],
)
def test_variant_parameter_counts(layers: int, units: int, bidirectional: bool, dense: int, bins: int) -> None:
    config = ModelConfig(lstm_layers=layers, lstm_units=units, bidirectional=bidirectional, dense_units=dense)
    model = build_model(config, TrainConfig(), n_bins=bins)
    directions = 2 if bidirectional else 1
    expected, width = 0, bins
    for _ in range(layers):
        expected += directions * lstm_params(width, units)
        width = directions * units
    if dense:
        expected += dense_params(width, dense)
        width = dense
    expected += dense_params(width, 88)
    assert model.count_params() == expected
    prefix = "bilstm" if bidirectional else "lstm"
    assert model.layers[1].name == f"{prefix}_1"
    assert model.output_shape == (None, None, 88)


def test_optimizer_choice() -> None:
    small = ModelConfig(lstm_units=4, dense_units=0)
    sgd = build_model(small, TrainConfig(optimizer="sgd", learning_rate=0.05, momentum=0.8))
    assert isinstance(sgd.optimizer, keras.optimizers.SGD)
    assert float(sgd.optimizer.learning_rate) == pytest.approx(0.05)
    assert float(sgd.optimizer.momentum) == pytest.approx(0.8)
    adam = build_model(small, TrainConfig(learning_rate=3.0e-4))
    assert isinstance(adam.optimizer, keras.optimizers.Adam)
    assert float(adam.optimizer.learning_rate) == pytest.approx(3.0e-4)
    assert isinstance(adam.loss, keras.losses.BinaryCrossentropy)


@pytest.mark.parametrize("module", ["model.py", "train.py"])
def test_model_and_train_do_not_import_tuner_or_tracking(module: str) -> None:
    tree = ast.parse((PACKAGE / module).read_text())
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert not imported & {"keras_tuner", "mlflow"}
