"""Keras Tuner's own tuners, with every trial tracked in MLflow.

:class:`PianoHyperModel` builds and fits the model of :mod:`pianotx.model` from a
trial's hyperparameters. :class:`TrackedTrials` is mixed into Keras Tuner's
RandomSearch, BayesianOptimization and Hyperband: its ``run_trial`` opens a nested
MLflow run, logs every epoch, and at the end logs the trial's best model (MLflow's
Keras flavor, carrying the feature config), a piano-roll figure and note-level scores
on the validation pieces; a diverging trial is FAILED with its reason and the search
goes on. Hyperband's epoch budget and weight inheritance are Keras Tuner's own.
"""

from __future__ import annotations

import functools
import json
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import keras
import keras_tuner as kt
import numpy as np

from pianotx.config import DecodingConfig, ModelConfig, TrainConfig, model_metadata, to_dict
from pianotx.evaluate import evaluate_split
from pianotx.files import write_text_atomic
from pianotx.loader import ChunkDataset
from pianotx.model import build_model
from pianotx.plots import piano_roll_figure
from pianotx.store import Manifest, SplitArrays
from pianotx.tracking import OBJECTIVE_METRIC, SearchTracker, best_effort
from pianotx.train import TrainingDiverged, fit, release_memory, standard_callbacks
from pianotx.tuning.space import configs_from_values
from pianotx.windows import predict_frames

EPOCH_KEYS = ("loss", "val_loss", "val_precision", "val_recall", "val_f1")
FIGURE_SECONDS = 12.0


class EpochLogger(keras.callbacks.Callback):
    """Logs loss, val_loss, validation P/R/F1 and the learning rate at every epoch."""

    def __init__(self, tracker: SearchTracker, run_id: str):
        super().__init__()
        self.tracker, self.run_id = tracker, run_id

    def __deepcopy__(self, memo: dict) -> EpochLogger:  # Keras Tuner deep-copies callbacks
        return self

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        logs = logs or {}
        metrics = {k: float(logs[k]) for k in EPOCH_KEYS if k in logs}
        metrics["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        self.tracker.log_metrics(self.run_id, metrics, step=epoch + 1)


@functools.lru_cache(maxsize=256)
def _parsed(values: tuple[tuple[str, Any], ...]) -> tuple[ModelConfig, TrainConfig]:
    return configs_from_values(dict(values))


def trial_configs(hp: kt.HyperParameters) -> tuple[ModelConfig, TrainConfig]:
    """The model and training configs of a trial's hyperparameter values, parsed once
    per distinct set of values (build, fit and logging all ask)."""
    return _parsed(tuple(sorted(hp.values.items())))


class PianoHyperModel(kt.HyperModel):
    """Builds and fits the LSTM transcriber from hyperparameter values.

    ``fit`` receives the dataset folder and makes its streaming loaders itself, since
    the batch size may be one of the hyperparameters.
    """

    def __init__(self, manifest: Manifest, decoding: DecodingConfig):
        super().__init__(name="pianotx")
        self.manifest = manifest
        self.decoding = decoding

    def build(self, hp: kt.HyperParameters) -> keras.Model:
        model_cfg, train_cfg = trial_configs(hp)
        keras.utils.set_random_seed(train_cfg.seed)
        return build_model(model_cfg, train_cfg, self.manifest.features.n_bins, input_stats=self.manifest.feature_stats)

    def fit(
        self,
        hp: kt.HyperParameters,
        model: keras.Model,
        dataset_dir: str,
        callbacks: Sequence[keras.callbacks.Callback] = (),
        epochs: int | None = None,
        initial_epoch: int = 0,
        verbose: int = 2,
    ) -> keras.callbacks.History:
        _, train_cfg = trial_configs(hp)
        train_data = ChunkDataset(
            dataset_dir, "train", train_cfg.batch_size, seed=train_cfg.seed, limit_batches=train_cfg.steps_per_epoch
        )
        val_data = ChunkDataset(dataset_dir, "validation", train_cfg.batch_size, shuffle=False)
        return fit(model, train_data, val_data, train_cfg, callbacks, initial_epoch, epochs, verbose)


if TYPE_CHECKING:  # the mixin is only ever combined with a Keras Tuner tuner
    from keras_tuner import Tuner as _TunerBase
else:
    _TunerBase = object


class TrackedTrials(_TunerBase):
    """Mixin for a Keras Tuner tuner: MLflow runs per trial (see module docstring).

    Args:
        tracker: the search's MLflow runs.
        manifest: the dataset, loaded once for the whole search.
        decoding: how probabilities become notes (validation note scores, the logged model).
        note_eval_pieces: validation pieces scored with mir_eval (0: all).
        tuner_args: Keras Tuner's own arguments (objective, directory, ...).
    """

    def __init__(
        self,
        tracker: SearchTracker,
        manifest: Manifest,
        decoding: DecodingConfig,
        note_eval_pieces: int = 0,
        **tuner_args: Any,
    ) -> None:
        self.tracker = tracker
        self.manifest = manifest
        self.decoding = decoding
        self.note_eval_pieces = note_eval_pieces
        super().__init__(hypermodel=PianoHyperModel(manifest, decoding), **tuner_args)

    def run_trial(self, trial: kt.engine.trial.Trial, dataset_dir: str, verbose: int = 2) -> Any:
        done = self.tracker.complete_trial_run(trial.trial_id)
        if done is not None:  # finished and logged before a kill kept Keras Tuner from recording it
            return {self.oracle.objective.name: done.data.metrics[OBJECTIVE_METRIC]}
        hp = trial.hyperparameters
        model_cfg, train_cfg = trial_configs(hp)
        run_id = self.tracker.start_trial(trial.trial_id, hp.values)
        trial_dir = Path(self.get_trial_dir(trial.trial_id))
        callbacks = [
            EpochLogger(self.tracker, run_id),
            *standard_callbacks(train_cfg, trial_dir / "checkpoint.keras"),
            # an interrupted trial, retried on resume, goes on from its last epoch
            keras.callbacks.BackupAndRestore(str(trial_dir / "backup")),
        ]
        try:
            results = super().run_trial(
                trial, dataset_dir, callbacks=callbacks, epochs=train_cfg.epochs, verbose=verbose
            )
            self._log_outcome(trial, run_id, model_cfg, train_cfg)
            self.tracker.log_metrics(run_id, {OBJECTIVE_METRIC: self._best_value(results)})
        except TrainingDiverged as exc:
            best_effort(self.tracker.end_trial, run_id, failure=f"NaN loss: {exc}")
            raise kt.errors.FailedTrialError(f"trial {trial.trial_id}: {exc}") from exc
        except KeyboardInterrupt:
            best_effort(self.tracker.end_trial, run_id, failure="interrupted", status="KILLED")
            raise
        except BaseException:
            best_effort(self.tracker.end_trial, run_id, failure=traceback.format_exc(limit=3))
            raise
        finally:
            release_memory()
        self.tracker.end_trial(run_id)
        return results

    def _best_value(self, results: Any) -> float:
        """The objective's best epoch value in a trial's histories, as Keras Tuner scores it."""
        objective = self.oracle.objective
        histories = results if isinstance(results, list) else [results]
        values = [v for h in histories for v in h.history.get(objective.name, [])]
        if not values:
            raise KeyError(f"objective {objective.name} was never logged")
        return float(max(values) if objective.direction == "max" else min(values))

    def _log_outcome(
        self, trial: kt.engine.trial.Trial, run_id: str, model_cfg: ModelConfig, train_cfg: TrainConfig
    ) -> None:
        """Log the trial's best model, validation note scores and a piano-roll figure."""
        model = self.load_model(trial)
        features = self.manifest.features
        context = self.manifest.chunk_frames

        def predict(x: np.ndarray) -> np.ndarray:
            return predict_frames(model.predict_on_batch, x, context=context)

        _, mean = evaluate_split(predict, self.manifest, "validation", self.decoding, self.note_eval_pieces)
        self.tracker.log_metrics(run_id, {f"val_{k}": v for k, v in mean.items()})
        pieces = self.manifest.pieces("validation")
        if pieces:
            x, frames, _ = SplitArrays(self.manifest, "validation").piece(pieces[0])
            n = int(FIGURE_SECONDS * features.frame_rate)
            title = f"trial {trial.trial_id}: {pieces[0]['name']}"
            figure = piano_roll_figure(predict(x[:n]), frames[:n], features.frame_rate, title)
            self.tracker.log_figure(run_id, figure, "piano_roll.png")
        example = np.zeros((1, 32, features.n_bins), np.float32)
        metadata = model_metadata(
            features,
            self.decoding,
            context,
            model=to_dict(model_cfg),
            train=to_dict(train_cfg),
            dataset_fingerprint=self.manifest.data["fingerprint"],
        )
        self.tracker.log_model(run_id, model, (example, model.predict_on_batch(example)), metadata)


def write_state_atomically() -> None:
    """Have Keras Tuner write its JSON state (oracle, tuner, every trial.json) atomically.

    Keras Tuner truncates these files and then writes them: a process killed in between
    leaves an empty file, and every later resume of the search fails on it. Local files
    are written to a temporary sibling and renamed into place instead (other URLs as
    Keras Tuner does). Idempotent.
    """
    from keras_tuner.src import utils

    original = utils.save_json
    if getattr(original, "pianotx_atomic", False):
        return

    def save_json(path: str, obj: Any) -> str:
        if "://" in str(path):
            return str(original(path, obj))
        text = json.dumps(obj)
        write_text_atomic(path, text)
        return text

    save_json.pianotx_atomic = True  # type: ignore[attr-defined]
    utils.save_json = save_json


class TrackedRandomSearch(TrackedTrials, kt.RandomSearch):
    pass


class TrackedBayesianOptimization(TrackedTrials, kt.BayesianOptimization):
    pass


class TrackedHyperband(TrackedTrials, kt.Hyperband):
    pass


TUNERS = {"random": TrackedRandomSearch, "bayesian": TrackedBayesianOptimization, "hyperband": TrackedHyperband}
