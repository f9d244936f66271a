"""Windowing helpers (pianotx.windows): exact window lists, tiling, and seam-free stitching."""

from __future__ import annotations

import numpy as np
import pytest

from pianotx.windows import Window, batch_windows, plan_batches, plan_windows, predict_rolls, stitch, stream_rolls


@pytest.mark.parametrize(
    ("n_frames", "window", "context", "expected"),
    [
        (10, 4, 2, [Window(0, 6, 0, 4), Window(2, 10, 4, 8), Window(6, 10, 8, 10)]),
        (3, 4, 2, [Window(0, 3, 0, 3)]),  # shorter than one window
        (8, 4, 0, [Window(0, 4, 0, 4), Window(4, 8, 4, 8)]),  # exact multiple, no context
        (8, 4, 1, [Window(0, 5, 0, 4), Window(3, 8, 4, 8)]),  # exact multiple
        (12, 4, 5, [Window(0, 9, 0, 4), Window(0, 12, 4, 8), Window(3, 12, 8, 12)]),
        (5, 1, 1, [Window(max(i - 1, 0), min(i + 2, 5), i, i + 1) for i in range(5)]),
        (0, 4, 2, []),
    ],
    ids=["partial-last", "short", "multiple", "multiple-context", "big-context", "w1", "empty"],
)
def test_plan_windows_exact(n_frames: int, window: int, context: int, expected: list) -> None:
    assert plan_windows(n_frames, window, context) == expected


def test_plan_windows_rejects_bad_sizes() -> None:
    for args in ((-1, 4, 0), (10, 0, 0), (10, 4, -1)):
        with pytest.raises(ValueError):
            plan_windows(*args)


def test_kept_ranges_tile_and_context_is_clipped() -> None:
    for n_frames in range(0, 41):
        for window in range(1, 8):
            for context in range(0, 6):
                windows = plan_windows(n_frames, window, context)
                kept = [f for w in windows for f in range(w.keep_start, w.keep_stop)]
                assert kept == list(range(n_frames))
                for w in windows:
                    assert 0 < w.keep_stop - w.keep_start <= window
                    assert w.keep_start - w.start == min(context, w.keep_start)
                    assert w.stop - w.keep_stop == min(context, n_frames - w.keep_stop)


def frame_index_outputs(windows: list[Window]) -> list[np.ndarray]:
    """Each window's output: its absolute frame indices broadcast over 88 keys."""
    return [np.repeat(np.arange(w.start, w.stop)[:, None], 88, axis=1) for w in windows]


def test_stitch_identity_like_output() -> None:
    for n_frames, window, context in ((10, 4, 2), (3, 4, 2), (100, 7, 3), (64, 16, 0)):
        windows = plan_windows(n_frames, window, context)
        roll = stitch(windows, iter(frame_index_outputs(windows)), n_frames)
        assert roll.dtype == np.float32 and roll.shape == (n_frames, 88)
        np.testing.assert_array_equal(roll, np.repeat(np.arange(n_frames)[:, None], 88, 1))


def test_stitch_errors() -> None:
    windows = plan_windows(10, 4, 2)
    outputs = frame_index_outputs(windows)
    with pytest.raises(ValueError):
        stitch(windows, outputs[:-1], 10)
    with pytest.raises(ValueError):
        stitch(windows, outputs + outputs[:1], 10)
    with pytest.raises(ValueError):
        stitch(windows, [outputs[0][:-1]] + outputs[1:], 10)
    with pytest.raises(ValueError):
        stitch(windows, [o[:, :87] for o in outputs], 10)


def test_batch_windows_pads_and_stitch_ignores_padding() -> None:
    n_frames = 23
    features = np.repeat(np.arange(1, n_frames + 1, dtype=np.float32)[:, None], 3, axis=1)
    windows = plan_windows(n_frames, 5, 2)
    batch = batch_windows(features, windows)
    assert batch.shape == (5, 9, 3) and batch.dtype == np.float32
    np.testing.assert_array_equal(batch[0, :, 0], [1, 2, 3, 4, 5, 6, 7, 0, 0])  # padded
    np.testing.assert_array_equal(batch[1, :, 0], np.arange(4, 13))
    outputs = np.repeat(batch[:, :, :1], 88, axis=2)  # an "identity" model
    roll = stitch(windows, outputs, n_frames)
    np.testing.assert_array_equal(roll[:, 5], np.arange(1, n_frames + 1))
    assert batch_windows(features, []).shape == (0, 0, 3)


def causal_window_sum(x: np.ndarray, memory: int) -> np.ndarray:
    """Toy causal model with warm-up: out[t] = sum of x[t - memory .. t] within the input."""
    csum = np.concatenate([np.zeros((1, x.shape[1])), np.cumsum(x, axis=0)])
    t = np.arange(len(x))
    return csum[t + 1] - csum[np.maximum(t - memory, 0)]


def test_windowed_equals_one_pass_when_context_covers_memory() -> None:
    rng = np.random.default_rng(0)
    x = rng.random((101, 88))
    whole = causal_window_sum(x, memory=3).astype(np.float32)
    windows = plan_windows(len(x), 10, context=3)
    outputs = (causal_window_sum(x[w.start : w.stop], 3) for w in windows)
    np.testing.assert_allclose(stitch(windows, outputs, len(x)), whole, rtol=1e-6)
    # too little context leaves seams
    short = plan_windows(len(x), 10, context=1)
    seamed = stitch(short, (causal_window_sum(x[w.start : w.stop], 3) for w in short), len(x))
    assert not np.allclose(seamed, whole)


@pytest.mark.parametrize(
    ("n_frames", "window", "context", "batch_size", "expected"),
    [
        (50, 4, 2, 4, [[0], [1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11], [12]]),
        (48, 4, 2, 4, [[0], [1, 2, 3, 4], [5, 6, 7, 8], [9, 10], [11]]),  # the last as long as the first
        (48, 4, 2, 1, [[i] for i in range(12)]),
        (12, 4, 5, 2, [[0], [1], [2]]),  # every window a length of its own
        (3, 4, 2, 4, [[0]]),
        (0, 4, 2, 4, []),
    ],
)
def test_plan_batches_groups_consecutive_windows_of_one_length(n_frames, window, context, batch_size, expected):
    assert plan_batches(plan_windows(n_frames, window, context), batch_size) == expected


def test_plan_batches_rejects_an_empty_batch() -> None:
    with pytest.raises(ValueError, match="batch_size >= 1"):
        plan_batches(plan_windows(10, 4, 2), 0)


def batch_dependent_model(calls: list[tuple[int, int]]):
    """A two-head fake model whose every output depends on its whole batch: a running sum
    of the input over time, plus the batch's size and mean (as a batched numeric kernel
    might round differently with its batch). Records (batch, frames) per call."""

    def predict(batch: np.ndarray) -> dict[str, np.ndarray]:
        calls.append(batch.shape[:2])
        x = batch[:, :, :88].astype(np.float64)
        frames = np.cumsum(x, axis=1) / (1 + np.arange(batch.shape[1]))[None, :, None]
        frames += len(batch) * 1e-3 + batch.mean() * 1e-2
        onsets = x[:, ::-1].cumsum(axis=1)[:, ::-1] * 0.01 + np.arange(len(batch))[:, None, None] * 1e-4
        return {"frames": frames.astype(np.float32), "onsets": onsets.astype(np.float32)}

    return predict


def blocks_of(features: np.ndarray, sizes: list[int]):
    """``features`` as (start, rows) blocks of the given sizes in turn (the last cut short)."""
    start, k = 0, 0
    while start < len(features):
        size = sizes[k % len(sizes)]
        yield start, features[start : start + size].copy()
        start, k = start + size, k + 1


@pytest.mark.parametrize(
    ("n_frames", "window", "context", "batch_size"),
    [(300, 16, 8, 4), (256, 16, 8, 3), (97, 10, 25, 2), (5, 16, 8, 4), (1, 1, 0, 1), (200, 7, 0, 5)],
)
@pytest.mark.parametrize("sizes", [[1], [13], [64, 5, 1, 200], [10_000]], ids=["1", "13", "mixed", "whole"])
def test_streamed_rolls_equal_predict_rolls_bit_for_bit(n_frames, window, context, batch_size, sizes) -> None:
    features = np.random.default_rng(n_frames).random((n_frames, 100), dtype=np.float32)
    whole_calls: list[tuple[int, int]] = []
    whole_progress: list[float] = []
    expected = predict_rolls(
        batch_dependent_model(whole_calls), features, window, context, batch_size, whole_progress.append
    )
    calls: list[tuple[int, int]] = []
    progress: list[float] = []
    out = list(
        stream_rolls(
            batch_dependent_model(calls),
            n_frames,
            blocks_of(features, sizes),
            window,
            context,
            batch_size,
            progress.append,
        )
    )
    assert calls == whole_calls and progress == whole_progress  # the same batches, in the same order
    assert [start for start, _ in out] == [0] + np.cumsum([len(r["frames"]) for _, r in out])[:-1].tolist()
    for name in ("frames", "onsets"):
        got = np.concatenate([rows[name] for _, rows in out])
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, expected[name])


def test_stream_rolls_runs_each_batch_once_its_input_is_there() -> None:
    features = np.random.default_rng(0).random((100, 88), dtype=np.float32)
    events: list[str] = []

    def blocks():
        for start in range(0, 100, 10):
            events.append(f"in {start}")
            yield start, features[start : start + 10]

    def predict(batch: np.ndarray) -> np.ndarray:
        events.append(f"predict {batch.shape[:2]}")
        return batch

    for start, rows in stream_rolls(predict, 100, blocks(), window=20, context=5, batch_size=2):
        events.append(f"out {start}+{len(rows['frames'])}")
    # windows [0,25) [15,45) [35,65) [55,85) [75,100): the second and third share a batch
    assert events == [
        "in 0", "in 10", "in 20", "predict (1, 25)", "out 0+20",
        "in 30", "in 40", "in 50", "in 60", "predict (2, 30)", "out 20+40",
        "in 70", "in 80", "predict (1, 30)", "out 60+20",
        "in 90", "predict (1, 25)", "out 80+20",
    ]  # fmt: skip


def test_stream_rolls_refuses_blocks_that_do_not_tile() -> None:
    features = np.zeros((20, 88), np.float32)
    with pytest.raises(ValueError, match="at frame 5 of 5 rows; expected frame 10"):
        list(stream_rolls(lambda b: b, 20, [(0, features[:10]), (5, features[5:10])], window=8, context=2))
    with pytest.raises(ValueError, match="features end at frame 10; expected 20"):
        list(stream_rolls(lambda b: b, 20, [(0, features[:10])], window=8, context=2))
    with pytest.raises(ValueError, match="expected frame 0 and at most 20 rows"):
        list(stream_rolls(lambda b: b, 20, [(0, np.zeros((21, 88), np.float32))], window=8, context=2))
