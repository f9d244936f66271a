"""Keras Tuner's own tuners, with every trial tracked in MLflow.

:class:`PianoHyperModel` builds and fits the model of :mod:`pianotx.model` from a
trial's hyperparameters. :class:`TrackedTrials` is mixed into Keras Tuner's
RandomSearch, BayesianOptimization and Hyperband: its ``run_trial`` opens a nested
MLflow run, logs every epoch, and at the end logs the trial's best model (MLflow's
Keras flavor, carrying the feature config), a piano-roll figure and note-level scores
on the validation pieces; a diverging trial is FAILED with its reason and the search
goes on. Hyperband's epoch budget and weight inheritance are Keras Tuner's own.

A trial started again (after a kill, or on another worker of a distributed search)
marks its stale RUNNING runs KILLED and gets a new run; where it goes on from the last
epoch of an earlier run (Keras' BackupAndRestore), the earlier epochs are copied into
the new run, so one run holds the trial's whole history. A distributed worker beats a
heartbeat on its trial run (:class:`pianotx.tuning.distributed.Heartbeat`) and gives
the trial up, unreported, when the chief has handed it to another worker.
"""

from __future__ import annotations

import functools
import json
import socket
import tempfile
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import keras
import keras_tuner as kt
import numpy as np

from pianotx.config import DecodingConfig, ModelConfig, TrainConfig, model_metadata, to_dict
from pianotx.decoding import decode_rolls
from pianotx.evaluate import evaluate_piece, mean_scores, split_rolls, tune_decoding
from pianotx.files import write_text_atomic
from pianotx.loader import ChunkDataset
from pianotx.model import build_model
from pianotx.plots import piano_roll_figure
from pianotx.store import Manifest, SplitArrays
from pianotx.tracking import HOST_TAG, OBJECTIVE_METRIC, WORKER_TAG, SearchTracker, best_effort
from pianotx.train import (
    SafeBackupAndRestore,
    TrainingDiverged,
    fit,
    release_memory,
    seed_everything,
    standard_callbacks,
)
from pianotx.tuning.distributed import Heartbeat
from pianotx.tuning.initial import FROM_SCRATCH, InitialModel
from pianotx.tuning.interrupt import raise_if_interrupted
from pianotx.tuning.progress import planned_trials, trial_line
from pianotx.tuning.space import TRIAL_OBJECTIVES, configs_from_values
from pianotx.windows import predict_rolls

EPOCH_KEYS = (
    "loss", "val_loss", "val_precision", "val_recall", "val_f1",
    "frames_loss", "onsets_loss", "velocities_loss", "val_frames_loss", "val_onsets_loss", "val_velocities_loss",
    "val_onset_precision", "val_onset_recall", "val_onset_f1",
)  # fmt: skip
FIGURE_SECONDS = 12.0


class EpochRecord(keras.callbacks.Callback):
    """Each epoch's metrics (loss, val_loss, validation P/R/F1 and the learning rate the
    epoch trained at, read at its beginning, before ReduceLROnPlateau can lower it at its
    end), kept in :attr:`latest` and written to a JSON file of ``{step: metrics}``.

    It goes before the backup callback: every epoch a resumed trial goes on from is in the
    file, even when the process was killed after the backup and before MLflow heard of
    the epoch, so :class:`EpochLogger` can give the resumed run the trial's whole history.
    """

    def __init__(self, path: Path):
        super().__init__()
        self.path = path
        self.latest: dict[str, float] = {}
        self.epoch_rate = 0.0

    def __deepcopy__(self, memo: dict[int, Any]) -> EpochRecord:  # Keras Tuner deep-copies callbacks
        return self

    def read(self) -> dict[int, dict[str, float]]:
        """The recorded epochs by step (1-based); empty when none was recorded."""
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return {int(step): metrics for step, metrics in data.items()}

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.epoch_rate = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        logs = logs or {}
        self.latest = {k: float(logs[k]) for k in EPOCH_KEYS if k in logs}
        self.latest["learning_rate"] = self.epoch_rate
        recorded = self.read()
        recorded[epoch + 1] = self.latest
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(self.path, json.dumps({str(k): v for k, v in sorted(recorded.items())}))


class EpochLogger(keras.callbacks.Callback):
    """Logs each epoch's metrics, as :class:`EpochRecord` took them, to the trial's run.

    A fit that starts later than ``initial_epoch`` (restored from a backup) first
    copies the trial's earlier epochs from its earlier runs, and from the record those
    runs never logged. It goes after the backup callback, so an epoch shown in MLflow is
    always one a resumed trial goes on from.
    """

    def __init__(
        self, tracker: SearchTracker, run_id: str, record: EpochRecord, trial_id: str = "", initial_epoch: int = 0
    ):
        super().__init__()
        self.tracker, self.run_id, self.record = tracker, run_id, record
        self.trial_id, self.initial_epoch = trial_id, initial_epoch
        self.first_epoch: int | None = None

    def __deepcopy__(self, memo: dict[int, Any]) -> EpochLogger:  # Keras Tuner deep-copies callbacks
        return self

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self.first_epoch = None

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if self.first_epoch is None:
            self.first_epoch = epoch
            if epoch > self.initial_epoch and self.trial_id:
                keys = (*EPOCH_KEYS, "learning_rate")
                first, last = self.initial_epoch + 1, epoch
                self.tracker.copy_history(self.trial_id, self.run_id, keys, first, last, fill=self.record.read())

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.tracker.log_metrics(self.run_id, self.record.latest, step=epoch + 1)


class StopWhenSet(keras.callbacks.Callback):
    """Stops training at the next batch once ``event`` is set."""

    def __init__(self, event: threading.Event):
        super().__init__()
        self.event = event

    def __deepcopy__(self, memo: dict[int, Any]) -> StopWhenSet:
        return self

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        if self.event.is_set():
            self.model.stop_training = True


class InterruptWhenSignalled(keras.callbacks.Callback):
    """Raises KeyboardInterrupt at the next batch once a SIGTERM came (its own raise may
    have landed in a finaliser and been ignored)."""

    def __deepcopy__(self, memo: dict[int, Any]) -> InterruptWhenSignalled:
        return self

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        raise_if_interrupted()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        raise_if_interrupted()


class ProcessBudgetReached(Exception):
    """This process ended its ``trials_per_process`` trials: the search is to go on in
    a fresh process (nothing is lost: the trial's state was saved before this)."""


class TrialAbandoned(Exception):
    """The chief took this worker's trial back (its run was marked KILLED)."""


@functools.lru_cache(maxsize=256)
def _parsed(values: tuple[tuple[str, Any], ...]) -> tuple[ModelConfig, TrainConfig]:
    return configs_from_values(dict(values))


def trial_configs(hp: kt.HyperParameters) -> tuple[ModelConfig, TrainConfig]:
    """The model and training configs of a trial's hyperparameter values, parsed once
    per distinct set of values (build, fit and logging all ask)."""
    return _parsed(tuple(sorted(hp.values.items())))


def trial_params(
    model_cfg: ModelConfig, train_cfg: TrainConfig, decoding: DecodingConfig, values: dict[str, Any]
) -> dict[str, Any]:
    """Every setting of a trial, searched, fixed or default (and Keras Tuner's own
    ``tuner/...`` values), so that MLflow's compare view lines all trials up."""
    tuner_values = {k: v for k, v in values.items() if k.startswith("tuner/")}
    params = {
        **to_dict(model_cfg),
        **to_dict(train_cfg),
        **{f"decoding.{k}": v for k, v in to_dict(decoding).items()},
        **tuner_values,
    }
    if "tuner/epochs" in values:  # Hyperband's budget is the epochs the trial may reach
        params["epochs"] = values["tuner/epochs"]
    return params


def worker_tags(tuner_id: str) -> dict[str, str]:
    """Which process ran a trial: Keras Tuner's tuner id and the host."""
    return {WORKER_TAG: tuner_id, HOST_TAG: socket.gethostname()}


INIT_MODEL_PARAM = "init_model_uri"  # a fine-tuning trial's param: the model it started from
INIT_MODEL_TAG = "pianotx.init_model"
CONTINUES_TAG = "pianotx.continues"  # a Hyperband trial's tag: the trial (and run) it trained on from
EPOCHS_TRAINED = "epochs_trained"  # a trial's metric: the epochs its model reached (early stopping included)


class PianoHyperModel(kt.HyperModel):
    """Builds and fits the LSTM transcriber from hyperparameter values.

    ``fit`` receives the dataset folder and makes its streaming loaders itself, since
    the batch size may be one of the hyperparameters. A trial whose ``init_from`` names
    one of ``initial`` starts from that model's weights, architecture and input
    standardisation (:mod:`pianotx.tuning.initial`).
    """

    def __init__(self, manifest: Manifest, decoding: DecodingConfig, initial: dict[str, InitialModel] | None = None):
        super().__init__(name="pianotx")
        self.manifest = manifest
        self.decoding = decoding
        self.initial = initial or {}

    def initial_model(self, train_cfg: TrainConfig) -> InitialModel | None:
        """The model a trial starts from (``None``: from scratch)."""
        if train_cfg.init_from == FROM_SCRATCH:
            return None
        if train_cfg.init_from not in self.initial:
            raise KeyError(f"init_from {train_cfg.init_from!r} was not resolved before the search")
        return self.initial[train_cfg.init_from]

    def configs(self, hp: kt.HyperParameters) -> tuple[ModelConfig, TrainConfig]:
        """The trial's model and training configs; a fine-tuning trial's architecture
        is its initial model's."""
        model_cfg, train_cfg = trial_configs(hp)
        initial = self.initial_model(train_cfg)
        if initial is not None:
            model_cfg = initial.architecture(model_cfg, hp.values)
        return model_cfg, train_cfg

    def build(self, hp: kt.HyperParameters) -> keras.Model:
        model_cfg, train_cfg = self.configs(hp)
        seed_everything(train_cfg)
        initial = self.initial_model(train_cfg)
        stats = initial.input_stats if initial is not None else self.manifest.feature_stats
        model = build_model(model_cfg, train_cfg, self.manifest.features.n_bins, input_stats=stats)
        if initial is not None:  # Hyperband's continued trials then load their own weights over these
            initial.load_into(model)
        return model

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
        model_cfg, train_cfg = self.configs(hp)
        onsets, width = model_cfg.onset_head, train_cfg.onset_width
        train_data = ChunkDataset(
            self.manifest,
            "train",
            train_cfg.batch_size,
            seed=train_cfg.seed,
            limit_batches=train_cfg.steps_per_epoch,
            onsets=onsets,
            onset_width=width,
            velocities=model_cfg.velocity_head,
        )
        val_data = ChunkDataset(
            self.manifest,
            "validation",
            train_cfg.batch_size,
            shuffle=False,
            onsets=onsets,
            onset_width=width,
            velocities=model_cfg.velocity_head,
        )
        return fit(
            model,
            train_data,
            val_data,
            train_cfg,
            callbacks,
            initial_epoch,
            epochs,
            verbose,
            threshold=self.decoding.threshold,
            onset_threshold=self.decoding.onset_threshold,
        )


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
        heartbeat: seconds between heartbeats on a trial's run (a distributed worker);
            ``None``: none.
        trials_per_process: raise :class:`ProcessBudgetReached` once this process has
            ended this many trials (0: never). TensorFlow keeps ~40 MB of every model it
            trained until the process ends; a search can go on in a fresh process.
        tuner_args: Keras Tuner's own arguments (objective, directory, ...).

    Attributes:
        outcomes: how the trials this process ran ended (``COMPLETED``, ``FAILED``,
            ``INVALID``, ``ABANDONED``: taken back by the chief).
    """

    def __init__(
        self,
        tracker: SearchTracker,
        manifest: Manifest,
        decoding: DecodingConfig,
        note_eval_pieces: int = 0,
        heartbeat: float | None = None,
        trials_per_process: int = 0,
        initial: dict[str, InitialModel] | None = None,
        **tuner_args: Any,
    ) -> None:
        self.tracker = tracker
        self.manifest = manifest
        self.decoding = decoding
        self.note_eval_pieces = note_eval_pieces
        self.heartbeat = heartbeat
        self.trials_per_process = trials_per_process
        self.outcomes: Counter[str] = Counter()
        self.abandoned: set[str] = set()
        self.piano = PianoHyperModel(manifest, decoding, initial)
        self.trial_seconds: list[float] = []  # of the trials this process ran
        self._trial_began = 0.0
        super().__init__(hypermodel=self.piano, **tuner_args)

    def on_trial_begin(self, trial: kt.engine.trial.Trial) -> None:
        """Keras Tuner's own announcement, then how many trials there are in all and
        about how long the rest will take (:func:`pianotx.tuning.progress.trial_line`)."""
        super().on_trial_begin(trial)
        self._trial_began = time.monotonic()
        number = len(self.oracle.trials) if hasattr(self.oracle, "trials") else 0
        if number:
            print(trial_line(number, planned_trials(self.oracle), self.trial_seconds), flush=True)

    def run_trial(self, trial: kt.engine.trial.Trial, dataset_dir: str, verbose: int = 2) -> Any:
        raise_if_interrupted()  # a signal lost after the last trial's training: no new trial
        done = self.tracker.complete_trial_run(trial.trial_id)
        if done is not None:  # finished and logged before a kill kept Keras Tuner from recording it
            return {self.oracle.objective.name: done.data.metrics[OBJECTIVE_METRIC]}
        hp = trial.hyperparameters
        model_cfg, train_cfg = self.piano.configs(hp)
        self.tracker.kill_trial_runs(trial.trial_id, f"trial {trial.trial_id} started again by {self.tuner_id}")
        params = trial_params(model_cfg, train_cfg, self.decoding, hp.values)
        tags = worker_tags(self.tuner_id)
        initial = self.piano.initial_model(train_cfg)
        if initial is not None:  # the lineage: which model this trial fine-tuned
            params[INIT_MODEL_PARAM] = initial.uri
            tags[INIT_MODEL_TAG] = initial.uri
        continued = hp.values.get("tuner/trial_id")
        if continued:  # Hyperband trains on from an earlier trial's model: link it
            earlier = self.tracker.complete_trial_run(str(continued))
            tags[CONTINUES_TAG] = f"trial {continued}" + (f", run {earlier.info.run_id}" if earlier else "")
        run_id = self.tracker.start_trial(trial.trial_id, params, tags)
        with self._heartbeat(run_id) as abandoned:
            try:
                results = self._train(trial, dataset_dir, run_id, model_cfg, train_cfg, abandoned, verbose)
            except TrialAbandoned:  # the run is the chief's to close (KILLED)
                self.abandoned.add(trial.trial_id)
                raise
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

    @contextmanager
    def _heartbeat(self, run_id: str) -> Iterator[threading.Event]:
        """An event set when the chief takes the trial back (never, without heartbeats)."""
        if self.heartbeat is None:
            yield threading.Event()
            return
        with Heartbeat(self.tracker, run_id, self.heartbeat) as beat:
            yield beat.abandoned

    def _train(
        self,
        trial: kt.engine.trial.Trial,
        dataset_dir: str,
        run_id: str,
        model_cfg: ModelConfig,
        train_cfg: TrainConfig,
        abandoned: threading.Event,
        verbose: int,
    ) -> Any:
        """Fit the trial's model and log its outcome; ``{objective name: value}``.

        Raises:
            TrialAbandoned: the chief took the trial back meanwhile.
        """
        trial_dir = Path(self.get_trial_dir(trial.trial_id))
        initial_epoch = int(trial.hyperparameters.values.get("tuner/initial_epoch", 0))
        record = EpochRecord(trial_dir / "epochs.json")
        callbacks = [
            *standard_callbacks(train_cfg, trial_dir / "checkpoint.keras"),
            record,  # before the backup: every backed-up epoch is recorded
            # an interrupted trial, retried on resume, goes on from its last epoch
            SafeBackupAndRestore(str(trial_dir / "backup")),
            StopWhenSet(abandoned),
            EpochLogger(self.tracker, run_id, record, trial.trial_id, initial_epoch),  # after the backup
            InterruptWhenSignalled(),  # after the logger: an epoch backed up is an epoch logged
        ]
        results = super().run_trial(trial, dataset_dir, callbacks=callbacks, epochs=train_cfg.epochs, verbose=verbose)
        histories = results if isinstance(results, list) else [results]
        trained = max((len(h.history.get("loss", [])) for h in histories), default=0)
        self.tracker.log_metrics(run_id, {EPOCHS_TRAINED: float(initial_epoch + trained)})
        self._check_kept(trial, run_id, abandoned)
        scores = self._log_outcome(trial, run_id, model_cfg, train_cfg)
        value = self._objective_value(results, scores)
        self.tracker.log_metrics(run_id, {OBJECTIVE_METRIC: value})
        self._check_kept(trial, run_id, abandoned)
        return {self.oracle.objective.name: value}

    def _check_kept(self, trial: kt.engine.trial.Trial, run_id: str, abandoned: threading.Event) -> None:
        """Raise TrialAbandoned if the chief took the trial back (its run is KILLED)."""
        if abandoned.is_set() or (self.heartbeat is not None and self.tracker.beat(run_id) == "KILLED"):
            raise TrialAbandoned(f"trial {trial.trial_id} was given to another worker")

    def on_trial_end(self, trial: kt.engine.trial.Trial) -> None:
        """Report the trial to the oracle, unless the chief took it back."""
        if self._trial_began:
            self.trial_seconds.append(time.monotonic() - self._trial_began)
        if trial.trial_id in self.abandoned:
            self.abandoned.discard(trial.trial_id)
            self.outcomes["ABANDONED"] += 1
            return
        super().on_trial_end(trial)  # Keras Tuner's state is saved with the trial
        self.outcomes[str(trial.status)] += 1
        if self.trials_per_process and sum(self.outcomes.values()) >= self.trials_per_process:
            raise ProcessBudgetReached(f"{self.trials_per_process} trials ended in this process")

    def _objective_value(self, results: Any, scores: dict[str, float]) -> float:
        """The trial's objective: a mir_eval score of the finished trial (``val_note_f1``,
        ...), or the best epoch value in its histories, as Keras Tuner scores those."""
        objective = self.oracle.objective
        if objective.name in TRIAL_OBJECTIVES:
            return float(scores[objective.name.removeprefix("val_")])
        histories = results if isinstance(results, list) else [results]
        values = [v for h in histories for v in h.history.get(objective.name, [])]
        if not values:
            raise KeyError(f"objective {objective.name} was never logged")
        return float(max(values) if objective.direction == "max" else min(values))

    def _log_outcome(
        self, trial: kt.engine.trial.Trial, run_id: str, model_cfg: ModelConfig, train_cfg: TrainConfig
    ) -> dict[str, float]:
        """Log the trial's best model, validation note scores and a piano-roll figure;
        the mean mir_eval scores (``note_f1``, ...)."""
        model = self.load_model(trial)
        features = self.manifest.features
        # Twice the training chunk: a bidirectional model with an onset head drew on more
        # than one chunk of context (with one, a windowed pass moved outputs by up to 0.02).
        context = 2 * self.manifest.chunk_frames

        def predict(x: np.ndarray) -> dict[str, np.ndarray]:
            return predict_rolls(model.predict_on_batch, x, context=context)

        decoding, mean = self._tune_and_score(predict)
        self.tracker.log_metrics(run_id, {f"val_{k}": v for k, v in mean.items()})
        tuned = {"tuned_threshold": decoding.threshold, "tuned_onset_threshold": decoding.onset_threshold}
        if decoding.onsetless_threshold is not None:
            tuned["tuned_onsetless_threshold"] = decoding.onsetless_threshold
        self.tracker.log_metrics(run_id, tuned)
        pieces = self.manifest.pieces("validation")
        if pieces:
            x, frames, _ = SplitArrays(self.manifest, "validation").piece(pieces[0])
            n = int(FIGURE_SECONDS * features.frame_rate)
            title = f"trial {trial.trial_id}: {pieces[0]['name']}"
            rolls = predict(x[:n])
            figure = piano_roll_figure(rolls["frames"], frames[:n], features.frame_rate, title)
            self.tracker.log_figure(run_id, figure, "piano_roll.png")
            best_effort(self._log_excerpt, run_id, str(self.manifest.input_path(pieces[0])), rolls, decoding)
        example = np.zeros((1, 32, features.n_bins), np.float32)
        initial = self.piano.initial_model(train_cfg)
        metadata = model_metadata(
            features,
            decoding,
            context,
            model=to_dict(model_cfg),
            train=to_dict(train_cfg),
            dataset_fingerprint=self.manifest.data["fingerprint"],
            **({"init_from": initial.uri} if initial is not None else {}),
        )
        self.tracker.log_model(run_id, model, (example, model.predict_on_batch(example)), metadata)
        return mean

    def _log_excerpt(
        self, run_id: str, audio_path: str, rolls: dict[str, np.ndarray], decoding: DecodingConfig
    ) -> None:
        """A validation excerpt a researcher can listen to: ``excerpt/original.wav``, its
        transcription as ``excerpt/transcription.mid``, and that MIDI played by FluidSynth
        (``excerpt/transcription.wav``); MLflow's artifact viewer plays both."""
        from pianotx.audio import load_audio
        from pianotx.midi import write_midi
        from pianotx.render.catalog import open_pianos
        from pianotx.render.piano import write_wav

        rate = self.manifest.features.sample_rate
        seconds = len(rolls["frames"]) / self.manifest.features.frame_rate
        notes = decode_rolls(rolls, self.manifest.features.frame_rate, decoding)
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            write_wav(folder / "original.wav", load_audio(audio_path, rate)[: int(seconds * rate)], rate)
            write_midi(notes, folder / "transcription.mid")
            (piano,) = open_pianos(("FluidR3_GM",), lambda _line: None)
            played = piano.render(folder / "transcription.mid", folder / "raw.wav", rate, 1.0)
            write_wav(folder / "transcription.wav", played[: int((seconds + 1.0) * rate)], rate)
            self.tracker.log_artifacts(run_id, folder, "excerpt")

    def _tune_and_score(self, predict: Callable[[np.ndarray], Any]) -> tuple[DecodingConfig, dict[str, float]]:
        """Choose the decoding thresholds on the validation pieces (best mean note F1),
        then score those pieces with them: what transcription with this model will use."""
        features = self.manifest.features
        pieces = list(split_rolls(predict, self.manifest, "validation", self.note_eval_pieces, features))
        decoding, _ = tune_decoding([(rolls, ref) for _, rolls, ref in pieces], features.frame_rate, self.decoding)
        scores = []
        for _, rolls, ref in pieces:
            est = decode_rolls(rolls, features.frame_rate, decoding)
            scores.append(evaluate_piece(ref, est))
        return decoding, (mean_scores(scores) if scores else {})


def write_state_atomically() -> None:
    """Have Keras Tuner write its JSON state (oracle, tuner, every trial.json) atomically.

    Keras Tuner truncates these files and then writes them: a process killed in between
    leaves an empty file, and every later resume of the search fails on it. Local files
    are written to a temporary sibling and renamed into place instead (other URLs as
    Keras Tuner does). Idempotent.
    """
    from pianotx.tuning.private import state_utils

    utils = state_utils()
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


def keep_values_of_conditional_names() -> None:
    """Keep the value of a hyperparameter declared more than once under different
    conditions (``learning_rate`` on one range for trials from scratch, another for
    fine-tuning) when one of its entries is active.

    Keras Tuner's ``HyperParameters.ensure_active_values`` walks every entry and drops
    the value by name for each inactive one, so an active entry declared before an
    inactive one of the same name lost its value and the trial silently trained with
    the setting's default. Patched to drop a value only when no entry of the name is
    active. Idempotent.
    """
    cls = kt.HyperParameters
    if getattr(cls.ensure_active_values, "pianotx_named", False):
        return

    def ensure_active_values(self: Any) -> None:
        for hp in self.space:
            if self.is_active(hp):
                if hp.name not in self.values:
                    self.values[hp.name] = hp.random_sample()
            elif not self.is_active(hp.name):
                self.values.pop(hp.name, None)

    ensure_active_values.pianotx_named = True  # type: ignore[attr-defined]
    cls.ensure_active_values = ensure_active_values


class TrackedRandomSearch(TrackedTrials, kt.RandomSearch):
    pass


class TrackedBayesianOptimization(TrackedTrials, kt.BayesianOptimization):
    pass


class TrackedHyperband(TrackedTrials, kt.Hyperband):
    pass


TUNERS = {"random": TrackedRandomSearch, "bayesian": TrackedBayesianOptimization, "hyperband": TrackedHyperband}
