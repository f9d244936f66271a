from pathlib import Path

import numpy as np

from pianotx.config import ChunkConfig, FeatureConfig
from pianotx.store import chunk, write_split


def test_chunk_pads_last_partial_chunk_with_zeros():
    a = np.arange(1, 11, dtype=np.float32).reshape(10, 1)
    out = chunk(a, ChunkConfig(chunk_frames=4))
    assert out.shape == (3, 4, 1)
    assert out[:, :, 0].tolist() == [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 0, 0]]
    assert chunk(np.ones((1, 2)), ChunkConfig(chunk_frames=4)).tolist() == [[[1, 1], [0, 0], [0, 0], [0, 0]]]
    assert chunk(np.ones((8, 2)), ChunkConfig(chunk_frames=4)).shape == (2, 4, 2)


def test_write_split_streams_pieces_into_shards(tmp_path):
    files = []
    for i, n in enumerate([3, 4, 2]):
        f = tmp_path / f"{i}.npz"
        base = np.full((n, 2, 84), i, np.float32)
        np.savez(f, features=base, frames=np.full((n, 2, 88), i, np.uint8), onsets=np.zeros((n, 2, 88), np.uint8))
        files.append(f)
    shards = write_split(tmp_path / "train", files, shard_chunks=4)
    assert shards == [{"index": 0, "chunks": 4}, {"index": 1, "chunks": 4}, {"index": 2, "chunks": 1}]
    got = np.concatenate([np.load(tmp_path / "train" / f"features-{i:03d}.npy")[:, 0, 0] for i in range(3)])
    assert got.tolist() == [0, 0, 0, 1, 1, 1, 1, 2, 2]


def test_a_dataset_opens_from_anywhere_and_moves_with_its_inputs(tmp_path, monkeypatch):
    """Input paths are recorded relative to the dataset: built from a relative path in
    one folder, it is read from another, and again after the tree moves; a missing
    input is one error naming the file."""
    import shutil

    import pytest
    from conftest import melody, write_pair

    from pianotx.build import build_dataset
    from pianotx.config import BuildConfig
    from pianotx.evaluate import split_rolls
    from pianotx.features import file_features
    from pianotx.store import DatasetError, load_manifest

    project = tmp_path / "project"
    for i in range(4):
        write_pair(project / "pairs", f"p{i}", melody(i, seconds=3.0))
    monkeypatch.chdir(project)
    build_dataset(Path("pairs"), Path("ds"), BuildConfig(), workers=1, progress=False, log=lambda _: None)
    manifest = load_manifest(project / "ds")
    record = manifest.pieces()[0]
    assert record["audio"] == f"../pairs/{record['name']}.wav" and record["midi"] == f"../pairs/{record['name']}.mid"
    monkeypatch.chdir(tmp_path)
    assert manifest.input_path(record) == project / "ds" / ".." / "pairs" / f"{record['name']}.wav"
    shutil.move(project, tmp_path / "moved")
    moved = load_manifest(tmp_path / "moved" / "ds")
    path = moved.input_path(record)
    assert path.is_file() and path.resolve() == tmp_path / "moved" / "pairs" / f"{record['name']}.wav"
    other = FeatureConfig(n_bins=72)  # other features than the dataset's: read from the audio
    split = moved.pieces()[0]["split"]
    (name, rolls, _), *_ = split_rolls(lambda x: np.zeros((len(x), 88), np.float32), moved, split, 1, other)
    assert rolls["frames"].shape[0] == len(file_features(path, other)[0])
    path.unlink()
    with pytest.raises(DatasetError) as err:
        moved.input_path(record)
    assert str(err.value) == (
        f"{tmp_path / 'moved' / 'ds' / '..' / 'pairs' / (record['name'] + '.wav')}: no such file "
        f"(the audio of piece {record['name']!r} of {tmp_path / 'moved' / 'ds' / 'manifest.json'})"
    )
