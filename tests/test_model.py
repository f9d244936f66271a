"""Tests for pianotx.model: the seed architecture, conv front-end, onset head, optimisers."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest

from pianotx.config import ModelConfig, TrainConfig
from pianotx.model import (
    StopGradient,
    WeightedBinaryCrossentropy,
    build_model,
    conv_plan,
    has_onset_head,
    output_heads,
)


def lstm_params(n_in: int, units: int) -> int:
    """Kernel, recurrent kernel and bias of the four gates."""
    return 4 * (units * (n_in + units) + units)


def dense_params(n_in: int, n_out: int) -> int:
    return n_in * n_out + n_out


def conv_params(n_bins: int, layers: int, filters: int, dense: int, pools: int = 2) -> tuple[int, int, int]:
    """Parameters of the conv front-end (3x3 kernels without bias, batch norm's four
    vectors, the projection), the frequency bins left after pooling, and its output width."""
    total, channels, width = 0, 1, n_bins
    for i in range(1, layers + 1):
        out = filters if i <= 2 else 2 * filters
        total += 9 * channels * out + 4 * out
        channels = out
        if i > layers - pools:
            width //= 2
    if not dense:
        return total, width, width * channels
    return total + dense_params(width * channels, dense), width, dense


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


@pytest.mark.parametrize(
    ("layers", "filters", "pools", "dense", "bins", "width"),
    [
        (1, 4, 2, 24, 84, 42),
        (2, 4, 2, 24, 84, 21),
        (3, 6, 2, 24, 84, 21),
        (4, 3, 2, 24, 84, 21),
        (3, 4, 2, 24, 252, 63),
        (3, 4, 0, 24, 84, 84),
        (3, 4, 3, 0, 252, 31),
        (2, 5, 1, 0, 84, 42),
    ],
)
def test_conv_front_end_parameters_and_shapes(
    layers: int, filters: int, pools: int, dense: int, bins: int, width: int
) -> None:
    config = ModelConfig(
        conv_layers=layers, conv_filters=filters, conv_pools=pools, conv_dense_units=dense, lstm_units=8, dense_units=0
    )
    model = build_model(config, TrainConfig(), n_bins=bins)
    front, left, out = conv_params(bins, layers, filters, dense, pools)
    assert left == width
    assert model.count_params() == front + lstm_params(out, 8) + dense_params(8, 88)
    channels = filters if layers <= 2 else 2 * filters
    assert model.get_layer("conv_flatten").output.shape[1:] == (None, width * channels)
    assert model.get_layer("conv_1").kernel_size == (3, 3)
    assert ("conv_dense" in [layer.name for layer in model.layers]) == bool(dense)
    x = np.random.default_rng(0).random((2, 13, bins), dtype=np.float32)
    assert model.predict_on_batch(x).shape == (2, 13, 88)  # time is never pooled


def test_conv_plan_and_too_many_pools() -> None:
    assert conv_plan(ModelConfig(conv_layers=3, conv_filters=48), 84) == [(48, False), (48, True), (96, True)]
    assert conv_plan(ModelConfig(conv_layers=2, conv_filters=8, conv_pools=5), 84) == [(8, True), (8, True)]
    assert conv_plan(ModelConfig(conv_layers=2, conv_filters=8, conv_pools=0), 84) == [(8, False), (8, False)]
    assert conv_plan(ModelConfig(), 84) == []
    with pytest.raises(ValueError, match="below one"):
        build_model(ModelConfig(conv_layers=4, conv_pools=3), TrainConfig(), n_bins=6)


@pytest.mark.parametrize(("conv", "bins"), [(0, 84), (2, 84), (0, 252), (3, 252)])
def test_onset_head_outputs_named_dict(conv: int, bins: int) -> None:
    config = ModelConfig(
        conv_layers=conv, conv_filters=4, conv_dense_units=16, lstm_units=8, dense_units=6, onset_head=True
    )
    model = build_model(config, TrainConfig(), n_bins=bins)
    assert has_onset_head(model)
    assert sorted(model.output_names) == ["frames", "onsets"]
    x = np.random.default_rng(1).random((3, 11, bins), dtype=np.float32)
    out = model.predict_on_batch(x)
    assert isinstance(out, dict) and sorted(out) == ["frames", "onsets"]
    for probs in out.values():
        assert probs.shape == (3, 11, 88) and np.all((probs >= 0) & (probs <= 1))
    assert isinstance(model.get_layer("onsets_stopped"), StopGradient)
    assert output_heads(out).keys() == {"frames", "onsets"}


def test_onset_head_parameter_count() -> None:
    config = ModelConfig(
        lstm_layers=2, lstm_units=10, dense_units=7, bidirectional=True, onset_head=True, onset_lstm_units=6
    )
    model = build_model(config, TrainConfig(), n_bins=84)
    onset = 2 * lstm_params(84, 6) + 2 * lstm_params(12, 6) + dense_params(12, 88)
    frame = 2 * lstm_params(84 + 88, 10) + 2 * lstm_params(20, 10) + dense_params(20, 7) + dense_params(7, 88)
    assert model.count_params() == onset + frame
    assert model.get_layer("onset_bilstm_2").forward_layer.units == 6
    assert not has_onset_head(build_model(ModelConfig(lstm_units=4), TrainConfig()))


def test_frame_only_output_is_unchanged_and_heads_are_uniform() -> None:
    model = build_model(ModelConfig(lstm_units=4, dense_units=0, conv_layers=2, conv_filters=2), TrainConfig())
    out = model.predict_on_batch(np.zeros((1, 5, 84), np.float32))
    assert isinstance(out, np.ndarray) and model.output_names == ["frames"]
    assert output_heads(out)["frames"].shape == (1, 5, 88) and output_heads(out).keys() == {"frames"}
    with pytest.raises(ValueError, match="not"):
        output_heads({"notes": out})


def test_frame_loss_gives_the_onset_head_no_gradient() -> None:
    import tensorflow as tf

    config = ModelConfig(
        lstm_units=6, dense_units=5, dropout=0.0, recurrent_dropout=0.0, onset_head=True, conv_layers=2, conv_filters=2
    )
    model = build_model(config, TrainConfig(), n_bins=84)
    x = tf.constant(np.random.default_rng(2).random((2, 7, 84), dtype=np.float32))
    target = tf.constant((np.random.default_rng(3).random((2, 7, 88)) > 0.5).astype(np.float32))
    onset_vars = model.get_layer("onset_lstm_1").trainable_weights + model.get_layer("onsets").trainable_weights
    frame_vars = model.get_layer("lstm_1").trainable_weights + model.get_layer("frames").trainable_weights
    shared = model.get_layer("conv_dense").trainable_weights
    bce = keras.losses.BinaryCrossentropy()
    for head, expect_onset_grad in (("frames", False), ("onsets", True)):
        with tf.GradientTape() as tape:
            loss = bce(target, model(x, training=True)[head])
        grads = tape.gradient(loss, onset_vars + frame_vars + shared)
        n = len(onset_vars)
        onset_grads, frame_grads, shared_grads = grads[:n], grads[n : n + len(frame_vars)], grads[n + len(frame_vars) :]
        got_onset = any(g is not None and float(tf.reduce_max(tf.abs(g))) > 0 for g in onset_grads)
        assert got_onset == expect_onset_grad
        assert all(g is not None and float(tf.reduce_max(tf.abs(g))) > 0 for g in shared_grads)
        if head == "frames":
            assert all(g is not None for g in frame_grads)


def test_weighted_binary_crossentropy_by_hand() -> None:
    y_true = np.array([[[1.0, 0.0]]], np.float32)
    y_pred = np.array([[[0.8, 0.25]]], np.float32)
    plain = -(np.log(0.8) + np.log(0.75)) / 2
    weighted = -(3.0 * np.log(0.8) + np.log(0.75)) / 2
    assert float(WeightedBinaryCrossentropy(1.0)(y_true, y_pred)) == pytest.approx(plain, rel=1e-6)
    assert float(WeightedBinaryCrossentropy(3.0)(y_true, y_pred)) == pytest.approx(weighted, rel=1e-6)
    assert float(keras.losses.BinaryCrossentropy()(y_true, y_pred)) == pytest.approx(plain, rel=1e-5)
    again = WeightedBinaryCrossentropy.from_config(WeightedBinaryCrossentropy(3.0).get_config())
    assert again.pos_weight == 3.0
    with pytest.raises(ValueError, match="pos_weight"):
        WeightedBinaryCrossentropy(0.0)


def test_compiled_losses_follow_train_config() -> None:
    config = TrainConfig(onset_pos_weight=4.0, onset_loss_weight=0.5)
    model = build_model(ModelConfig(lstm_units=4, onset_head=True), config)
    assert isinstance(model.loss["frames"], keras.losses.BinaryCrossentropy)
    assert model.loss["onsets"].pos_weight == 4.0
    assert model.get_compile_config()["loss_weights"] == {"frames": 1.0, "onsets": 0.5}


@pytest.mark.parametrize("onsets", [False, True])
def test_save_and_safe_load_give_identical_predictions(tmp_path: Path, onsets: bool) -> None:
    config = ModelConfig(
        lstm_units=6, dense_units=5, conv_layers=3, conv_filters=2, conv_dense_units=8, onset_head=onsets
    )
    stats = ([0.1] * 84, [0.5] * 84)
    model = build_model(config, TrainConfig(onset_pos_weight=2.5), n_bins=84, input_stats=stats)
    x = np.random.default_rng(4).random((2, 9, 84), dtype=np.float32)
    y = (np.random.default_rng(5).random((2, 9, 88)) > 0.7).astype(np.float32)
    model.fit(x, {"frames": y, "onsets": y} if onsets else y, epochs=1, verbose=0)  # moves batch-norm statistics
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.models.load_model(path, compile=False, safe_mode=True)
    before, after = output_heads(model.predict_on_batch(x)), output_heads(loaded.predict_on_batch(x))
    assert before.keys() == after.keys() == ({"frames", "onsets"} if onsets else {"frames"})
    for key in before:
        np.testing.assert_array_equal(after[key], before[key])
    compiled = keras.models.load_model(path, safe_mode=True)  # a checkpoint resumes with its losses
    if onsets:
        assert compiled.loss["onsets"].pos_weight == 2.5


@pytest.mark.parametrize(
    ("cls", "values", "message"),
    [
        (ModelConfig, {"conv_layers": -1}, "conv_layers"),
        (ModelConfig, {"conv_filters": 0}, "conv_filters"),
        (ModelConfig, {"conv_dropout": 1.0}, "conv_dropout"),
        (ModelConfig, {"onset_lstm_units": -2}, "onset_lstm_units"),
        (TrainConfig, {"onset_width": 0}, "onset_width"),
        (TrainConfig, {"onset_pos_weight": 0.0}, "onset_pos_weight"),
    ],
)
def test_new_fields_are_checked(cls: type, values: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        cls(**values)
