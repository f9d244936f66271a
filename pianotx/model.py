"""The frame transcriber: CQT frames in, per-key note probabilities out.

Input ``(batch, time, n_bins)`` float32 features (see :mod:`pianotx.features`), any time
length; output ``(batch, time, 88)`` float32 sigmoid probabilities, key ``k`` being MIDI
note ``21 + k``. The default :class:`ModelConfig` is exactly the seed model
(LSTM 120 -> Dense 120 relu -> Dense 88 sigmoid, 123,568 parameters on 84 bins).

The dense layers are plain ``Dense`` on the 3-D tensor, not ``TimeDistributed`` (which
Keras 3 mishandles for variable-length input; same math, same parameters).
"""

from __future__ import annotations

import keras
import numpy as np

from pianotx.config import N_KEYS, ModelConfig, TrainConfig

FeatureStats = tuple[list[float], list[float]]  # per-bin (mean, std) of training features


def build_model(
    model: ModelConfig,
    train: TrainConfig,
    n_bins: int = 84,
    jit_compile: bool = False,
    input_stats: FeatureStats | None = None,
) -> keras.Model:
    """Build and compile the LSTM frame transcriber.

    Layers: ``cqt`` input -> ``lstm_1`` .. ``lstm_N`` (``bilstm_i`` when bidirectional,
    each returning sequences) -> ``hidden`` Dense(relu) when ``dense_units > 0`` ->
    ``frames`` Dense(88, sigmoid).

    Args:
        model: architecture.
        train: optimiser settings (``optimizer``, ``learning_rate``, ``momentum``).
        n_bins: feature bins per frame.
        input_stats: per-bin mean and standard deviation of the training features;
            with ``model.normalize_input`` they become a non-trainable ``standardize``
            layer first (no trainable parameters; carried by the saved model).
        jit_compile: compile the train/predict steps with XLA. Off by default: on a
            2-core CPU it trained the seed model (recurrent dropout 0.2) at batch 8 ~2x
            faster, but was 1.3-2.7x slower at batch 32 and without recurrent dropout,
            and it recompiles for every new (batch, time) shape.

    Returns:
        A compiled ``keras.Model`` mapping (batch, time, n_bins) float32 to
        (batch, time, 88) float32 probabilities, trained with binary cross-entropy.
    """
    inputs = keras.Input((None, n_bins), name="cqt")
    x = inputs
    if model.normalize_input and input_stats is not None:
        mean, std = (np.asarray(v, np.float32).reshape(n_bins) for v in input_stats)
        x = keras.layers.Normalization(mean=mean, variance=np.maximum(std, 1e-3) ** 2, name="standardize")(x)
    for i in range(1, model.lstm_layers + 1):
        x = _recurrent_layer(model, i)(x)
    if model.dense_units > 0:
        x = keras.layers.Dense(model.dense_units, activation="relu", name="hidden")(x)
    outputs = keras.layers.Dense(N_KEYS, activation="sigmoid", name="frames")(x)
    net = keras.Model(inputs, outputs, name="pianotx_lstm")
    net.compile(
        optimizer=make_optimizer(train),
        loss=keras.losses.BinaryCrossentropy(),
        jit_compile=jit_compile,
    )
    return net


def _recurrent_layer(model: ModelConfig, index: int) -> keras.layers.Layer:
    """The ``index``-th (1-based) LSTM, wrapped in ``Bidirectional`` when configured."""
    lstm = keras.layers.LSTM(
        model.lstm_units,
        dropout=model.dropout,
        recurrent_dropout=model.recurrent_dropout,
        return_sequences=True,
        name=f"lstm_{index}",
    )
    if model.bidirectional:
        return keras.layers.Bidirectional(lstm, name=f"bilstm_{index}")
    return lstm


def make_optimizer(train: TrainConfig) -> keras.optimizers.Optimizer:
    """Adam(learning_rate) or SGD(learning_rate, momentum), per ``train.optimizer``."""
    if train.optimizer == "sgd":
        return keras.optimizers.SGD(learning_rate=train.learning_rate, momentum=train.momentum)
    return keras.optimizers.Adam(learning_rate=train.learning_rate)
