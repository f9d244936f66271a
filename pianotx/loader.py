"""Streaming batches of chunks for Keras: never loads a split into RAM.

Imports Keras at module level: import it only where training happens.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from pathlib import Path

import keras
import numpy as np

from pianotx.store import Manifest, SplitArrays, load_manifest

Targets = np.ndarray | dict[str, np.ndarray]


def widen_onsets(onsets: np.ndarray, width: int) -> np.ndarray:
    """Mark each onset's first ``width`` frames, so short training can find them.

    Cell ``t`` of a key is on when any of cells ``t - width + 1 .. t`` is an onset, so the
    rising edge stays at the true onset frame. Widening stays inside the array: an onset
    in a chunk's last frames does not spill into the next chunk.

    Args:
        onsets: (..., time, 88) uint8 (or bool) onset roll, 1 at each note's first frame.
        width: frames marked per onset, >= 1 (1 returns a copy).

    Returns:
        (..., time, 88) array of the same dtype.
    """
    if width < 1:
        raise ValueError(f"onset width must be >= 1, got {width}")
    out = np.array(onsets, copy=True)
    for shift in range(1, min(width, onsets.shape[-2])):
        out[..., shift:, :] |= onsets[..., :-shift, :]
    return out


def piece_chunks(manifest: Manifest, split: str, pieces: Collection[str]) -> np.ndarray:
    """Chunk indices (ascending, int64) of the named pieces of a split.

    Raises:
        ValueError: a name that is not a piece of that split.
    """
    wanted = set(pieces)
    records = [p for p in manifest.pieces(split) if p["name"] in wanted]
    missing = sorted(wanted - {p["name"] for p in records})
    if missing:
        raise ValueError(f"not pieces of the {split} split: {', '.join(missing[:5])}")
    spans = [np.arange(p["chunk_start"], p["chunk_start"] + p["n_chunks"]) for p in records]
    return np.sort(np.concatenate(spans)).astype(np.int64) if spans else np.zeros(0, np.int64)


class ChunkDataset(keras.utils.PyDataset):
    """Shuffled batches ``(x, y)`` from a split's memory-mapped shards.

    x: (batch, chunk_frames, n_bins) float32 features. y: (batch, chunk_frames, 88)
    float32 frame labels (1 = key sounding), or with ``onsets`` the dict
    ``{"frames": ..., "onsets": ...}`` whose onsets (same shape, float32) are the note
    onsets widened by :func:`widen_onsets` (for a model with an onset head). Each epoch
    visits every chunk once in a new seeded order (``shuffle=False``: split order). Only
    the chunks of the current batch are read.

    Args:
        dataset_dir: a built dataset (see :mod:`pianotx.build`).
        split: ``train``, ``validation`` or ``test``.
        batch_size: chunks per batch (the last batch may be smaller).
        shuffle: new seeded order every epoch.
        seed: shuffling seed.
        limit_batches: serve at most this many batches per epoch (0: all).
        workers: PyDataset worker threads.
        onsets: yield the dict with onset targets as well.
        onset_width: frames marked per onset (``TrainConfig.onset_width``).
        pieces: serve only the chunks of these pieces of the split (names as in the
            manifest; None: every piece), e.g. to measure what part of a corpus is worth.
    """

    def __init__(
        self,
        dataset_dir: str | Path | Manifest,
        split: str,
        batch_size: int,
        shuffle: bool = True,
        seed: int = 0,
        limit_batches: int = 0,
        workers: int = 1,
        onsets: bool = False,
        onset_width: int = 1,
        pieces: Collection[str] | None = None,
    ):
        super().__init__(workers=workers, use_multiprocessing=False)
        if onset_width < 1:
            raise ValueError(f"onset_width must be >= 1, got {onset_width}")
        manifest = dataset_dir if isinstance(dataset_dir, Manifest) else load_manifest(dataset_dir)
        self.arrays = SplitArrays(manifest, split)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.rng = np.random.default_rng(seed)
        self.limit_batches = limit_batches
        self.onsets = onsets
        self.onset_width = onset_width
        self.order = np.arange(self.arrays.n_chunks) if pieces is None else piece_chunks(manifest, split, pieces)
        self.n_chunks = len(self.order)
        self.on_epoch_end()

    def __len__(self) -> int:
        n = math.ceil(self.n_chunks / self.batch_size)
        return min(n, self.limit_batches) if self.limit_batches else n

    def __getitem__(self, index: int) -> tuple[np.ndarray, Targets]:
        idx = self.order[index * self.batch_size : (index + 1) * self.batch_size]
        features, frames, onsets = self.arrays.get(idx)
        if not self.onsets:
            return features, frames.astype(np.float32)
        wide = widen_onsets(onsets, self.onset_width).astype(np.float32)
        return features, {"frames": frames.astype(np.float32), "onsets": wide}

    def on_epoch_end(self) -> None:
        if self.shuffle:
            self.rng.shuffle(self.order)
