"""Training: frame metrics, the standard callbacks, ``fit`` and ``train``.

Data contract: a batch is ``(x, y)`` with ``x`` (batch, time, n_bins) float32 features and
``y`` (batch, time, 88) float32 or uint8 frame labels (1 = key sounding). Training and
validation data are a ``keras.utils.PyDataset`` (or ``tf.data.Dataset``) yielding such
batches, or an ``(x, y)`` pair of whole arrays that is batched by ``TrainConfig.batch_size``.

Hyperparameter search and experiment tracking plug in from outside through callbacks
(which see ``val_precision``, ``val_recall`` and ``val_f1`` in ``logs``) and through the
returned history: this module imports neither keras_tuner nor mlflow.
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
from typing import Any

import keras
import numpy as np

from pianotx.config import ModelConfig, TrainConfig
from pianotx.files import write_text_atomic
from pianotx.model import build_model

Batch = tuple[np.ndarray, np.ndarray]
# A PyDataset or tf.data.Dataset of batches, any iterable of batches, or whole (x, y) arrays.
Data = keras.utils.PyDataset | Iterable[Batch] | Batch


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


def frame_counts(probs: np.ndarray, targets: np.ndarray, threshold: float = 0.5) -> tuple[int, int, int]:
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


def prf(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    """Precision, recall and F1 from counts; each is 0.0 where its denominator is 0."""
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * tp / (2 * tp + fp + fn) if tp else 0.0
    return precision, recall, f1


def iter_batches(data: Data, batch_size: int = 8) -> Iterator[Batch]:
    """Yield ``(x, y)`` numpy batches from any supported :data:`Data` form.

    Args:
        data: a PyDataset (indexed ``0 .. len - 1``), an iterable of ``(x, y[, w])``
            batches (tf.data included), or an ``(x, y)`` pair of whole 3-D arrays.
        batch_size: batch size used to split whole arrays.
    """
    if _is_array_pair(data):
        x, y = data  # type: ignore[misc]
        for start in range(0, len(x), batch_size):
            yield x[start : start + batch_size], y[start : start + batch_size]
        return
    if isinstance(data, keras.utils.PyDataset):
        batches: Iterable[Any] = (data[i] for i in range(len(data)))
    else:
        batches = data  # type: ignore[assignment]
    for batch in batches:
        yield np.asarray(batch[0]), np.asarray(batch[1])


def _is_array_pair(data: Any) -> bool:
    return isinstance(data, tuple) and len(data) == 2 and all(isinstance(a, np.ndarray) and a.ndim == 3 for a in data)


def count_frames(model: keras.Model, data: Data, threshold: float = 0.5, batch_size: int = 8) -> tuple[int, int, int]:
    """Run ``model`` over all of ``data`` and sum :func:`frame_counts` over every batch.

    Returns:
        ``(tp, fp, fn)`` over the whole split.
    """
    tp = fp = fn = 0
    for x, y in iter_batches(data, batch_size):
        probs = np.asarray(model.predict_on_batch(x.astype(np.float32, copy=False)))
        btp, bfp, bfn = frame_counts(probs, y, threshold)
        tp, fp, fn = tp + btp, fp + bfp, fn + bfn
    return tp, fp, fn


class FrameMetrics(keras.callbacks.Callback):
    """Adds ``val_precision``, ``val_recall`` and ``val_f1`` to the logs at each epoch end.

    Counts are accumulated over the whole validation split before dividing (not averaged
    over batches). Place it before any callback that reads these keys (early stopping,
    a tuner's objective, a tracking logger): callbacks run in list order on one dict.
    An epoch whose training loss is not finite gets 0.0 without running the model.

    Args:
        validation_data: any :data:`Data` form, re-read in full at every epoch end.
        threshold: a cell is predicted on when its probability is >= threshold.
        batch_size: used only when ``validation_data`` is a pair of whole arrays.
    """

    def __init__(self, validation_data: Data, threshold: float = 0.5, batch_size: int = 8):
        super().__init__()
        self.validation_data = validation_data
        self.threshold = threshold
        self.batch_size = batch_size

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if logs is None:
            return
        loss = logs.get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            counts = (0, 0, 0)
        else:
            counts = count_frames(self.model, self.validation_data, self.threshold, self.batch_size)
        precision, recall, f1 = prf(*counts)
        logs.update(val_precision=precision, val_recall=recall, val_f1=f1)


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
        tmp = os.path.join(self.backup_dir, f".tmp-{os.getpid()}.weights.h5")
        self.model.save_weights(tmp, overwrite=True)
        os.replace(tmp, self._weights_path)
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
) -> keras.callbacks.History:
    """``model.fit`` with :class:`FrameMetrics` first, then ``callbacks``.

    Args:
        model: a compiled model (see :func:`pianotx.model.build_model`).
        train_data: a PyDataset or tf.data.Dataset of batches, or whole ``(x, y)`` arrays.
        val_data: the same forms; gives ``val_loss`` and ``val_precision/recall/f1``.
        train: ``threshold``, ``steps_per_epoch`` (0: one pass over ``train_data``),
            ``batch_size`` (whole arrays only), ``epochs``.
        callbacks: run after FrameMetrics, in order (e.g. :func:`standard_callbacks`).
        initial_epoch: first epoch to run, 0-based (Hyperband's ``tuner/initial_epoch``).
        epochs: epoch to stop after, as in ``keras.Model.fit`` (Hyperband's
            ``tuner/epochs``); ``None`` means ``train.epochs``.
        verbose: Keras verbosity (2: one line per epoch).

    Returns:
        The Keras History; ``history.history`` maps each log key to per-epoch values.

    Raises:
        TrainingDiverged: the training loss became NaN or infinite (training is stopped
            at that batch; the exception carries where and the history so far).
    """
    guard = _DivergenceGuard()
    metrics = FrameMetrics(val_data, train.threshold, train.batch_size)
    x, y = train_data if _is_array_pair(train_data) else (train_data, None)
    history = model.fit(
        x,
        y,
        batch_size=train.batch_size if y is not None else None,
        validation_data=val_data,
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

    Returns:
        ``(model, history)``: the model with the best epoch's weights restored, and
        ``{log key: [value per epoch]}`` (``loss``, ``val_loss``, ``val_f1``, ...).

    Raises:
        TrainingDiverged: see :func:`fit`.
    """
    keras.utils.set_random_seed(train_cfg.seed)
    model = build_model(model_cfg, train_cfg, n_bins=n_bins)
    callbacks = [*standard_callbacks(train_cfg, checkpoint_path), *extra_callbacks]
    history = fit(model, train_data, val_data, train_cfg, callbacks, verbose=verbose)
    return model, history_dict(history)


def release_memory() -> None:
    """Drop Keras' global state and collect garbage (call between trials or models)."""
    keras.backend.clear_session()
    gc.collect()
