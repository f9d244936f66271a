"""Figures for people: predicted vs true piano roll; a search's objective per hyperparameter."""

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


def hyperparameter_figure(rows: list[dict[str, Any]], names: list[str], objective: str, budget: str = "epochs") -> Any:
    """One panel per searched hyperparameter: each finished trial's objective against
    its value (categories and booleans on an even axis, log-spaced numbers on a log axis).
    Where rows give a ``budget`` (Hyperband's epochs), trials of each budget have a
    colour and marker of their own, named in a legend: a 2-epoch trial is not compared
    with a 6-epoch one unawares.

    Args:
        rows: one dict per finished trial holding ``objective`` and each of ``names``.
        names: the hyperparameters, in panel order.
        objective: the key of the objective value.
        budget: the key of each trial's training budget (absent or None: one group).

    Returns:
        A matplotlib Figure (Agg backend).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = names or ["trial"]
    cols = min(3, len(names))
    rows_n = -(-len(names) // cols)
    fig, axes = plt.subplots(rows_n, cols, figsize=(4 * cols, 3 * rows_n), squeeze=False, constrained_layout=True)
    scores = np.array([float(r[objective]) for r in rows])
    budgets = [r.get(budget) for r in rows]
    groups = sorted({b for b in budgets if b is not None}, key=float)
    masks = [np.array([b == g for b in budgets]) for g in groups] or [np.ones(len(rows), bool)]
    markers = "osD^v<>"
    for ax, name in zip(axes.flat, names):
        values = [r.get(name) for r in rows]
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            x = np.array(values, float)
            positive = [float(v) for v in values if v is not None and float(v) > 0]
            if positive and len(positive) == len(values) and max(positive) / min(positive) >= 20:
                ax.set_xscale("log")
        else:
            labels = sorted({str(v) for v in values})
            x = np.array([labels.index(str(v)) for v in values], float)
            ax.set_xticks(range(len(labels)), labels)
        for k, mask in enumerate(masks):
            label = f"{groups[k]} {budget}" if groups else None
            ax.scatter(x[mask], scores[mask], marker=markers[k % len(markers)], label=label)
        ax.set_xlabel(name)
        ax.set_ylabel(objective)
    if groups:
        axes.flat[0].legend(title="budget", fontsize="small")
    for ax in list(axes.flat)[len(names) :]:
        ax.axis("off")
    fig.suptitle(f"{objective} of each finished trial")
    plt.close(fig)
    return fig
