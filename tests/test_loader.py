"""Tests for pianotx.loader: onset widening and the targets ChunkDataset serves."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from pianotx.build import build_dataset
from pianotx.config import BuildConfig, ChunkConfig
from pianotx.loader import ChunkDataset, widen_onsets
from pianotx.store import SplitArrays, load_manifest

QUIET = {"workers": 1, "progress": False, "log": lambda m: None}


def test_widen_onsets_marks_the_first_frames_of_each_onset() -> None:
    onsets = np.zeros((6, 88), np.uint8)
    onsets[0, 0] = onsets[2, 0] = 1  # two close onsets of one key
    onsets[4, 1] = 1  # near the end: widening stops at the array's edge
    onsets[5, 87] = 1
    wide = widen_onsets(onsets, 3)
    assert wide.dtype == np.uint8 and wide.shape == (6, 88)
    np.testing.assert_array_equal(wide[:, 0], [1, 1, 1, 1, 1, 0])
    np.testing.assert_array_equal(wide[:, 1], [0, 0, 0, 0, 1, 1])
    np.testing.assert_array_equal(wide[:, 87], [0, 0, 0, 0, 0, 1])
    assert np.count_nonzero(wide[:, 2:87]) == 0
    np.testing.assert_array_equal(widen_onsets(onsets, 2)[:, 0], [1, 1, 1, 1, 0, 0])
    np.testing.assert_array_equal(widen_onsets(onsets, 1), onsets)
    assert widen_onsets(onsets, 1) is not onsets
    np.testing.assert_array_equal(widen_onsets(onsets, 50)[:, 0], [1] * 6)  # wider than the array


def test_widen_onsets_per_chunk_along_time() -> None:
    onsets = np.zeros((2, 3, 88), bool)  # (chunks, time, keys): chunks stay apart
    onsets[0, 2, 5] = onsets[1, 0, 5] = True
    wide = widen_onsets(onsets, 2)
    np.testing.assert_array_equal(wide[0, :, 5], [False, False, True])
    np.testing.assert_array_equal(wide[1, :, 5], [True, True, False])
    with pytest.raises(ValueError, match="width"):
        widen_onsets(onsets, 0)


@pytest.mark.slow
def test_chunk_dataset_serves_frames_or_frames_and_widened_onsets(pairs_dir: Path, tmp_path: Path) -> None:
    build_dataset(pairs_dir, tmp_path / "ds", replace(BuildConfig(), chunks=ChunkConfig(chunk_frames=64)), **QUIET)
    frames_only = ChunkDataset(tmp_path / "ds", "train", batch_size=4, shuffle=False)
    with_onsets = ChunkDataset(tmp_path / "ds", "train", batch_size=4, shuffle=False, onsets=True, onset_width=3)
    features, frames, onsets = SplitArrays(load_manifest(tmp_path / "ds"), "train").get(np.arange(4))
    assert onsets.sum() > 0
    x, y = frames_only[0]
    assert isinstance(y, np.ndarray) and y.dtype == np.float32
    np.testing.assert_array_equal(y, frames)
    x2, y2 = with_onsets[0]
    np.testing.assert_array_equal(x2, features)
    assert sorted(y2) == ["frames", "onsets"]
    assert y2["frames"].dtype == y2["onsets"].dtype == np.float32
    np.testing.assert_array_equal(y2["frames"], frames)
    np.testing.assert_array_equal(y2["onsets"], widen_onsets(onsets, 3))
    assert y2["onsets"].sum() > onsets.sum()
    with pytest.raises(ValueError, match="onset_width"):
        ChunkDataset(tmp_path / "ds", "train", batch_size=4, onsets=True, onset_width=0)


@pytest.mark.slow
def test_chunk_dataset_serves_only_the_pieces_asked_for(pairs_dir: Path, tmp_path: Path) -> None:
    build_dataset(pairs_dir, tmp_path / "ds", replace(BuildConfig(), chunks=ChunkConfig(chunk_frames=64)), **QUIET)
    manifest = load_manifest(tmp_path / "ds")
    train = [p for p in manifest.data["pieces"] if p.get("split") == "train"]
    assert len(train) >= 2
    last = train[-1]
    one = ChunkDataset(manifest, "train", batch_size=2, shuffle=False, pieces=[last["name"]])
    assert one.n_chunks == last["n_chunks"] and len(one) == -(-last["n_chunks"] // 2)
    features, _, _ = SplitArrays(manifest, "train").get(np.arange(last["chunk_start"], last["chunk_start"] + 2))
    np.testing.assert_array_equal(one[0][0], features[: min(2, last["n_chunks"])])
    everything = ChunkDataset(manifest, "train", batch_size=2, pieces=[p["name"] for p in train])
    assert everything.n_chunks == ChunkDataset(manifest, "train", batch_size=2).n_chunks
    assert ChunkDataset(manifest, "train", batch_size=2, pieces=[]).n_chunks == 0
    with pytest.raises(ValueError, match="not pieces of the validation split"):
        ChunkDataset(manifest, "validation", batch_size=2, pieces=[last["name"]])
