"""Streaming batches of chunks for Keras: never loads a split into RAM.

Imports Keras at module level: import it only where training happens.
"""

from __future__ import annotations

import math
from pathlib import Path

import keras
import numpy as np

from pianotx.store import SplitArrays, load_manifest


class ChunkDataset(keras.utils.PyDataset):
    """Shuffled batches ``(x, y)`` from a split's memory-mapped shards.

    x: (batch, chunk_frames, n_bins) float32 features; y: (batch, chunk_frames, 88)
    float32 frame labels. Each epoch visits every chunk once in a new seeded order
    (``shuffle=False``: split order). Only the chunks of the current batch are read.
    """

    def __init__(
        self,
        dataset_dir: str | Path,
        split: str,
        batch_size: int,
        shuffle: bool = True,
        seed: int = 0,
        limit_batches: int = 0,
        workers: int = 1,
    ):
        super().__init__(workers=workers, use_multiprocessing=False)
        self.arrays = SplitArrays(load_manifest(dataset_dir), split)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.rng = np.random.default_rng(seed)
        self.limit_batches = limit_batches
        self.order = np.arange(self.arrays.n_chunks)
        self.on_epoch_end()

    def __len__(self) -> int:
        n = math.ceil(self.arrays.n_chunks / self.batch_size)
        return min(n, self.limit_batches) if self.limit_batches else n

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        idx = self.order[index * self.batch_size : (index + 1) * self.batch_size]
        features, frames, _ = self.arrays.get(idx)
        return features, frames.astype(np.float32)

    def on_epoch_end(self) -> None:
        if self.shuffle:
            self.rng.shuffle(self.order)
