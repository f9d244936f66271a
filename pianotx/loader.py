"""Streaming batches of chunks for Keras: never loads a split into RAM.

Imports Keras at module level: import it only where training happens.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Collection
from pathlib import Path

import keras
import numpy as np

from pianotx.config import MIDI_MIN, N_KEYS
from pianotx.labels import note_frames
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


class VelocityTargets:
    """Velocity targets of a split's chunks, from its reference notes (``notes.npz``):
    datasets store no velocity roll, and none is needed, since the notes the rolls were
    made from are kept with their velocities.

    ``get(indices)`` gives (k, chunk_frames, 88) float32: MIDI velocity / 127 at each
    note's onset cell (as :func:`pianotx.labels.notes_to_velocities`), 0 elsewhere.
    Only the onsets (frame, key, velocity) are held: a few bytes per note.
    """

    def __init__(self, manifest: Manifest, split: str):
        arrays = SplitArrays(manifest, split)
        size = manifest.chunk_frames
        rate = manifest.features.frame_rate
        where, keys, values = [], [], []
        records = {r["name"]: r for r in manifest.pieces(split)}
        for name, notes in arrays.notes_of(list(records)):
            start, _, n_frames = arrays.chunk_range(records[name])
            first, _ = note_frames(notes, rate)
            inside = (first >= 0) & (first < n_frames)
            where.append(start * size + first[inside])
            keys.append(notes.pitches[inside] - MIDI_MIN)
            values.append(np.clip(notes.velocities[inside], 1, 127))

        def cat(parts: list[np.ndarray]) -> np.ndarray:
            return np.concatenate(parts) if parts else np.zeros(0, np.int64)

        frame, key, value = cat(where), cat(keys), cat(values)
        order = np.argsort(frame, kind="stable")
        self.frame, self.key, self.value = frame[order], key[order], (value[order] / 127.0).astype(np.float32)
        self.chunk_frames = size

    def get(self, indices: np.ndarray) -> np.ndarray:
        indices = np.asarray(indices, np.int64)
        size = self.chunk_frames
        out = np.zeros((len(indices), size, N_KEYS), np.float32)
        lo = np.searchsorted(self.frame, indices * size)
        hi = np.searchsorted(self.frame, (indices + 1) * size)
        for row, (a, b, c) in enumerate(zip(lo, hi, indices)):
            cells = (self.frame[a:b] - c * size, self.key[a:b])
            np.maximum.at(out[row], cells, self.value[a:b])
        return out


@functools.lru_cache(maxsize=8)
def _velocity_targets(root: str, split: str, fingerprint: str) -> VelocityTargets:
    """One :class:`VelocityTargets` per split per process (each search trial makes new loaders)."""
    return VelocityTargets(load_manifest(root), split)


def velocity_targets(manifest: Manifest, split: str) -> VelocityTargets:
    """The split's velocity targets, built once per process."""
    return _velocity_targets(str(manifest.root.resolve()), split, manifest.data["fingerprint"])


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
        velocities: add ``"velocities"`` to the dict (see :class:`VelocityTargets`), for
            a model with a velocity head.
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
        velocities: bool = False,
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
        self.velocities = velocity_targets(manifest, split) if velocities else None
        self.order = np.arange(self.arrays.n_chunks) if pieces is None else piece_chunks(manifest, split, pieces)
        self.n_chunks = len(self.order)
        self.on_epoch_end()

    def __len__(self) -> int:
        n = math.ceil(self.n_chunks / self.batch_size)
        return min(n, self.limit_batches) if self.limit_batches else n

    def __getitem__(self, index: int) -> tuple[np.ndarray, Targets]:
        idx = self.order[index * self.batch_size : (index + 1) * self.batch_size]
        features, frames, onsets = self.arrays.get(idx)
        if not self.onsets and self.velocities is None:
            return features, frames.astype(np.float32)
        targets = {"frames": frames.astype(np.float32)}
        if self.onsets:
            targets["onsets"] = widen_onsets(onsets, self.onset_width).astype(np.float32)
        if self.velocities is not None:
            targets["velocities"] = self.velocities.get(idx)
        return features, targets

    def on_epoch_end(self) -> None:
        if self.shuffle:
            self.rng.shuffle(self.order)
