"""Figures: the search's hyperparameter figure marks each trial's budget."""

from pianotx.plots import hyperparameter_figure

ROWS = [
    {"lstm_units": 64, "lr": 1e-3, "val_note_f1": 0.31, "epochs": 2},
    {"lstm_units": 128, "lr": 3e-3, "val_note_f1": 0.33, "epochs": 2},
    {"lstm_units": 128, "lr": 3e-3, "val_note_f1": 0.68, "epochs": 6},
]


def test_each_budget_has_its_own_points_and_a_legend():
    figure = hyperparameter_figure(ROWS, ["lstm_units", "lr"], "val_note_f1")
    first = figure.axes[0]
    assert [t.get_text() for t in first.get_legend().get_texts()] == ["2 epochs", "6 epochs"]
    assert [len(c.get_offsets()) for c in first.collections] == [2, 1]
    assert first.collections[1].get_offsets().tolist() == [[128.0, 0.68]]


def test_without_budgets_one_group_and_no_legend():
    rows = [{k: v for k, v in r.items() if k != "epochs"} for r in ROWS]
    figure = hyperparameter_figure(rows, ["lstm_units"], "val_note_f1")
    assert figure.axes[0].get_legend() is None
    assert [len(c.get_offsets()) for c in figure.axes[0].collections] == [3]


def test_a_hyperband_trial_logs_its_budget_as_its_epochs():
    from pianotx.config import DecodingConfig, ModelConfig, TrainConfig
    from pianotx.tuning.tuner import trial_params

    values = {"tuner/epochs": 6, "tuner/initial_epoch": 2, "tuner/trial_id": "0001"}
    params = trial_params(ModelConfig(), TrainConfig(), DecodingConfig(), values)
    assert params["epochs"] == 6 and params["tuner/trial_id"] == "0001"
    assert trial_params(ModelConfig(), TrainConfig(), DecodingConfig(), {})["epochs"] == TrainConfig().epochs
