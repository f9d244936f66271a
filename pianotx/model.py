"""The transcriber: CQT frames in, per-key note probabilities out.

Input ``(batch, time, n_bins)`` float32 features (see :mod:`pianotx.features`), any time
length. Key ``k`` of every output is MIDI note ``21 + k``. Architecture, per
:class:`~pianotx.config.ModelConfig`::

    cqt -> [standardize] -> [conv front-end] -> trunk features
    trunk ----------------------------------------------> frame LSTMs -> [hidden] -> frames
    trunk -> onset LSTMs -> onsets --stop_gradient--^ (concatenated with the trunk)
    trunk [+ onset LSTMs' output, gradient stopped] -> [velocity head] -> velocities

- Without an onset head the model has one output: ``(batch, time, 88)`` float32 frame
  probabilities, named ``frames`` (the seed's form; saved models of that form still load).
- With ``onset_head`` it outputs a dict ``{"frames": ..., "onsets": ...}``, both
  ``(batch, time, 88)`` float32 sigmoid probabilities. The onset head has its own LSTM
  stack on the shared trunk; its predictions, gradient stopped, are concatenated with
  the trunk features as the frame LSTMs' input, as in Onsets and Frames (Hawthorne et
  al. 2018): the frame loss never trains the onset head. :func:`output_heads` gives the
  same dict for either form.

The default :class:`~pianotx.config.ModelConfig` is exactly the seed model
(LSTM 120 -> Dense 120 relu -> Dense 88 sigmoid, 123,568 parameters on 84 bins). Dense
layers are plain ``Dense`` on the 3-D tensor, not ``TimeDistributed`` (which Keras 3
mishandles for variable-length input; same math, same parameters).

Custom objects (:class:`StopGradient`, :class:`WeightedBinaryCrossentropy`,
:class:`OnsetVelocityLoss`) are
registered with Keras under the package name ``pianotx``: importing this module before
``keras.models.load_model`` lets safe-mode loading find them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import numpy as np

from pianotx.config import N_KEYS, ModelConfig, TrainConfig

# per-bin (mean, std) of the training features
FeatureStats = tuple[Sequence[float] | np.ndarray, Sequence[float] | np.ndarray]
OUTPUTS = ("frames", "onsets", "velocities")
VELOCITY_LAYERS = (
    "velocity_input",
    "velocity_lstm",
    "velocity_bilstm",
    "velocity_hidden",
    "velocities",
)  # the velocity head's layers


@keras.saving.register_keras_serializable(package="pianotx")
class StopGradient(keras.layers.Layer):
    """Identity in the forward pass; no gradient flows back through it."""

    def call(self, inputs: Any) -> Any:
        return keras.ops.stop_gradient(inputs)

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        return input_shape


@keras.saving.register_keras_serializable(package="pianotx")
class WeightedBinaryCrossentropy(keras.losses.Loss):
    """Binary cross-entropy with positive cells weighted by ``pos_weight``.

    Per cell: ``-(pos_weight * y * log(p) + (1 - y) * log(1 - p))`` with ``p`` clipped to
    ``[eps, 1 - eps]`` (``eps = keras.config.epsilon()``), averaged over the last axis;
    ``pos_weight = 1`` is plain binary cross-entropy on probabilities.

    Args:
        pos_weight: weight of cells whose target is 1 (> 0).
        name: loss name.
        reduction: Keras reduction over the remaining axes.
    """

    def __init__(
        self,
        pos_weight: float = 1.0,
        name: str = "weighted_binary_crossentropy",
        reduction: str = "sum_over_batch_size",
    ):
        super().__init__(name=name, reduction=reduction)
        if pos_weight <= 0:
            raise ValueError(f"pos_weight must be > 0, got {pos_weight}")
        self.pos_weight = float(pos_weight)

    def call(self, y_true: Any, y_pred: Any) -> Any:
        ops = keras.ops
        eps = keras.config.epsilon()
        y_pred = ops.clip(ops.convert_to_tensor(y_pred), eps, 1.0 - eps)
        y_true = ops.cast(y_true, y_pred.dtype)
        cells = self.pos_weight * y_true * ops.log(y_pred) + (1.0 - y_true) * ops.log(1.0 - y_pred)
        return -ops.mean(cells, axis=-1)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "pos_weight": self.pos_weight}


@keras.saving.register_keras_serializable(package="pianotx")
class OnsetVelocityLoss(keras.losses.Loss):
    """Squared error of the velocity output at note onsets only (Onsets and Frames'
    velocity loss): ``sum(m * (y - p)^2) / max(sum(m), 1)`` over the whole batch, where
    the target ``y`` is MIDI velocity / 127 at a note's first frame and 0 elsewhere, and
    ``m = (y > 0)``. A batch without onsets has loss 0.

    Keras reduces a loss by averaging its per-sample values, so each sample's value is
    its share of the batch total times the batch size: their mean is the batch's loss.
    """

    def __init__(self, name: str = "onset_velocity_loss", reduction: str = "sum_over_batch_size"):
        super().__init__(name=name, reduction=reduction)

    def call(self, y_true: Any, y_pred: Any) -> Any:
        ops = keras.ops
        y_pred = ops.convert_to_tensor(y_pred)
        y_true = ops.cast(y_true, y_pred.dtype)
        mask = ops.cast(y_true > 0, y_pred.dtype)
        per_sample = ops.sum(mask * ops.square(y_true - y_pred), axis=tuple(range(1, len(y_pred.shape))))
        batch = ops.cast(ops.shape(y_pred)[0], y_pred.dtype)
        return per_sample * batch / ops.maximum(ops.sum(mask), 1.0)


def build_model(
    model: ModelConfig,
    train: TrainConfig,
    n_bins: int = 84,
    jit_compile: bool = False,
    input_stats: FeatureStats | None = None,
) -> keras.Model:
    """Build and compile the transcriber (see the module docstring for its outputs).

    Layers: ``cqt`` input -> ``standardize`` -> conv front-end (``conv_*``, when
    ``conv_layers > 0``) -> with an onset head, ``onset_lstm_i`` / ``onset_bilstm_i``
    -> ``onsets`` Dense(88, sigmoid) and ``onsets_stopped`` + ``frame_input``
    (concatenation) -> ``lstm_1`` .. ``lstm_N`` (``bilstm_i`` when bidirectional) ->
    ``hidden`` Dense(relu) when ``dense_units > 0`` -> ``frames`` Dense(88, sigmoid).

    Args:
        model: architecture.
        train: optimiser settings (``optimizer``, ``learning_rate``, ``momentum``) and,
            with an onset head, ``onset_pos_weight`` and ``onset_loss_weight``.
        n_bins: feature bins per frame (84 for 12 bins per octave, 252 for 36).
        jit_compile: compile the train/predict steps with XLA. Off by default: on a
            2-core CPU it trained the seed model (recurrent dropout 0.2) at batch 8 ~2x
            faster, but was 1.3-2.7x slower at batch 32 and without recurrent dropout,
            and it recompiles for every new (batch, time) shape.
        input_stats: per-bin mean and standard deviation of the training features;
            with ``model.normalize_input`` they become a non-trainable ``standardize``
            layer first (no trainable parameters; carried by the saved model).

    Returns:
        A compiled ``keras.Model`` on (batch, time, n_bins) float32 input. Loss: binary
        cross-entropy on frames, plus ``onset_loss_weight`` x
        :class:`WeightedBinaryCrossentropy` on onsets.

    Raises:
        ValueError: the conv front-end would pool the frequency axis below one bin.
    """
    inputs = keras.Input((None, n_bins), name="cqt")
    x = inputs
    if model.normalize_input and input_stats is not None:
        mean, std = (np.asarray(v, np.float32).reshape(n_bins) for v in input_stats)
        x = keras.layers.Normalization(mean=mean, variance=np.maximum(std, 1e-3) ** 2, name="standardize")(x)
    if model.conv_layers:
        x = _conv_front_end(x, model, n_bins)
    trunk, onset_features = x, None
    if model.onset_head:
        onsets, onset_features = _onset_head(x, model)
        x = keras.layers.Concatenate(name="frame_input")([x, StopGradient(name="onsets_stopped")(onsets)])
    frames = _frame_head(x, model)
    if model.onset_head or model.velocity_head:
        outputs = {"frames": frames}
        losses: dict[str, keras.losses.Loss] = {"frames": keras.losses.BinaryCrossentropy()}
        if model.onset_head:
            outputs["onsets"] = onsets
            losses["onsets"] = WeightedBinaryCrossentropy(train.onset_pos_weight)
        if model.velocity_head:
            outputs["velocities"] = _velocity_head(trunk, onset_features, model)
            losses["velocities"] = OnsetVelocityLoss()
        name = "pianotx_onsets_frames" if model.onset_head else "pianotx_frames_velocity"
        net = keras.Model(inputs, outputs, name=name)
        freeze(net, train.train_layers)
        net.compile(
            optimizer=make_optimizer(train),
            loss=losses,
            loss_weights={k: v for k, v in loss_weights(train).items() if k in outputs},
            jit_compile=jit_compile,
        )
        return net
    net = keras.Model(inputs, frames, name="pianotx_lstm")
    freeze(net, train.train_layers)
    net.compile(optimizer=make_optimizer(train), loss=keras.losses.BinaryCrossentropy(), jit_compile=jit_compile)
    return net


OUTPUT_LAYERS = ("hidden", "frames", "onsets", *VELOCITY_LAYERS)  # what train_layers="heads" trains


def trains_layer(name: str, train_layers: str) -> bool:
    """Whether the layer ``name`` trains under ``train_layers`` (see
    :attr:`pianotx.config.TrainConfig.train_layers`): "all" trains every layer, "frames"
    all but the onset head and the conv front-end, "heads" only the output Dense layers,
    "velocity" only the velocity head."""
    if train_layers == "velocity":
        return name in VELOCITY_LAYERS
    if train_layers == "heads":
        return name in OUTPUT_LAYERS
    if train_layers == "frames":
        return not name.startswith(("onset", "conv_"))
    return True


def freeze(net: keras.Model, train_layers: str) -> list[str]:
    """Mark the layers ``train_layers`` leaves out non-trainable (before compiling); their names."""
    frozen = [layer.name for layer in net.layers if layer.weights and not trains_layer(layer.name, train_layers)]
    for name in frozen:
        net.get_layer(name).trainable = False
    return frozen


def conv_plan(model: ModelConfig, n_bins: int) -> list[tuple[int, bool]]:
    """``(filters, pools)`` per conv layer, and the check that frequency survives pooling.

    Layers 1-2 have ``conv_filters`` channels, later ones ``2 * conv_filters`` (Onsets
    and Frames' 48/48/96); the last ``conv_pools`` layers max-pool frequency by 2.

    Raises:
        ValueError: ``n_bins`` would be pooled below one bin.
    """
    first_pool = model.conv_layers - model.conv_pools + 1
    plan = [(model.conv_filters * (1 if i <= 2 else 2), i >= first_pool) for i in range(1, model.conv_layers + 1)]
    if n_bins >> sum(pool for _, pool in plan) < 1:
        raise ValueError(f"{model.conv_layers} conv layers pool {n_bins} frequency bins below one")
    return plan


def _conv_front_end(x: Any, model: ModelConfig, n_bins: int) -> Any:
    """(batch, time, n_bins) -> (batch, time, conv_dense_units or the flattened width);
    time is never pooled."""
    x = keras.layers.Reshape((-1, n_bins, 1), name="conv_channels")(x)
    width = n_bins
    for i, (filters, pool) in enumerate(conv_plan(model, n_bins), start=1):
        x = keras.layers.Conv2D(filters, (3, 3), padding="same", use_bias=False, name=f"conv_{i}")(x)
        x = keras.layers.BatchNormalization(name=f"conv_bn_{i}")(x)
        x = keras.layers.ReLU(name=f"conv_relu_{i}")(x)
        if pool:
            x = keras.layers.MaxPooling2D((1, 2), name=f"conv_pool_{i}")(x)
            x = keras.layers.Dropout(model.conv_dropout, name=f"conv_dropout_{i}")(x)
            width //= 2
    x = keras.layers.Reshape((-1, width * filters), name="conv_flatten")(x)
    if not model.conv_dense_units:
        return x
    x = keras.layers.Dense(model.conv_dense_units, activation="relu", name="conv_dense")(x)
    return keras.layers.Dropout(model.conv_dropout, name="conv_dense_dropout")(x)


def _onset_head(x: Any, model: ModelConfig) -> tuple[Any, Any]:
    """Onset LSTM stack -> ``onsets`` (batch, time, 88) sigmoid; also the last LSTM's
    output (what the velocity head listens to besides the trunk)."""
    units = model.onset_lstm_units or model.lstm_units
    for i in range(1, model.lstm_layers + 1):
        x = _recurrent_layer(model, i, units, prefix="onset_")(x)
    return keras.layers.Dense(N_KEYS, activation="sigmoid", name="onsets")(x), x


def _velocity_head(trunk: Any, onset_features: Any, model: ModelConfig) -> Any:
    """Trunk features [+ the onset stack's output] -> [``velocity_lstm`` /
    ``velocity_bilstm``] -> ``velocity_hidden`` Dense(relu) ->
    ``velocities`` (batch, time, 88) sigmoid, velocity / 127.

    The onset stack's output reaches it gradient-stopped: the velocity loss never moves
    the onset head, so adding or training a velocity head leaves the notes as they were."""
    x = trunk
    if onset_features is not None:
        stopped = StopGradient(name="velocity_onset_stopped")(onset_features)
        x = keras.layers.Concatenate(name="velocity_input")([trunk, stopped])
    if model.velocity_lstm_units:
        lstm = keras.layers.LSTM(model.velocity_lstm_units, return_sequences=True, name="velocity_lstm")
        x = keras.layers.Bidirectional(lstm, name="velocity_bilstm")(x) if model.bidirectional else lstm(x)
    x = keras.layers.Dense(model.velocity_units, activation="relu", name="velocity_hidden")(x)
    return keras.layers.Dense(N_KEYS, activation="sigmoid", name="velocities")(x)


def _frame_head(x: Any, model: ModelConfig) -> Any:
    """Frame LSTM stack -> optional ``hidden`` -> ``frames`` (batch, time, 88) sigmoid."""
    for i in range(1, model.lstm_layers + 1):
        x = _recurrent_layer(model, i, model.lstm_units)(x)
    if model.dense_units > 0:
        x = keras.layers.Dense(model.dense_units, activation="relu", name="hidden")(x)
    return keras.layers.Dense(N_KEYS, activation="sigmoid", name="frames")(x)


def _recurrent_layer(model: ModelConfig, index: int, units: int, prefix: str = "") -> keras.layers.Layer:
    """The ``index``-th (1-based) LSTM of a stack, in ``Bidirectional`` when configured."""
    lstm = keras.layers.LSTM(
        units,
        dropout=model.dropout,
        recurrent_dropout=model.recurrent_dropout,
        return_sequences=True,
        name=f"{prefix}lstm_{index}",
    )
    if model.bidirectional:
        return keras.layers.Bidirectional(lstm, name=f"{prefix}bilstm_{index}")
    return lstm


def make_optimizer(train: TrainConfig) -> keras.optimizers.Optimizer:
    """Adam(learning_rate) or SGD(learning_rate, momentum), per ``train.optimizer``."""
    if train.optimizer == "sgd":
        return keras.optimizers.SGD(learning_rate=train.learning_rate, momentum=train.momentum)
    return keras.optimizers.Adam(learning_rate=train.learning_rate)


def loss_weights(train: TrainConfig) -> dict[str, float]:
    """Each output's weight in the total loss of a model with several outputs."""
    return {"frames": 1.0, "onsets": train.onset_loss_weight, "velocities": train.velocity_loss_weight}


def output_heads(outputs: Any) -> dict[str, np.ndarray]:
    """A model's outputs as ``{"frames": ...[, "onsets": ...]}`` numpy arrays.

    Args:
        outputs: what ``predict_on_batch`` (or a call) returned: one (batch, time, 88)
            array from a frame-only model, or the dict of a model with an onset head.

    Returns:
        The dict, with float32 arrays; ``"onsets"`` only when the model has one.
    """
    if isinstance(outputs, dict):
        unknown = set(outputs) - set(OUTPUTS)
        if "frames" not in outputs or unknown:
            raise ValueError(f"model outputs {sorted(outputs)} are not {OUTPUTS}")
        return {k: np.asarray(v, np.float32) for k, v in outputs.items()}
    return {"frames": np.asarray(outputs, np.float32)}


def has_onset_head(model: keras.Model) -> bool:
    """Whether ``model`` (built here, or loaded) outputs onsets."""
    return any(layer.name == "onsets" for layer in model.layers)


def has_velocity_head(model: keras.Model) -> bool:
    """Whether ``model`` (built here, or loaded) outputs velocities."""
    return any(layer.name == "velocities" for layer in model.layers)


def output_names(model: keras.Model) -> tuple[str, ...]:
    """The outputs ``model`` has, in :data:`OUTPUTS` order."""
    present = {layer.name for layer in model.layers}
    return tuple(name for name in OUTPUTS if name == "frames" or name in present)
