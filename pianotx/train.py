"""Training: frame and onset metrics, the standard callbacks, ``fit`` and ``train``.

Data contract: a batch is ``(x, y)`` with ``x`` (batch, time, n_bins) float32 features and
``y`` either (batch, time, 88) float32 or uint8 frame labels (1 = key sounding), for a
frame-only model, or ``{"frames": ..., "onsets": ...}`` of that shape for a model with an
onset head (onsets 1 on each note's first ``TrainConfig.onset_width`` frames; see
:class:`pianotx.loader.ChunkDataset`). Training and validation data are a
``keras.utils.PyDataset`` (or ``tf.data.Dataset``) yielding such batches, or an
``(x, y)`` pair of whole arrays that is batched by ``TrainConfig.batch_size``.

Hyperparameter search and experiment tracking plug in from outside through callbacks
(which see ``val_precision``, ``val_recall``, ``val_f1`` and, with onsets,
``val_onset_precision``, ``val_onset_recall``, ``val_onset_f1`` in ``logs``) and through
the returned history: this module imports neither keras_tuner nor mlflow.
"""

from __future__ import annotations

import gc
import json
import logging
import math
import os
import shutil
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeAlias

import keras
import numpy as np

from pianotx.config import DecodingConfig, ModelConfig, TrainConfig
from pianotx.evaluate import prf
from pianotx.files import atomic_path, write_text_atomic
from pianotx.model import build_model, has_onset_head, loss_weights, output_heads

Targets = np.ndarray | dict[str, np.ndarray]
Batch = tuple[np.ndarray, Targets]
# A PyDataset or tf.data.Dataset of batches, any iterable of batches, or whole (x, y) arrays.
Data: TypeAlias = keras.utils.PyDataset | Iterable[Batch] | Batch
Counts = tuple[int, int, int]  # true positives, false positives, false negatives

# Onsets within this many frames of a true onset count as hits (1 frame = 32 ms at the
# default 31.25 frames/s, the nearest grid to mir_eval's 50 ms onset tolerance).
ONSET_TOLERANCE = 1


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite; training was stopped.

    Attributes:
        epoch: 0-based epoch in which it happened.
        batch: batch index within that epoch (-1 when seen only at the epoch's end).
        loss: the offending loss value.
        history: per-epoch logs recorded up to and including that epoch.
    """

    def __init__(self, epoch: int, batch: int, loss: float, history: dict[str, list[float]]):
        super().__init__(f"training diverged: loss {loss} at epoch {epoch + 1}, batch {batch}")
        self.epoch = epoch
        self.batch = batch
        self.loss = loss
        self.history = history


def frame_counts(probs: np.ndarray, targets: np.ndarray, threshold: float = 0.5) -> Counts:
    """Count frame-level true positives, false positives and false negatives.

    Args:
        probs: (..., 88) predicted probabilities; a cell is on when ``probs >= threshold``
            (NaN is off).
        targets: same shape, labels; a cell is on when ``targets >= 0.5``.
        threshold: decision threshold.

    Returns:
        ``(tp, fp, fn)`` summed over all cells.
    """
    predicted = np.asarray(probs) >= threshold
    actual = np.asarray(targets) >= 0.5
    if predicted.shape != actual.shape:
        raise ValueError(f"probs {predicted.shape} and targets {actual.shape} differ in shape")
    tp = int(np.count_nonzero(predicted & actual))
    return tp, int(np.count_nonzero(predicted)) - tp, int(np.count_nonzero(actual)) - tp


def rising_edges(active: np.ndarray) -> np.ndarray:
    """Cells where a key turns on: (..., time, 88) bool -> same, ``active[t] & ~active[t-1]``.

    The frame before the first counts as off.
    """
    before = np.zeros_like(active)
    before[..., 1:, :] = active[..., :-1, :]
    return active & ~before


def _shift_time(a: np.ndarray, d: int) -> np.ndarray:
    """``out[..., t, :] = a[..., t + d, :]``, False outside the array."""
    out = np.zeros_like(a)
    n = a.shape[-2]
    if d >= 0:
        out[..., : n - d, :] = a[..., d:, :]
    else:
        out[..., -d:, :] = a[..., : n + d, :]
    return out


def onset_counts(
    probs: np.ndarray, targets: np.ndarray, threshold: float = 0.5, tolerance: int = ONSET_TOLERANCE
) -> Counts:
    """Count onset events matched one-to-one within ``tolerance`` frames, per key.

    A predicted onset is a rising edge of ``probs >= threshold`` (as decoding starts a
    note); a true onset is a rising edge of ``targets >= 0.5``, so widened targets count
    once, at their first frame. Pairs are matched greedily by time distance (0, then
    early by 1, late by 1, early by 2, ...); each event is used at most once.

    Args:
        probs: (..., time, 88) onset probabilities.
        targets: same shape, onset targets (plain or widened).
        threshold: onset decision threshold.
        tolerance: largest distance in frames between matched onsets.

    Returns:
        ``(tp, fp, fn)``: matched pairs, unmatched predictions, unmatched true onsets.
    """
    predicted = rising_edges(np.asarray(probs) >= threshold)
    actual = rising_edges(np.asarray(targets) >= 0.5)
    if predicted.shape != actual.shape:
        raise ValueError(f"probs {predicted.shape} and targets {actual.shape} differ in shape")
    n_predicted, n_actual = int(np.count_nonzero(predicted)), int(np.count_nonzero(actual))
    tp = 0
    for d in [0] + [s * k for k in range(1, tolerance + 1) for s in (-1, 1)]:
        match = actual & _shift_time(predicted, d)  # true onset at t, prediction at t + d
        tp += int(np.count_nonzero(match))
        actual &= ~match
        predicted &= ~_shift_time(match, -d)
    return tp, n_predicted - tp, n_actual - tp


def iter_batches(data: Data, batch_size: int = 8) -> Iterator[Batch]:
    """Yield ``(x, y)`` numpy batches from any supported :data:`Data` form.

    Args:
        data: a PyDataset (indexed ``0 .. len - 1``), an iterable of ``(x, y[, w])``
            batches (tf.data included), or an ``(x, y)`` pair of whole 3-D arrays (``y``
            may be a dict of them).
        batch_size: batch size used to split whole arrays.

    Yields:
        ``(x, y)`` with ``y`` an array or a dict of arrays, as served.
    """
    if _is_array_pair(data):
        x, y = data
        assert isinstance(x, np.ndarray)
        for start in range(0, len(x), batch_size):
            part = slice(start, start + batch_size)
            yield x[part], _map_targets(y, lambda a, part=part: a[part])
        return
    if isinstance(data, keras.utils.PyDataset):
        batches: Iterable[Any] = (data[i] for i in range(len(data)))
    else:
        batches = data
    for batch in batches:
        yield np.asarray(batch[0]), _map_targets(batch[1], np.asarray)


def _map_targets(y: Any, fn: Any) -> Targets:
    return {k: fn(v) for k, v in y.items()} if isinstance(y, dict) else fn(y)


def _is_array_pair(data: Any) -> bool:
    if not (isinstance(data, tuple) and len(data) == 2):
        return False
    x, y = data
    ys = list(y.values()) if isinstance(y, dict) else [y]
    return all(isinstance(a, np.ndarray) and a.ndim == 3 for a in [x, *ys])


def validation_pass(
    model: keras.Model,
    data: Data,
    threshold: float = DecodingConfig.threshold,
    onset_threshold: float = DecodingConfig.onset_threshold,
    batch_size: int = 8,
    onset_tolerance: int = ONSET_TOLERANCE,
    weights: dict[str, float] | None = None,
) -> tuple[dict[str, Counts], dict[str, float]]:
    """One pass of ``model`` over ``data``, summing the counts of every batch and, with
    ``weights`` (each output's weight in the total loss), the losses Keras' validation
    would log.

    Returns:
        (``{"frames": (tp, fp, fn)}`` (:func:`frame_counts`), plus ``"onsets"``
        (:func:`onset_counts`) when both the model and the data have onsets;
        ``{"loss": ..., "NAME_loss": ...}``, per output only for a model with several,
        each the mean of its batch losses weighted by batch size, computed with the
        model's own loss functions; ``{}`` without ``weights``).
    """
    totals: dict[str, np.ndarray] = {}
    sums: dict[str, float] = {}
    seen = 0
    for x, y in iter_batches(data, batch_size):
        heads = output_heads(model.predict_on_batch(x.astype(np.float32, copy=False)))
        targets = y if isinstance(y, dict) else {"frames": y}
        batch = {"frames": frame_counts(heads["frames"], targets["frames"], threshold)}
        if "onsets" in heads and "onsets" in targets:
            batch["onsets"] = onset_counts(heads["onsets"], targets["onsets"], onset_threshold, onset_tolerance)
        for key, found in batch.items():
            totals[key] = totals.get(key, np.zeros(3, np.int64)) + found
        if weights is not None:
            for key, value in batch_losses(model, targets, heads, weights).items():
                sums[key] = sums.get(key, 0.0) + value * len(x)
            seen += len(x)
    counts: dict[str, Counts] = {key: (int(c[0]), int(c[1]), int(c[2])) for key, c in totals.items()}
    return counts, ({key: total / seen for key, total in sums.items()} if seen else {})


def batch_losses(
    model: keras.Model, targets: dict[str, np.ndarray], heads: dict[str, np.ndarray], weights: dict[str, float]
) -> dict[str, float]:
    """The model's compiled losses on one batch: ``loss`` (the weighted sum) and, with
    several outputs, ``NAME_loss`` per output."""
    functions = model.loss if isinstance(model.loss, dict) else {"frames": model.loss}
    per_head = {
        name: float(keras.ops.convert_to_numpy(fn(targets[name], heads[name])))
        for name, fn in functions.items()
        if name in heads and name in targets
    }
    losses = {"loss": sum(weights.get(name, 1.0) * value for name, value in per_head.items())}
    if len(functions) > 1:
        losses |= {f"{name}_loss": value for name, value in per_head.items()}
    return losses


class FrameMetrics(keras.callbacks.Callback):
    """Adds validation precision, recall and F1 to the logs at each epoch end.

    Keys: ``val_precision``, ``val_recall``, ``val_f1`` (frames, cell by cell) and, when
    the model and the validation data have onsets, ``val_onset_precision``,
    ``val_onset_recall``, ``val_onset_f1`` (onset events, see :func:`onset_counts`).
    With ``loss_weights`` it also adds the validation losses from the same pass
    (``val_loss``, and ``val_NAME_loss`` per output; see :func:`validation_pass`), so
    ``model.fit`` needs no validation pass of its own.
    Counts are accumulated over the whole validation split before dividing (not averaged
    over batches). Place it before any callback that reads these keys (early stopping,
    a tuner's objective, a tracking logger): callbacks run in list order on one dict.
    An epoch whose training loss is not finite gets 0.0 without running the model.

    Args:
        validation_data: any :data:`Data` form, re-read in full at every epoch end.
        threshold: a frame cell is predicted on when its probability is >= threshold
            (default: :class:`~pianotx.decoding.DecodingConfig`'s).
        batch_size: used only when ``validation_data`` is a pair of whole arrays.
        onset_threshold: onset decision threshold (default: DecodingConfig's).
        onset_tolerance: frames between a predicted and a true onset that still match.
        loss_weights: each output's weight in the model's total loss (see
            :func:`pianotx.model.loss_weights`); ``None``: no losses.
    """

    def __init__(
        self,
        validation_data: Data,
        threshold: float = DecodingConfig.threshold,
        batch_size: int = 8,
        onset_threshold: float = DecodingConfig.onset_threshold,
        onset_tolerance: int = ONSET_TOLERANCE,
        loss_weights: dict[str, float] | None = None,
    ):
        super().__init__()
        self.validation_data = validation_data
        self.threshold = threshold
        self.batch_size = batch_size
        self.onset_threshold = onset_threshold
        self.onset_tolerance = onset_tolerance
        self.loss_weights = loss_weights

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if logs is None:
            return
        loss = logs.get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            heads = ("frames", "onsets") if has_onset_head(self.model) else ("frames",)  # velocities have no counts
            counts = {key: (0, 0, 0) for key in heads}
            losses = {"loss": math.nan} if self.loss_weights is not None else {}
        else:
            counts, losses = validation_pass(
                self.model,
                self.validation_data,
                self.threshold,
                self.onset_threshold,
                self.batch_size,
                self.onset_tolerance,
                self.loss_weights,
            )
        logs.update({f"val_{key}": value for key, value in losses.items()})
        for key, prefix in (("frames", "val_"), ("onsets", "val_onset_")):
            if key in counts:
                precision, recall, f1 = prf(*counts[key])
                logs.update({f"{prefix}precision": precision, f"{prefix}recall": recall, f"{prefix}f1": f1})


class _DivergenceGuard(keras.callbacks.Callback):
    """Stops training at the first non-finite training loss and remembers where."""

    def __init__(self) -> None:
        super().__init__()
        self.where: tuple[int, int, float] | None = None
        self._epoch = 0

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._epoch = epoch

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self._check(batch, logs)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._check(-1, logs)

    def _check(self, batch: int, logs: dict[str, Any] | None) -> None:
        loss = (logs or {}).get("loss")
        if self.where is None and loss is not None and not math.isfinite(float(loss)):
            self.where = (self._epoch, batch, float(loss))
            self.model.stop_training = True


class SafeBackupAndRestore(keras.callbacks.BackupAndRestore):
    """Keras' BackupAndRestore, written atomically, so a process killed while saving
    leaves the previous epoch's backup whole; a backup that still cannot be read is
    dropped (with a warning) and training starts from its first epoch instead of failing.
    """

    def _save_model(self) -> None:
        os.makedirs(self.backup_dir, exist_ok=True)
        with atomic_path(self._weights_path) as tmp:  # it keeps the .weights.h5 Keras wants
            self.model.save_weights(str(tmp), overwrite=True)
        metadata = {"epoch": self._current_epoch, "batch": self._last_batch_seen}
        write_text_atomic(self._training_metadata_path, json.dumps(metadata))

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        try:
            super().on_train_begin(logs)
        except (OSError, ValueError, KeyError) as exc:
            logging.getLogger(__name__).warning(
                "%s: unreadable backup (%s); training starts from the first epoch", self.backup_dir, exc
            )
            shutil.rmtree(self.backup_dir, ignore_errors=True)
            self.model._initial_epoch = None


def standard_callbacks(
    train: TrainConfig, checkpoint_path: Path | None = None, monitor: str = "val_loss"
) -> list[keras.callbacks.Callback]:
    """The seed's callbacks: checkpoint, TerminateOnNaN, ReduceLROnPlateau, EarlyStopping.

    ReduceLROnPlateau always watches ``val_loss`` (smooth, defined from the first epoch).
    EarlyStopping (``restore_best_weights=True``) and the checkpoint watch ``monitor``:
    ``val_loss`` by default, since ``val_f1`` at a fixed threshold stays at 0 until outputs
    cross it and then jumps; pass ``"val_f1"`` to select on F1 (maximised). The checkpoint
    is checked every epoch and written when ``monitor`` improves, so the file always holds
    the weights EarlyStopping restores. :func:`fit` runs :class:`FrameMetrics` before these.

    Args:
        train: patience and factor settings.
        checkpoint_path: a ``.keras`` file, or ``None`` for no checkpoint.
        monitor: log key for early stopping and checkpoint selection; minimised if it
            ends in ``loss``, else maximised.
    """
    mode = "min" if monitor.endswith("loss") else "max"
    callbacks: list[keras.callbacks.Callback] = []
    if checkpoint_path is not None:
        path = Path(checkpoint_path)
        if path.suffix != ".keras":
            raise ValueError(f"checkpoint path must end in .keras, got {path}")
        path.parent.mkdir(parents=True, exist_ok=True)
        callbacks.append(keras.callbacks.ModelCheckpoint(str(path), monitor=monitor, mode=mode, save_best_only=True))
    return callbacks + [
        keras.callbacks.TerminateOnNaN(),
        keras.callbacks.ReduceLROnPlateau(
            monitor="val_loss",
            mode="min",
            factor=train.reduce_lr_factor,
            patience=train.reduce_lr_patience,
        ),
        keras.callbacks.EarlyStopping(
            monitor=monitor,
            mode=mode,
            patience=train.early_stopping_patience,
            restore_best_weights=True,
        ),
    ]


def fit(
    model: keras.Model,
    train_data: Data,
    val_data: Data,
    train: TrainConfig,
    callbacks: Sequence[keras.callbacks.Callback],
    initial_epoch: int = 0,
    epochs: int | None = None,
    verbose: int | str = 2,
    *,
    threshold: float = DecodingConfig.threshold,
    onset_threshold: float = DecodingConfig.onset_threshold,
) -> keras.callbacks.History:
    """``model.fit`` with :class:`FrameMetrics` first, then ``callbacks``.

    Args:
        model: a compiled model (see :func:`pianotx.model.build_model`).
        train_data: a PyDataset or tf.data.Dataset of batches, or whole ``(x, y)`` arrays.
        val_data: the same forms; gives ``val_loss`` and ``val_precision/recall/f1``
            (and ``val_onset_precision/recall/f1`` with onsets, see :class:`FrameMetrics`).
        train: ``steps_per_epoch`` (0: one pass over ``train_data``), ``batch_size``
            (whole arrays only), ``epochs``.
        callbacks: run after FrameMetrics, in order (e.g. :func:`standard_callbacks`).
        initial_epoch: first epoch to run, 0-based (Hyperband's ``tuner/initial_epoch``).
        epochs: epoch to stop after, as in ``keras.Model.fit`` (Hyperband's
            ``tuner/epochs``); ``None`` means ``train.epochs``.
        verbose: Keras verbosity (2: one line per epoch).
        threshold: frame decision threshold of the validation metrics.
        onset_threshold: onset decision threshold of the validation metrics.

    Returns:
        The Keras History; ``history.history`` maps each log key to per-epoch values.

    Raises:
        TrainingDiverged: the training loss became NaN or infinite (training is stopped
            at that batch; the exception carries where and the history so far).
    """
    guard = _DivergenceGuard()
    # One validation pass per epoch gives the losses and the counts (Keras' own would
    # run the model over the validation split a second time).
    metrics = FrameMetrics(val_data, threshold, train.batch_size, onset_threshold, loss_weights=loss_weights(train))
    x, y = train_data if _is_array_pair(train_data) else (train_data, None)
    history = model.fit(
        x,
        y,
        batch_size=train.batch_size if y is not None else None,
        epochs=train.epochs if epochs is None else epochs,
        initial_epoch=initial_epoch,
        steps_per_epoch=train.steps_per_epoch or None,
        callbacks=[guard, metrics, *callbacks],
        verbose=verbose,
    )
    if guard.where is not None:
        raise TrainingDiverged(*guard.where, history=history_dict(history))
    return history


def history_dict(history: keras.callbacks.History) -> dict[str, list[float]]:
    """Plain ``{log key: [value per epoch]}`` with Python floats."""
    return {key: [float(v) for v in values] for key, values in history.history.items()}


def train(
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    train_data: Data,
    val_data: Data,
    checkpoint_path: Path | None = None,
    extra_callbacks: Sequence[keras.callbacks.Callback] = (),
    n_bins: int = 84,
    verbose: int | str = 2,
    *,
    threshold: float = DecodingConfig.threshold,
    onset_threshold: float = DecodingConfig.onset_threshold,
) -> tuple[keras.Model, dict[str, list[float]]]:
    """Seed the RNGs, build the model and fit it with the standard callbacks.

    Args:
        model_cfg: architecture.
        train_cfg: optimisation, callbacks, epochs and seed.
        train_data: see :func:`fit`.
        val_data: see :func:`fit`.
        checkpoint_path: optional ``.keras`` file for the best model so far.
        extra_callbacks: run after the standard ones.
        n_bins: feature bins per frame.
        verbose: Keras verbosity.
        threshold: frame decision threshold of the validation metrics.
        onset_threshold: onset decision threshold of the validation metrics.

    Returns:
        ``(model, history)``: the model with the best epoch's weights restored, and
        ``{log key: [value per epoch]}`` (``loss``, ``val_loss``, ``val_f1``, ...).

    Raises:
        TrainingDiverged: see :func:`fit`.
    """
    seed_everything(train_cfg)
    model = build_model(model_cfg, train_cfg, n_bins=n_bins)
    callbacks = [*standard_callbacks(train_cfg, checkpoint_path), *extra_callbacks]
    history = fit(
        model,
        train_data,
        val_data,
        train_cfg,
        callbacks,
        verbose=verbose,
        threshold=threshold,
        onset_threshold=onset_threshold,
    )
    return model, history_dict(history)


def seed_everything(train_cfg: TrainConfig) -> None:
    """Seed Python, numpy and the backend from ``train_cfg.seed``; with
    ``train_cfg.deterministic``, also make TensorFlow's ops deterministic."""
    keras.utils.set_random_seed(train_cfg.seed)
    if train_cfg.deterministic and keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()


def release_memory() -> None:
    """Drop Keras' global state and collect garbage (call between trials or models)."""
    keras.backend.clear_session()
    gc.collect()
