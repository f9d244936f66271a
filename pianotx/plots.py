"""Figures for people: predicted vs true piano roll."""

from __future__ import annotations

from typing import Any

import numpy as np

from pianotx.config import MIDI_MIN


def piano_roll_figure(probs: np.ndarray, truth: np.ndarray, frame_rate: float, title: str = "") -> Any:
    """Two stacked panels, true frame roll above, predicted probabilities below.

    Args:
        probs: (n_frames, 88) float in [0, 1].
        truth: (n_frames, 88) 0/1.
        frame_rate: frames per second (for the time axis).

    Returns:
        A matplotlib Figure (Agg backend; the caller saves or logs it).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    seconds = len(probs) / frame_rate
    extent = (0.0, seconds, MIDI_MIN - 0.5, MIDI_MIN + probs.shape[1] - 0.5)
    fig, axes = plt.subplots(2, 1, figsize=(10, 6), sharex=True, constrained_layout=True)
    for ax, roll, label in ((axes[0], truth, "reference"), (axes[1], probs, "predicted probability")):
        ax.imshow(
            np.asarray(roll, np.float32).T,
            aspect="auto",
            origin="lower",
            extent=extent,
            cmap="magma",
            vmin=0.0,
            vmax=1.0,
            interpolation="nearest",
        )
        ax.set_ylabel(f"MIDI note\n({label})")
    axes[1].set_xlabel("time (s)")
    if title:
        axes[0].set_title(title)
    plt.close(fig)
    return fig
