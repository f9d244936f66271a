"""Tests for pianotx.train: frame metrics by hand, callbacks, fit, divergence, checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
import pytest

from pianotx.config import ModelConfig, TrainConfig
from pianotx.model import build_model
from pianotx.train import (
    FrameMetrics,
    TrainingDiverged,
    fit,
    frame_counts,
    prf,
    release_memory,
    standard_callbacks,
    train,
)

TINY = ModelConfig(lstm_units=16, dense_units=16, dropout=0.0, recurrent_dropout=0.0)
FAST = TrainConfig(learning_rate=2.0e-2, batch_size=8, epochs=2)


class ArrayBatches(keras.utils.PyDataset):
    """A PyDataset serving fixed (x, y) batches."""

    def __init__(self, batches: list[tuple[np.ndarray, np.ndarray]]) -> None:
        super().__init__()
        self.batches = batches

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        return self.batches[index]


def toy_split(n: int, seed: int) -> ArrayBatches:
    """n batches of x (8, 16, 88) random 0/1; key k copies bin k % 8 (y = x[..., k % 8]).

    A per-frame task a 16-unit LSTM learns in a few dozen steps (8 bits per frame).
    """
    rng = np.random.default_rng(seed)
    x = (rng.random((n, 8, 16, 88)) > 0.5).astype(np.float32)
    y = x[..., np.arange(88) % 8].astype(np.uint8)
    return ArrayBatches(list(zip(x, y, strict=True)))


def test_frame_counts_and_prf_by_hand() -> None:
    probs = np.array([[0.9, 0.2, 0.5, 0.7], [0.1, 0.6, 0.4, 0.0]])
    targets = np.array([[1, 0, 1, 0], [1, 1, 0, 0]], dtype=np.uint8)
    # On at >= 0.5: (0,0) tp, (0,2) tp, (0,3) fp, (1,1) tp; (1,0) fn.
    assert frame_counts(probs, targets, 0.5) == (3, 1, 1)
    assert frame_counts(probs, targets, 0.8) == (1, 0, 3)
    assert prf(3, 1, 1) == (0.75, 0.75, 0.75)
    p, r, f = prf(1, 0, 3)
    assert (p, r) == (1.0, 0.25) and f == pytest.approx(2 * 1.0 * 0.25 / 1.25)
    assert prf(0, 0, 0) == (0.0, 0.0, 0.0)
    assert prf(0, 2, 0) == (0.0, 0.0, 0.0)
    assert prf(0, 0, 5) == (0.0, 0.0, 0.0)
    with pytest.raises(ValueError):
        frame_counts(probs, targets[:, :3])


def test_frame_metrics_accumulate_counts_over_all_batches() -> None:
    inputs = keras.Input((None, 88))
    identity = keras.Model(inputs, keras.layers.Identity()(inputs))  # probs = x
    x1, y1 = np.zeros((1, 2, 88), np.float32), np.zeros((1, 2, 88), np.uint8)
    x1[0, 0, 0], y1[0, 0, 0] = 1, 1  # tp 1
    x2, y2 = np.zeros((2, 3, 88), np.float32), np.zeros((2, 3, 88), np.uint8)
    x2[0, 0, :4], y2[0, 0, 3] = 1, 1  # tp 1, fp 3
    y2[1, 2, 10:12] = 1  # fn 2
    callback = FrameMetrics(ArrayBatches([(x1, y1), (x2, y2)]), threshold=0.5)
    callback.set_model(identity)
    logs: dict[str, float] = {"loss": 0.3}
    callback.on_epoch_end(0, logs)
    # Totals tp 2, fp 3, fn 2: P 2/5, R 2/4, F1 4/9; per-batch F1s 1 and 2/7 average 9/14.
    assert logs["val_precision"] == pytest.approx(0.4)
    assert logs["val_recall"] == pytest.approx(0.5)
    assert logs["val_f1"] == pytest.approx(4 / 9)
    assert logs["val_f1"] != pytest.approx((1 + 2 / 7) / 2)
    whole = FrameMetrics((x2, y2), batch_size=1)  # whole arrays, split into batches
    whole.set_model(identity)
    whole.on_epoch_end(0, logs)
    assert logs["val_f1"] == pytest.approx(2 / 7)
    diverged = {"loss": float("nan")}
    callback.on_epoch_end(1, diverged)
    assert diverged["val_f1"] == 0.0


def test_standard_callbacks(tmp_path: Path) -> None:
    kinds = [type(c).__name__ for c in standard_callbacks(FAST, tmp_path / "a" / "m.keras")]
    assert kinds == ["ModelCheckpoint", "TerminateOnNaN", "ReduceLROnPlateau", "EarlyStopping"]
    assert (tmp_path / "a").is_dir()
    callbacks = standard_callbacks(FAST, None, monitor="val_f1")
    assert [type(c).__name__ for c in callbacks][0] == "TerminateOnNaN"
    plateau, stopping = callbacks[1], callbacks[2]
    assert (plateau.monitor, plateau.patience, plateau.factor) == ("val_loss", 2, 0.5)
    assert (stopping.monitor, stopping.patience, stopping.restore_best_weights) == (
        "val_f1",
        4,
        True,
    )
    with pytest.raises(ValueError, match=".keras"):
        standard_callbacks(FAST, tmp_path / "m.h5")


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[keras.Model, dict, Path]:
    path = tmp_path_factory.mktemp("ckpt") / "best.keras"
    model, history = train(TINY, FAST, toy_split(32, 0), toy_split(2, 1), checkpoint_path=path, n_bins=88, verbose=0)
    return model, history, path


def test_train_lowers_loss_and_reports_f1_per_epoch(trained: tuple) -> None:
    _, history, _ = trained
    assert len(history["loss"]) == 2
    assert history["loss"][1] < history["loss"][0]
    assert history["val_loss"][1] < history["val_loss"][0]
    for key in ("val_precision", "val_recall", "val_f1"):
        assert len(history[key]) == 2 and all(0.0 <= v <= 1.0 for v in history[key])
    assert history["val_f1"][1] > max(0.7, history["val_f1"][0])  # chance is ~0.5


def test_checkpoint_reloads_with_identical_predictions(trained: tuple) -> None:
    model, _, path = trained
    assert path.is_file()
    reloaded = keras.models.load_model(path)
    x = toy_split(1, 2)[0][0]
    np.testing.assert_array_equal(reloaded.predict_on_batch(x), model.predict_on_batch(x))


def test_fit_honours_initial_epoch_and_epochs() -> None:
    keras.utils.set_random_seed(0)
    model = build_model(TINY, FAST, n_bins=88)
    arrays = toy_split(1, 0)[0]  # whole arrays, batched by FAST.batch_size
    history = fit(model, arrays, toy_split(1, 1), FAST, [], 2, 3, verbose=0)
    assert history.epoch == [2]
    assert len(history.history["val_f1"]) == 1


def test_nan_inputs_raise_training_diverged() -> None:
    batches = toy_split(3, 0)
    batches.batches[1][0][0, 0, 0] = np.nan
    model = build_model(TINY, FAST, n_bins=88)
    with pytest.raises(TrainingDiverged) as caught:
        fit(model, batches, toy_split(1, 1), FAST, standard_callbacks(FAST), verbose=0)
    assert caught.value.epoch == 0 and 0 <= caught.value.batch < 3  # fit shuffles batches
    assert np.isnan(caught.value.loss)
    assert caught.value.history["val_f1"] == [0.0]


def test_huge_learning_rate_raises_training_diverged() -> None:
    # SGD at 1e6 stays finite here (saturated LSTM, loss computed from logits); 1e30 does not.
    config = TrainConfig(optimizer="sgd", learning_rate=1.0e30, epochs=2)
    with pytest.raises(TrainingDiverged, match="diverged"):
        train(TINY, config, toy_split(4, 0), toy_split(1, 1), n_bins=88, verbose=0)
    release_memory()


def test_backup_survives_a_kill_while_saving_and_a_bad_one_restarts_training(tmp_path: Path) -> None:
    from pianotx.train import SafeBackupAndRestore

    backup = tmp_path / "backup"
    model = build_model(TINY, FAST, n_bins=88)
    fit(
        model,
        toy_split(2, 0),
        toy_split(1, 1),
        FAST,
        [SafeBackupAndRestore(str(backup), delete_checkpoint=False)],
        verbose=0,
    )
    assert sorted(p.name for p in backup.iterdir()) == ["latest.weights.h5", "training_metadata.json"]  # no temp left
    assert json.loads((backup / "training_metadata.json").read_text())["epoch"] == 2

    longer = TrainConfig(learning_rate=2.0e-2, batch_size=8, epochs=3)
    model = build_model(TINY, longer, n_bins=88)
    history = fit(model, toy_split(2, 0), toy_split(1, 1), longer, [SafeBackupAndRestore(str(backup))], verbose=0)
    assert len(history.history["loss"]) == 1  # went on from epoch 2

    backup.mkdir()
    (backup / "latest.weights.h5").write_bytes(b"half a file")  # what a kill during Keras' own save leaves
    (backup / "training_metadata.json").write_text('{"epoch": 2, "batch": 0}')
    model = build_model(TINY, longer, n_bins=88)
    history = fit(model, toy_split(2, 0), toy_split(1, 1), longer, [SafeBackupAndRestore(str(backup))], verbose=0)
    assert len(history.history["loss"]) == 3  # from the first epoch, not a failed trial
