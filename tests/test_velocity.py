"""The velocity head: targets, loss, model, training only it, decoding and scoring."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import keras
import numpy as np
import pytest

from pianotx.build import build_dataset
from pianotx.config import BuildConfig, ChunkConfig, DecodingConfig, ModelConfig, TrainConfig
from pianotx.decoding import decode, decode_rolls
from pianotx.evaluate import GROUPS, METRIC_KEYS, evaluate_piece, velocity_scores
from pianotx.labels import notes_to_rolls, notes_to_velocities
from pianotx.loader import ChunkDataset, VelocityTargets
from pianotx.midi import Notes
from pianotx.model import OnsetVelocityLoss, build_model, freeze, output_heads, output_names
from pianotx.store import SplitArrays, load_manifest

QUIET = {"workers": 1, "progress": False, "log": lambda m: None}
SMALL = ModelConfig(lstm_units=16, dense_units=8, dropout=0.0, recurrent_dropout=0.0, velocity_units=8)


def test_velocity_targets_sit_on_the_onset_cells() -> None:
    notes = Notes.from_lists(
        [[0.0, 0.5], [0.0, 0.2], [0.1, 0.3], [0.1, 0.4], [0.9, 0.95], [2.0, 2.5]],
        [21, 60, 60, 108, 60, 60],
        [90, 30, 100, 127, 55, 99],
    )
    vel = notes_to_velocities(notes, 10, frame_rate=10.0)
    _, onsets = notes_to_rolls(notes, 10, 10.0)
    assert vel.dtype == np.uint8 and vel.shape == (10, 88)
    np.testing.assert_array_equal(vel > 0, onsets > 0)
    assert (vel[0, 0], vel[0, 39], vel[1, 39], vel[1, 87], vel[9, 39]) == (90, 30, 100, 127, 55)
    assert vel.sum() == 90 + 30 + 100 + 127 + 55
    both = Notes.from_lists([[0.0, 0.1], [0.02, 0.3]], [60, 60], [40, 70])  # one frame, two onsets
    assert notes_to_velocities(both, 3, 10.0)[0, 39] == 70


def test_onset_velocity_loss_by_hand() -> None:
    y = np.zeros((2, 2, 2), np.float32)
    y[0, 0, 0], y[1, 1, 0] = 0.5, 1.0
    p = np.full_like(y, 0.25)
    loss = float(keras.ops.convert_to_numpy(OnsetVelocityLoss()(y, p)))
    assert loss == pytest.approx((0.25**2 + 0.75**2) / 2)
    assert float(keras.ops.convert_to_numpy(OnsetVelocityLoss()(np.zeros_like(y), p))) == 0.0  # no onsets
    restored = OnsetVelocityLoss.from_config(OnsetVelocityLoss().get_config())
    assert float(keras.ops.convert_to_numpy(restored(y, p))) == pytest.approx(loss)


@pytest.mark.parametrize(
    ("onset_head", "extra"), [(False, (84 * 8 + 8) + (8 * 88 + 88)), (True, (100 * 8 + 8) + (8 * 88 + 88))]
)
def test_velocity_head_outputs_and_parameters(onset_head: bool, extra: int) -> None:
    base = build_model(replace(SMALL, onset_head=onset_head), TrainConfig())
    net = build_model(replace(SMALL, onset_head=onset_head, velocity_head=True), TrainConfig())
    assert net.count_params() - base.count_params() == extra
    assert output_names(net) == (("frames", "onsets", "velocities") if onset_head else ("frames", "velocities"))
    heads = output_heads(net.predict_on_batch(np.zeros((2, 5, 84), np.float32)))
    assert sorted(heads) == sorted(output_names(net))
    assert heads["velocities"].shape == (2, 5, 88) and heads["velocities"].dtype == np.float32
    assert set(net.loss) == set(output_names(net))


def test_velocity_lstm_hears_the_onsets_in_context() -> None:
    base = build_model(SMALL, TrainConfig())
    net = build_model(replace(SMALL, velocity_head=True, velocity_lstm_units=4), TrainConfig())
    assert net.count_params() - base.count_params() == 4 * 4 * (84 + 4 + 1) + (4 * 8 + 8) + (8 * 88 + 88)
    bi = build_model(replace(SMALL, velocity_head=True, velocity_lstm_units=4, bidirectional=True), TrainConfig())
    assert bi.get_layer("velocity_bilstm").count_params() == 2 * 4 * 4 * (84 + 4 + 1)
    frozen = build_model(
        replace(SMALL, velocity_head=True, velocity_lstm_units=4, bidirectional=True),
        TrainConfig(train_layers="velocity"),
    )
    assert sorted({w.path.split("/")[0] for w in frozen.trainable_weights}) == [
        "velocities",
        "velocity_bilstm",
        "velocity_hidden",
    ]


def test_train_layers_velocity_trains_only_the_velocity_head() -> None:
    net = build_model(replace(SMALL, onset_head=True, velocity_head=True), TrainConfig(train_layers="velocity"))
    trainable = sorted({w.path.split("/")[0] for w in net.trainable_weights})
    assert trainable == ["velocities", "velocity_hidden"]
    assert sorted(freeze(net, "velocity")) == ["frames", "hidden", "lstm_1", "onset_lstm_1", "onsets"]


def test_velocity_loss_moves_neither_notes_nor_onsets(tmp_path: Path) -> None:
    """Training only the velocity head on random data changes its weights and nothing else:
    the notes a model decodes stay exactly as they were."""
    keras.utils.set_random_seed(0)
    cfg = replace(SMALL, onset_head=True, velocity_head=True)
    net = build_model(cfg, TrainConfig(train_layers="velocity", learning_rate=0.01))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 12, 84)).astype(np.float32)
    vel = np.where(rng.random((4, 12, 88)) < 0.05, rng.uniform(0.2, 1.0, (4, 12, 88)), 0).astype(np.float32)
    y = {"frames": (vel > 0).astype(np.float32), "onsets": (vel > 0).astype(np.float32), "velocities": vel}
    before = {w.path: np.array(w) for w in net.weights}
    out_before = output_heads(net.predict_on_batch(x))
    net.fit(x, y, epochs=3, batch_size=4, verbose=0)
    after = {w.path: np.array(w) for w in net.weights}
    changed = sorted({p.split("/")[0] for p in before if not np.array_equal(before[p], after[p])})
    assert changed == ["velocities", "velocity_hidden"]
    out_after = output_heads(net.predict_on_batch(x))
    np.testing.assert_array_equal(out_after["frames"], out_before["frames"])
    np.testing.assert_array_equal(out_after["onsets"], out_before["onsets"])
    assert not np.array_equal(out_after["velocities"], out_before["velocities"])


def test_decoding_takes_each_notes_velocity_at_its_first_frame() -> None:
    frames = np.zeros((6, 88), np.float32)
    frames[1:4, 39] = 0.9  # one note of key 39, frames 1..3
    frames[2:6, 50] = 0.9
    velocities = np.zeros_like(frames)
    velocities[1, 39], velocities[2, 39] = 0.5, 0.99  # only the first frame counts
    velocities[2, 50] = 0.001  # clipped up to 1
    notes = decode(frames, 10.0, DecodingConfig(), velocity_probs=velocities)
    assert notes.pitches.tolist() == [60, 71]
    assert notes.velocities.tolist() == [round(127 * 0.5), 1]
    fixed = decode(frames, 10.0, DecodingConfig(velocity=77), velocity_probs=velocities)
    assert fixed.velocities.tolist() == [77, 77]
    same = decode_rolls({"frames": frames, "velocities": velocities}, 10.0)
    np.testing.assert_array_equal(same.velocities, notes.velocities)
    without = decode_rolls({"frames": frames}, 10.0)  # from the mean frame probability
    assert without.velocities.tolist() == [round(127 * 0.9)] * 2
    with pytest.raises(ValueError, match="velocity_probs shape"):
        decode(frames, 10.0, velocity_probs=velocities[:3])


def test_note_with_velocity_scores_are_mir_evals() -> None:
    ref = Notes.from_lists([[0, 1], [1, 2], [2, 3], [3, 4]], [60, 62, 64, 65], [30, 60, 90, 120])
    exact = velocity_scores(ref, ref)
    assert exact == {"precision": 1.0, "recall": 1.0, "f1": 1.0}
    # mir_eval rescales the estimates by least squares: 40, 60, 80, 127 -> one is off
    off = Notes.from_lists(ref.intervals, ref.pitches, [40, 60, 80, 127])
    assert velocity_scores(ref, off) == {"precision": 0.75, "recall": 0.75, "f1": 0.75}
    empty = Notes.from_lists(np.zeros((0, 2)), [], [])
    assert velocity_scores(ref, empty) == {"precision": 0.0, "recall": 0.0, "f1": 0.0}
    assert "note_with_velocity" in GROUPS and len(METRIC_KEYS) == 12
    scores = evaluate_piece(ref, off)
    assert scores["note_with_velocity_f1"] == 0.75 and scores["note_f1"] == 1.0


@pytest.mark.slow
def test_chunk_dataset_serves_velocity_targets_of_the_reference_notes(pairs_dir: Path, tmp_path: Path) -> None:
    build_dataset(pairs_dir, tmp_path / "ds", replace(BuildConfig(), chunks=ChunkConfig(chunk_frames=64)), **QUIET)
    manifest = load_manifest(tmp_path / "ds")
    arrays = SplitArrays(manifest, "train")
    targets = VelocityTargets(manifest, "train")
    rate = manifest.features.frame_rate
    for record in manifest.pieces("train"):
        start, count, n = arrays.chunk_range(record)
        notes = arrays.notes(record["name"])
        served = targets.get(np.arange(start, start + count)).reshape(-1, 88)
        expected = np.zeros_like(served)
        expected[:n] = notes_to_velocities(notes, n, rate) / np.float32(127.0)
        np.testing.assert_allclose(served, expected, rtol=0, atol=1e-7)
        _, _, onsets = arrays.piece(record)
        np.testing.assert_array_equal(served[:n] > 0, onsets > 0)  # exactly the onset cells
    data = ChunkDataset(manifest, "train", batch_size=3, shuffle=False, onsets=True, velocities=True)
    x, y = data[1]
    assert sorted(y) == ["frames", "onsets", "velocities"]
    np.testing.assert_array_equal(y["velocities"], targets.get(np.arange(3, 6)))
    assert y["velocities"].max() <= 1.0 and y["velocities"].sum() > 0
    net = build_model(replace(SMALL, onset_head=True, velocity_head=True), TrainConfig(), n_bins=x.shape[-1])
    history = net.fit(data, epochs=1, verbose=0)
    assert np.isfinite(history.history["velocities_loss"][0])
