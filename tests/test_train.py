"""Tests for pianotx.train: frame and onset metrics by hand, callbacks, fit, divergence, checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
import pytest

from pianotx.config import ModelConfig, TrainConfig
from pianotx.decoding import DecodingConfig
from pianotx.loader import widen_onsets
from pianotx.model import build_model
from pianotx.train import (
    FrameMetrics,
    TrainingDiverged,
    fit,
    frame_counts,
    onset_counts,
    prf,
    release_memory,
    rising_edges,
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


def test_rising_edges() -> None:
    active = np.array([[1, 1, 0, 1], [0, 1, 0, 1], [1, 1, 1, 0]], bool)  # (time 3, keys 4)
    expected = np.array([[1, 1, 0, 1], [0, 0, 0, 0], [1, 0, 1, 0]], bool)
    np.testing.assert_array_equal(rising_edges(active), expected)


def onset_example() -> tuple[np.ndarray, np.ndarray]:
    """Four keys over 8 frames (only keys 0-3 used; the rest silent).

    key 0: predicted onsets at 1 and 5, true (widened) onset at 2.
    key 1: true onset at 6, nothing predicted.
    key 2: predicted at 0, true at 3 (3 frames apart).
    key 3: true onsets at 2 and 4, one prediction at 3 between them.
    """
    probs = np.zeros((8, 88), np.float32)
    targets = np.zeros((8, 88), np.uint8)
    probs[:, 0] = [0.1, 0.6, 0.7, 0.2, 0.2, 0.9, 0.1, 0.1]
    targets[2:4, 0] = 1
    targets[6:8, 1] = 1
    probs[0, 2], targets[3, 2] = 0.8, 1
    probs[3, 3] = 0.9
    targets[[2, 4], 3] = 1
    return probs, targets


def test_onset_counts_by_hand() -> None:
    probs, targets = onset_example()
    # Tolerance 1: key 0 one hit (1 vs 2) and one false alarm (5); key 1 one miss; key 2 a
    # false alarm and a miss; key 3 one hit (3 vs 2 or 4) and one miss, never two hits.
    # Tolerance 3 also pairs key 2's onsets (0 vs 3).
    assert onset_counts(probs, targets, 0.5, 1) == (2, 2, 3)
    assert onset_counts(probs, targets, 0.5, 0) == (0, 4, 5)
    assert onset_counts(probs, targets, 0.5, 3) == (3, 1, 2)
    assert onset_counts(probs, targets, 0.65, 0) == (1, 3, 4)  # key 0 now rises at 2
    assert onset_counts(probs[None], targets[None], 0.5, 1) == (2, 2, 3)  # batch axis
    with pytest.raises(ValueError):
        onset_counts(probs, targets[:, :4])


def identity_heads() -> keras.Model:
    """(batch, time, 176) -> {"frames": x[..., :88], "onsets": x[..., 88:]}, exactly."""
    inputs = keras.Input((None, 176))
    eye, zero = np.eye(88, dtype=np.float32), np.zeros((88, 88), np.float32)
    frames = keras.layers.Dense(88, use_bias=False, name="frames")
    onsets = keras.layers.Dense(88, use_bias=False, name="onsets")
    model = keras.Model(inputs, {"frames": frames(inputs), "onsets": onsets(inputs)})
    frames.set_weights([np.concatenate([eye, zero])])
    onsets.set_weights([np.concatenate([zero, eye])])
    return model


def test_frame_metrics_add_onset_metrics_from_counts() -> None:
    probs, targets = onset_example()
    x1 = np.zeros((1, 8, 176), np.float32)
    x1[0, :, 88:] = probs
    frames1 = np.zeros((1, 8, 88), np.float32)
    x1[0, 0, 0] = frames1[0, 0, 0] = 1  # one frame hit
    x2, frames2, onsets2 = np.zeros((1, 4, 176), np.float32), np.zeros((1, 4, 88), np.float32), np.zeros((1, 4, 88))
    x2[0, 1, 88 + 9] = onsets2[0, 1, 9] = 1.0  # one onset hit
    frames2[0, 2, 4] = 1  # one frame miss
    data = ArrayBatches(
        [(x1, {"frames": frames1, "onsets": targets[None]}), (x2, {"frames": frames2, "onsets": onsets2})]
    )
    callback = FrameMetrics(data, onset_tolerance=1)
    callback.set_model(identity_heads())
    logs: dict[str, float] = {"loss": 0.3}
    callback.on_epoch_end(0, logs)
    # Frames: tp 1, fp 0, fn 1. Onsets: (2, 2, 3) + (1, 0, 0) = (3, 2, 3).
    assert (logs["val_precision"], logs["val_recall"]) == (1.0, 0.5)
    assert logs["val_onset_precision"] == pytest.approx(3 / 5)
    assert logs["val_onset_recall"] == pytest.approx(3 / 6)
    assert logs["val_onset_f1"] == pytest.approx(6 / 11)
    frames_only = FrameMetrics(ArrayBatches([(x1, frames1)]))  # no onset targets: no onset keys
    frames_only.set_model(identity_heads())
    plain: dict[str, float] = {}
    frames_only.on_epoch_end(0, plain)
    assert set(plain) == {"val_precision", "val_recall", "val_f1"}
    diverged = {"loss": float("inf")}
    callback.on_epoch_end(1, diverged)
    assert diverged["val_onset_f1"] == 0.0 and diverged["val_f1"] == 0.0


def test_thresholds_default_to_decoding_config() -> None:
    metrics = FrameMetrics(toy_split(1, 0))
    assert (metrics.threshold, metrics.onset_threshold) == (
        DecodingConfig().threshold,
        DecodingConfig().onset_threshold,
    )
    assert "threshold" not in {f for f in TrainConfig.__dataclass_fields__}


VARIANTS = {
    "seed": (ModelConfig(lstm_units=8, dense_units=8), 84),
    "conv": (ModelConfig(lstm_units=8, dense_units=8, conv_layers=3, conv_filters=4, conv_dense_units=16), 84),
    "onsets": (ModelConfig(lstm_units=8, dense_units=0, onset_head=True, onset_lstm_units=6), 84),
    "conv+onsets, 36 bins per octave": (
        ModelConfig(
            lstm_units=8, bidirectional=True, conv_layers=2, conv_filters=4, conv_dense_units=16, onset_head=True
        ),
        252,
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_two_step_fit_on_random_arrays(variant: str) -> None:
    config, bins = VARIANTS[variant]
    rng = np.random.default_rng(0)
    x = rng.random((16, 24, bins), dtype=np.float32)
    frames = (rng.random((16, 24, 88)) > 0.8).astype(np.float32)
    onsets = widen_onsets((rng.random((16, 24, 88)) > 0.95).astype(np.uint8), 2).astype(np.float32)
    y = {"frames": frames, "onsets": onsets} if config.onset_head else frames
    train_cfg = TrainConfig(batch_size=8, epochs=1)
    model = build_model(config, train_cfg, n_bins=bins)
    history = fit(model, (x, y), (x[:4], _first(y, 4)), train_cfg, [], verbose=0).history
    assert int(model.optimizer.iterations) == 2
    assert np.isfinite(history["loss"][0]) and np.isfinite(history["val_loss"][0])
    assert ("val_onset_f1" in history) == config.onset_head
    if config.onset_head:
        assert {"frames_loss", "onsets_loss"} <= set(history)


def _first(y: np.ndarray | dict[str, np.ndarray], n: int) -> np.ndarray | dict[str, np.ndarray]:
    return {k: v[:n] for k, v in y.items()} if isinstance(y, dict) else y[:n]


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


DETERMINISTIC = """
import dataclasses, numpy as np
from pianotx.config import ModelConfig, TrainConfig
from pianotx.train import release_memory, train
rng = np.random.default_rng(0)
x = rng.random((16, 32, 84), dtype=np.float32)
y = (rng.random((16, 32, 88)) > 0.9).astype(np.float32)
config = TrainConfig(learning_rate=2.0e-2, batch_size=8, epochs=1, deterministic=True)
weights = []
for _ in range(2):
    release_memory()
    model, _ = train(ModelConfig(lstm_units=16, dense_units=16, dropout=0.0, recurrent_dropout=0.0), config,
                     (x, y), (x[:4], y[:4]), verbose=0)
    weights.append(np.concatenate([w.ravel() for w in model.get_weights()]))
print(np.array_equal(weights[0], weights[1]))
"""


@pytest.mark.slow
def test_deterministic_training_repeats_exactly():
    import subprocess
    import sys

    # in a process of its own: TensorFlow's op determinism cannot be switched off again
    out = subprocess.run([sys.executable, "-c", DETERMINISTIC], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "True"


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


def test_backup_interrupted_while_saving_keeps_the_previous_epoch(tmp_path: Path) -> None:
    from pianotx.train import SafeBackupAndRestore

    backup = tmp_path / "backup"
    model = build_model(TINY, FAST, n_bins=88)
    callback = SafeBackupAndRestore(str(backup), delete_checkpoint=False)
    fit(model, toy_split(2, 0), toy_split(1, 1), FAST, [callback], verbose=0)
    before = (backup / "latest.weights.h5").read_bytes()

    def torn_save(filepath: str, overwrite: bool = True) -> None:
        Path(filepath).write_bytes(b"half a file")
        raise KeyboardInterrupt("signal 15")  # what the CLI's SIGTERM handler raises

    model.save_weights = torn_save  # type: ignore[method-assign]
    with pytest.raises(KeyboardInterrupt):
        callback.on_epoch_end(2)
    assert (backup / "latest.weights.h5").read_bytes() == before
    assert sorted(p.name for p in backup.iterdir()) == ["latest.weights.h5", "training_metadata.json"]
    assert json.loads((backup / "training_metadata.json").read_text())["epoch"] == 2


@pytest.mark.parametrize("onsets", [False, True])
def test_one_validation_pass_gives_the_losses_keras_validation_would(onsets: bool) -> None:
    from pianotx.model import loss_weights
    from pianotx.train import validation_pass

    cfg = TrainConfig(batch_size=8, onset_loss_weight=0.5)
    model = build_model(ModelConfig(lstm_units=8, dense_units=0, onset_head=onsets), cfg, n_bins=88)
    rng = np.random.default_rng(0)
    x = rng.random((12, 20, 88)).astype(np.float32)
    frames = (rng.random((12, 20, 88)) > 0.8).astype(np.float32)
    y = {"frames": frames, "onsets": (rng.random((12, 20, 88)) > 0.95).astype(np.float32)} if onsets else frames
    for batch in (12, 8):  # one batch; batches of 8 and 4, whose losses are weighted by size
        keras_logs = model.evaluate(x, y, batch_size=batch, return_dict=True, verbose=0)
        _, losses = validation_pass(model, (x, y), batch_size=batch, weights=loss_weights(cfg))
        assert sorted(losses) == (["frames_loss", "loss", "onsets_loss"] if onsets else ["loss"])
        assert losses["loss"] == pytest.approx(keras_logs["loss"], rel=1e-6)
        if onsets:
            assert losses["loss"] == pytest.approx(losses["frames_loss"] + 0.5 * losses["onsets_loss"], rel=1e-9)
        if onsets and batch == 12:  # Keras' own per-output means are off for unequal batches
            assert losses["frames_loss"] == pytest.approx(keras_logs["frames_loss"], rel=1e-6)
            assert losses["onsets_loss"] == pytest.approx(keras_logs["onsets_loss"], rel=1e-6)
    release_memory()
