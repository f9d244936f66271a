"""Windowing helpers (pianotx.windows): exact window lists, tiling, and seam-free stitching."""

from __future__ import annotations

import numpy as np
import pytest

from pianotx.windows import Window, batch_windows, plan_windows, stitch


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
