"""How far a search has come: the trials its tuner will run, and a time estimate.

Keras Tuner prints ``Search: Running Trial #N`` with no total. The total follows from
the tuner's settings: ``max_trials`` for random, Bayesian and grid search; for
Hyperband, the trials of its brackets, computed here with Hyperband's own formulas
(Li et al. 2018, as ``keras_tuner.Hyperband`` sizes them) from its public settings.
"""

from __future__ import annotations

import math
from typing import Any


def hyperband_trials(max_epochs: int, factor: int, min_epochs: int = 1, iterations: int = 1) -> int:
    """Trials one Hyperband search runs: over ``iterations``, each bracket ``b`` (of
    as many as divisions of ``max_epochs`` by ``factor`` stay >= ``min_epochs``) runs
    rounds ``r = 0..b`` of ``ceil(end / (b + 1) * factor ** (b - r))`` trials, where
    ``end = ceil(1 + log_factor(max_epochs))``. 4 epochs at factor 3: 3 + (5 + 2) = 10."""
    brackets, epochs = 0, float(max_epochs)
    while epochs >= min_epochs:
        epochs /= factor
        brackets += 1
    end = math.ceil(1 + math.log(max_epochs, factor))
    per_iteration = sum(math.ceil(end / (b + 1) * factor ** (b - r)) for b in range(brackets) for r in range(b + 1))
    return per_iteration * iterations


def planned_trials(oracle: Any) -> int | None:
    """The trials ``oracle`` will create in all (None: it does not say, e.g. a
    distributed worker's proxy of the chief's oracle, or an unbounded search)."""
    limit = getattr(oracle, "max_trials", None)
    max_epochs, factor = getattr(oracle, "max_epochs", None), getattr(oracle, "factor", None)
    if isinstance(max_epochs, int) and isinstance(factor, int):
        iterations = getattr(oracle, "hyperband_iterations", 1)
        if not isinstance(iterations, int):  # float("inf"): no bound of its own
            return limit if isinstance(limit, int) else None
        total = hyperband_trials(max_epochs, factor, int(getattr(oracle, "min_epochs", 1) or 1), iterations)
        return min(total, limit) if isinstance(limit, int) else total
    return limit if isinstance(limit, int) else None


def trial_line(number: int, total: int | None, seconds: list[float]) -> str:
    """``trial 4 of 10, about 12 min left`` for trial ``number`` (1-based); the estimate
    is the mean of the trials this process timed (``seconds``) times the trials left,
    this one included, and is left out until one was timed."""
    line = f"trial {number} of {total}" if total else f"trial {number}"
    if total and seconds and number <= total:
        left = sum(seconds) / len(seconds) * (total - number + 1)
        line += f", about {_duration(left)} left"
    return line


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{max(round(seconds), 1)} s"
    if seconds < 90 * 60:
        return f"{round(seconds / 60)} min"
    return f"{seconds / 3600:.1f} h"
