import numpy as np

from pianotx.config import ChunkConfig
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
