"""On-disk dataset: chunk shards per split plus ``manifest.json``.

Layout of a built dataset ``OUT``::

    OUT/manifest.json
    OUT/<split>/features-000.npy   (chunks, chunk_frames, n_bins) float32, memory-mappable
    OUT/<split>/frames-000.npy     (chunks, chunk_frames, 88) uint8, 1 = key sounding
    OUT/<split>/onsets-000.npy     (chunks, chunk_frames, 88) uint8, 1 = note starts here
    OUT/<split>/notes.npz          aligned reference notes of every piece of the split

A piece of ``n`` frames becomes ``ceil(n / chunk_frames)`` consecutive chunks, the last
zero-padded (silence with no notes). Each piece's first
chunk index within its split and its chunk count are in the manifest, so a piece can
be reassembled: ``concatenate(chunks)[:n_frames]``.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pianotx.config import BuildConfig, ChunkConfig, FeatureConfig, from_dict
from pianotx.errors import PianotxError
from pianotx.files import OwnedFolder
from pianotx.midi import Notes

MANIFEST = "manifest.json"
MANIFEST_VERSION = 3
SPLITS = ("train", "validation", "test")
HELD_OUT_SPLIT = "test"  # what `pianotx evaluate` scores unless told
ARRAYS = ("features", "frames", "onsets")


class DatasetError(PianotxError, ValueError):
    """A dataset folder is missing or malformed."""


def dataset_files(data: Any) -> list[str] | None:
    """Every file of the dataset a parsed ``manifest.json`` describes (relative paths:
    the manifest, each split's ``notes.npz`` and the three arrays of each shard it
    lists), or None when ``data`` is not a pianotx dataset manifest (version 1 to
    :data:`MANIFEST_VERSION`, all of one layout)."""
    if not isinstance(data, dict):
        return None
    version, splits = data.get("version"), data.get("splits")
    if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= MANIFEST_VERSION:
        return None
    if not isinstance(data.get("fingerprint"), str) or not isinstance(data.get("pieces"), list):
        return None
    if not isinstance(data.get("config"), dict) or not isinstance(splits, dict) or not set(splits) <= set(SPLITS):
        return None
    files = [MANIFEST]
    for split, info in splits.items():
        shards = info.get("shards") if isinstance(info, dict) else None
        if not isinstance(shards, list):
            return None
        files.append(f"{split}/notes.npz")
        for shard in shards:
            index = shard.get("index") if isinstance(shard, dict) else None
            if not isinstance(index, int) or isinstance(index, bool) or index < 0:
                return None
            files += [f"{split}/{key}-{index:03d}.npy" for key in ARRAYS]
    return files


DATASET_FOLDER = OwnedFolder(MANIFEST, dataset_files)  # how `pianotx data build` knows a dataset it made


def chunk(array: np.ndarray, config: ChunkConfig) -> np.ndarray:
    """Cut (n, d) frames into (ceil(n / chunk_frames), chunk_frames, d) chunks, the last
    zero-padded (zero features are silence, zero labels no notes)."""
    size = config.chunk_frames
    count = -(-len(array) // size)
    out = np.zeros((count, size) + array.shape[1:], array.dtype)
    out.reshape((count * size,) + array.shape[1:])[: len(array)] = array
    return out


def write_split(split_dir: Path, piece_files: list[Path], shard_chunks: int) -> list[dict[str, Any]]:
    """Concatenate per-piece chunk files (``.npz`` of features/frames/onsets) into shards.

    Streams one piece at a time into memory-mapped shards; returns the shard list for
    the manifest: ``[{"index": i, "chunks": c}]``.
    """
    split_dir.mkdir(parents=True, exist_ok=True)
    counts = []
    for path in piece_files:
        with np.load(path) as z:
            counts.append(z["features"].shape[0])
    total = sum(counts)
    shards: list[dict[str, Any]] = []
    piece_iter = iter(zip(piece_files, counts))
    pending: dict[str, np.ndarray] | None = None
    for index, start in enumerate(range(0, total, shard_chunks)):
        size = min(shard_chunks, total - start)
        maps: dict[str, np.memmap] = {}
        filled = 0
        while filled < size:
            if pending is None:
                path, _ = next(piece_iter)
                with np.load(path) as z:
                    pending = {k: z[k] for k in ARRAYS}
            take = min(size - filled, len(pending["features"]))
            for key in ARRAYS:
                if key not in maps:
                    shape = (size,) + pending[key].shape[1:]
                    maps[key] = np.lib.format.open_memmap(
                        split_dir / f"{key}-{index:03d}.npy", "w+", pending[key].dtype, shape
                    )
                maps[key][filled : filled + take] = pending[key][:take]
                pending[key] = pending[key][take:]
            filled += take
            if len(pending["features"]) == 0:
                pending = None
        for m in maps.values():
            m.flush()
        del maps
        shards.append({"index": index, "chunks": size})
    return shards


@dataclass(frozen=True)
class Manifest:
    """A loaded ``manifest.json`` (the raw dict plus typed accessors)."""

    root: Path
    data: dict[str, Any]

    @property
    def features(self) -> FeatureConfig:
        return from_dict(FeatureConfig, self.data["config"]["features"], f"{self.root / MANIFEST} features")

    @property
    def config(self) -> BuildConfig:
        cfg = self.data["config"]
        from pianotx.config import AlignConfig, LabelConfig, SplitConfig

        where = str(self.root / MANIFEST)
        return BuildConfig(
            features=self.features,
            labels=from_dict(LabelConfig, cfg["labels"], where),
            align=from_dict(AlignConfig, cfg["align"], where),
            chunks=from_dict(ChunkConfig, cfg["chunks"], where),
            splits=from_dict(SplitConfig, cfg["splits"], where),
        )

    @property
    def feature_stats(self) -> tuple[list[float], list[float]]:
        """Per-bin (mean, std) of the training split's features."""
        stats = self.data["splits"]["train"]["feature_stats"]
        return stats["mean"], stats["std"]

    @property
    def chunk_frames(self) -> int:
        return self.config.chunks.chunk_frames

    def input_path(self, record: dict[str, Any], key: str = "audio") -> Path:
        """A piece's audio (or ``key="midi"``) file. Datasets record it relative to the
        dataset folder, so a dataset opens from any working folder and moves with its
        inputs; then relative to the folder it was built in (a dataset copied without its
        inputs); older ones recorded it as given to ``data build`` (relative to the folder
        it ran in, or absolute), tried last.

        Raises:
            DatasetError: neither exists (naming the file and the dataset).
        """
        given = Path(record[key])
        built_in = self.data.get("built_in")
        if given.is_absolute():
            candidates = [given]
        else:
            candidates = [self.root / given, *([Path(built_in) / given] if isinstance(built_in, str) else []), given]
        for path in candidates:
            if path.is_file():
                return path
        raise DatasetError(
            f"{candidates[0]}: no such file (the {key} of piece {record.get('name')!r} of {self.root / MANIFEST})"
        )

    def pieces(self, split: str | None = None) -> list[dict[str, Any]]:
        """Included pieces (of one split, or all), in chunk order."""
        return [p for p in self.data["pieces"] if not p["excluded"] and (split is None or p["split"] == split)]


def load_manifest(root: str | Path) -> Manifest:
    """Read ``root/manifest.json``.

    Raises:
        DatasetError: no manifest, unreadable, or of another version.
    """
    root = Path(root)
    path = root / MANIFEST
    if not path.is_file():
        raise DatasetError(f"{root}: not a pianotx dataset (no {MANIFEST}); run `pianotx data build`")
    try:
        data = json.loads(path.read_text())
    except ValueError as exc:
        raise DatasetError(f"{path}: unreadable manifest ({exc})") from exc
    if data.get("version") != MANIFEST_VERSION:
        raise DatasetError(f"{path}: manifest version {data.get('version')} is not {MANIFEST_VERSION}; rebuild")
    return Manifest(root, data)


@functools.lru_cache(maxsize=64)
def _open_shard(folder: str, index: int, fingerprint: str) -> dict[str, np.ndarray]:
    """Memory maps of one shard, shared by every loader of the process: each search trial
    makes new loaders, and fresh maps per trial kept ~85 MiB per trial resident."""
    return {k: np.load(Path(folder) / f"{k}-{index:03d}.npy", mmap_mode="r") for k in ARRAYS}


class SplitArrays:
    """Memory-mapped chunks of one split; nothing is read until indexed.

    ``get(indices)`` returns ``(features, frames, onsets)`` for chunk indices of the
    split: (k, chunk_frames, n_bins) float32 and (k, chunk_frames, 88) uint8 twice.
    """

    def __init__(self, manifest: Manifest, split: str):
        if split not in SPLITS:
            raise DatasetError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
        info = manifest.data["splits"][split]
        folder = manifest.root / split
        self.manifest = manifest
        self.split = split
        where = manifest.root / MANIFEST
        try:
            shards = [(int(s["index"]), int(s["chunks"])) for s in info.get("shards", [])]
            self.shards = [_open_shard(str(folder.resolve()), i, manifest.data["fingerprint"]) for i, _ in shards]
        except (KeyError, TypeError, ValueError) as exc:
            raise DatasetError(f"{where}: malformed shard list of the {split} split ({exc})") from exc
        except OSError as exc:
            raise DatasetError(f"{exc.filename or folder}: shard missing or unreadable; rebuild the dataset") from exc
        for (index, size), maps in zip(shards, self.shards):
            if any(len(a) != size for a in maps.values()):
                raise DatasetError(f"{folder}: shard {index} does not hold the {size} chunks {where} lists; rebuild")
        sizes = [size for _, size in shards]
        self.starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self.n_chunks = int(self.starts[-1])

    def get(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        indices = np.asarray(indices, np.int64)
        order = np.argsort(indices, kind="stable")  # read each shard in ascending order
        shard_of = np.searchsorted(self.starts, indices[order], side="right") - 1
        parts: dict[str, list[np.ndarray]] = {k: [] for k in ARRAYS}
        for s in np.unique(shard_of):
            local = indices[order][shard_of == s] - self.starts[s]
            for key in ARRAYS:
                parts[key].append(self.shards[s][key][local])
        inverse = np.empty_like(order)
        inverse[order] = np.arange(len(order))
        out = [np.concatenate(parts[k])[inverse] for k in ARRAYS]
        return out[0].astype(np.float32, copy=False), out[1], out[2]

    def piece(self, record: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """A whole piece: (n_frames, n_bins) features, (n_frames, 88) frames and onsets."""
        start, count, n = self.chunk_range(record)
        arrays = self.get(np.arange(start, start + count))
        return tuple(a.reshape((-1,) + a.shape[2:])[:n] for a in arrays)  # type: ignore[return-value]

    def chunk_range(self, record: dict[str, Any]) -> tuple[int, int, int]:
        """A piece's first chunk, chunk count and frame count, checked against the shards.

        Raises:
            DatasetError: a manifest whose record does not fit this split's shards.
        """
        where, name = self.manifest.root / MANIFEST, record.get("name")
        values = [record.get(k) for k in ("chunk_start", "n_chunks", "n_frames")]
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            raise DatasetError(f"{where}: piece {name!r} has no integer chunk range")
        start, count, n = (int(v) for v in values)  # type: ignore[arg-type]
        if start < 0 or count < 1 or start + count > self.n_chunks or n > count * self.manifest.chunk_frames:
            raise DatasetError(f"{where}: piece {name!r} lies outside the {self.split} shards")
        return start, count, n

    def notes(self, name: str) -> Notes:
        """The aligned reference notes of piece ``name`` (seconds on the audio's clock)."""
        ((_, notes),) = self.notes_of([name])
        return notes

    def notes_of(self, names: list[str]) -> Iterator[tuple[str, Notes]]:
        """``(name, notes)`` of each piece named, reading ``notes.npz`` once.

        Raises:
            DatasetError: a piece without notes, or an unreadable file.
        """
        path = self.manifest.root / self.split / "notes.npz"
        name = ""
        try:
            with np.load(path) as z:
                for name in names:
                    yield name, Notes.from_arrays({k: z[f"{name}/{k}"] for k in ("intervals", "pitches", "velocities")})
        except KeyError as exc:
            raise DatasetError(f"{path}: no reference notes for piece {name!r}; rebuild the dataset") from exc
        except (OSError, ValueError) as exc:
            raise DatasetError(f"{path}: unreadable reference notes ({exc})") from exc
