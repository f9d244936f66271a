"""The search's trial count and time estimate."""

import keras_tuner as kt
import pytest

from pianotx.tuning.progress import hyperband_trials, planned_trials, trial_line


@pytest.mark.parametrize(
    ("max_epochs", "factor", "iterations", "trials"),
    [(4, 3, 1, 10), (4, 3, 2, 20), (6, 3, 1, 10), (9, 3, 1, 3 + (5 + 2) + (9 + 3 + 1)), (1, 3, 1, 1)],
)
def test_hyperband_trials_by_hand(max_epochs, factor, iterations, trials):
    assert hyperband_trials(max_epochs, factor, iterations=iterations) == trials


def test_planned_trials_of_keras_tuners_own_oracles():
    objective = kt.Objective("val_f1", "max")
    assert planned_trials(kt.oracles.HyperbandOracle(objective, max_epochs=4, factor=3)) == 10
    assert planned_trials(kt.oracles.RandomSearchOracle(objective, max_trials=7)) == 7
    assert planned_trials(object()) is None


def test_hyperband_runs_the_trials_counted(tmp_path):
    """Keras Tuner's Hyperband oracle, driven with a constant score, creates exactly
    the counted trials (the formula is its own)."""
    objective = kt.Objective("score", "max")
    oracle = kt.oracles.HyperbandOracle(objective, max_epochs=4, factor=3, seed=0)
    hp = kt.HyperParameters()
    hp.Float("x", 0.0, 1.0)
    oracle._set_project_dir(str(tmp_path), "progress")
    oracle.hyperparameters = hp
    created = 0
    while created < 100:
        trial = oracle.create_trial("tuner0")
        if trial.status == "STOPPED":
            break
        created += 1
        oracle.update_trial(trial.trial_id, {"score": float(created)})
        trial.status = "COMPLETED"
        oracle.end_trial(trial)
    assert created == planned_trials(oracle) == 10


def test_trial_line_estimates_from_the_timed_trials():
    assert trial_line(1, 10, []) == "trial 1 of 10"
    assert trial_line(3, 10, [60.0, 120.0]) == "trial 3 of 10, about 12 min left"  # 90 s x 8
    assert trial_line(10, 10, [30.0]) == "trial 10 of 10, about 30 s left"
    assert trial_line(5, None, [30.0]) == "trial 5"
    assert trial_line(2, 2, [7200.0]) == "trial 2 of 2, about 2.0 h left"
