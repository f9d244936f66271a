"""Everything MLflow: the store, runs of searches and trials, models, the registry.

This is the only module that imports mlflow (a test keeps it so).

Which store is used is decided in :mod:`pianotx.locations` (no MLflow import there).
"""

from __future__ import annotations

import fcntl
import logging
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import mlflow
from mlflow.entities import Run
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.pyfunc import PythonModel as PythonModel  # the base of pianotx.serving.PianoModel
from mlflow.tracking import MlflowClient

from pianotx.errors import PianotxError
from pianotx.files import atomic_path
from pianotx.locations import UI_PORT, Store, resolve_store

METADATA_KEY = "pianotx"
TRIAL_TAG = "pianotx.trial_id"
SEARCH_TAG = "pianotx.search"
KIND_TAG = "pianotx_kind"  # "search" for a search's parent run ("search-superseded" once replaced)
MODEL_URI_TAG = "pianotx.model_uri"  # set on a trial run once its model is logged
FAILURE_TAG = "pianotx.failure"  # why a run FAILED or was KILLED
KIND_KEY, KIND_VALUE = "mlflow.experimentKind", "custom_model_development"  # read by MLflow's UI
OBJECTIVE_METRIC = "trial_objective"  # a trial's best value of the search objective, logged last
WORKER_TAG = "pianotx.worker"  # which process ran a run: Keras Tuner's tuner id ("chief", "tuner0", ...)
HOST_TAG = "pianotx.host"
HEARTBEAT_TAG = "pianotx.heartbeat"  # a distributed worker's trial run: wall-clock seconds of its last beat
STATE_TAG = "pianotx.state"  # a search run: HOST:FOLDER of its Keras Tuner state
ORACLE_TAG = "pianotx.oracle"  # a distributed search run: the chief's HOST:PORT
WORKER_TIMEOUT_TAG = "pianotx.worker_timeout"  # seconds without a heartbeat before a trial is retried
RESUMED_TAG = "pianotx.resumed_from"  # a trial run that went on from another run's last epoch
SETTLE_SECONDS = 1.0  # how long a new search run waits for a concurrent twin before settling on one
# What a logged model needs installed to load and run (pianotx itself travels with the
# model as code): pianotx's dependencies on the way from audio to notes, as pyproject.toml
# pins them (TensorFlow as its `cpu` and `gpu` extras do). MLflow adds itself.
PIP_REQUIREMENTS = [
    "tensorflow>=2.16,<2.22",
    "keras>=3.3,<4",
    "numpy>=1.26",
    "scipy>=1.11",
    "soundfile>=0.12",
    "soxr>=0.3.2",
]
# The file MLflow runs to build a logged model's Python object ("models from code"): no
# pickle is stored, so loading needs no MLFLOW_ALLOW_PICKLE_DESERIALIZATION.
MODEL_CODE = '''"""pianotx's audio-to-notes model, as MLflow loads it (see pianotx.serving)."""

from mlflow.models import set_model

from pianotx.serving import PianoModel

set_model(PianoModel())
'''


class TrackingError(PianotxError, RuntimeError):
    """A model URI or store that cannot be used."""


def connect(store: Store) -> MlflowClient:
    """Point MLflow (tracking and registry) at ``store``; quiet its migrations' logging."""
    logging.getLogger("alembic").setLevel(logging.WARNING)
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    mlflow.set_tracking_uri(store.tracking_uri)
    mlflow.set_registry_uri(store.tracking_uri)
    if store.local_path is None:
        return MlflowClient(store.tracking_uri, store.tracking_uri)
    store.local_path.parent.mkdir(parents=True, exist_ok=True)
    # Opening a SQLite store creates or migrates its schema; two processes doing that at
    # once on a new store collide ("duplicate column name"): one at a time.
    with (store.local_path.parent / ".schema.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if not store.local_path.is_file():
                _create_store(store.local_path)
            client = _opened(store.tracking_uri)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return client


def _opened(uri: str) -> MlflowClient:
    """A client of ``uri`` whose store has its schema (created or migrated on first use)."""
    client = MlflowClient(uri, uri)
    client.search_experiments(max_results=1)
    client.search_registered_models(max_results=1)
    return client


def _create_store(db: Path) -> None:
    """Make the SQLite store ``db`` whole: its schema is built in a temporary file beside
    it, renamed into place when complete. MLflow's migrations are not one transaction on
    SQLite, so a process killed among them would leave a store that every later command
    fails to open ("table ... already exists"). Called under the schema lock, so older
    temporary files are what killed processes left."""
    for stale in db.parent.glob(f".{db.name}.tmp-*"):
        stale.unlink(missing_ok=True)
    with atomic_path(db) as tmp:  # SQLite takes the empty file for a new database
        _opened(f"sqlite:///{tmp}")


def experiment_id(client: MlflowClient, store: Store, name: str) -> str:
    """The experiment ``name``, created with its artifacts under the store's root and
    tagged as model training, so that MLflow's UI opens it on its runs (not on the
    GenAI overview)."""
    exp = client.get_experiment_by_name(name)
    if exp is None:
        location = f"{store.artifact_root}/{name}" if store.artifact_root else None
        try:
            return client.create_experiment(name, artifact_location=location, tags={KIND_KEY: KIND_VALUE})
        except MlflowException:  # another process created it between the two calls
            exp = client.get_experiment_by_name(name)
            if exp is None:
                raise
    if exp.tags.get(KIND_KEY) != KIND_VALUE:
        client.set_experiment_tag(exp.experiment_id, KIND_KEY, KIND_VALUE)
    return exp.experiment_id


@dataclass(frozen=True)
class DatasetRef:
    """A built dataset as MLflow shows it: its name, folder and fingerprint (digest)."""

    name: str
    path: Path
    digest: str

    def as_input(self, context: str) -> Any:
        """An MLflow dataset input (the runs table's Dataset column)."""
        from mlflow.data.dataset_source_registry import resolve_dataset_source
        from mlflow.data.meta_dataset import MetaDataset
        from mlflow.entities import DatasetInput, InputTag

        with warnings.catch_warnings():  # two registered local sources match a path; either serves
            warnings.simplefilter("ignore", UserWarning)
            source = resolve_dataset_source(str(self.path.resolve()))
        dataset = MetaDataset(source, self.name, self.digest[:32])  # type: ignore[abstract]
        return DatasetInput(dataset._to_mlflow_entity(), [InputTag("mlflow.data.context", context)])


def clean_value(value: Any) -> Any:
    """Round floats so 0.30000000000000004 is logged (and re-logged) as 0.3."""
    return round(value, 10) if isinstance(value, float) else value


def best_effort(action: Any, *args: Any, **kwargs: Any) -> None:
    """Run a bookkeeping call on a failure path; a failure of its own (a store that is
    locked or gone) is logged, never raised over the error being handled. Runs it could
    not close are marked KILLED when the search resumes."""
    for attempt in range(3):  # a store busy with another writer answers a moment later
        try:
            action(*args, **kwargs)
            return
        except Exception as exc:  # noqa: BLE001 - the original error matters more
            if attempt == 2:
                logging.getLogger(__name__).warning("could not record in MLflow: %s", exc)
            else:
                time.sleep(0.5)


class SearchTracker:
    """A parent run per search (one experiment per search name), a nested run per trial.

    Keras Tuner workers of a distributed search each make their own tracker; they find
    the same parent run through its tag, so all trials nest under one search run.
    """

    def __init__(self, store: Store, search_name: str, dataset: DatasetRef | None = None, source: str = ""):
        self.store = store
        self.client = connect(store)
        self.name = search_name
        self.dataset = dataset
        self.source_tags = {
            "mlflow.source.name": source or f"pianotx search {search_name}",
            "mlflow.source.type": "LOCAL",
        }
        self.experiment_id = experiment_id(self.client, store, search_name)
        self.parent_id: str | None = None

    def _runs(self, query: str) -> list[Run]:
        return self.client.search_runs([self.experiment_id], query, max_results=10000)

    def _search_runs(self) -> list[Run]:
        """The search's current parent runs, earliest first (more than one only while two
        processes race to create it)."""
        found = self._runs(f"tags.{SEARCH_TAG} = '{self.name}' and tags.{KIND_TAG} = 'search'")
        return sorted(found, key=lambda r: (r.info.start_time, r.info.run_id))

    def find_search(self) -> Any | None:
        """The search's parent run (``None`` before the search's first start)."""
        found = self._search_runs()
        return found[0] if found else None

    def has_trials(self, run_id: str) -> bool:
        """Whether the search run ``run_id`` has any trial run."""
        query = f"tags.mlflow.parentRunId = '{run_id}'"
        return bool(self.client.search_runs([self.experiment_id], query, max_results=1))

    def start_search(
        self,
        params: dict[str, Any],
        tags: dict[str, str],
        files: list[Path],
        fresh: bool = False,
        settle: float = SETTLE_SECONDS,
    ) -> str:
        """Open (or reopen, when resuming) the parent run and record the search's setup.

        ``fresh``: an earlier search of this name is kept but no longer resumed. Two
        processes creating the search at once settle on one run, the earliest (by start
        time, then id): each waits ``settle`` seconds after creating its own, and the
        other deletes its twin and joins it, so its setup is recorded once.
        """
        found = self._search_runs()
        if fresh:
            for run in found:
                self.client.set_tag(run.info.run_id, KIND_TAG, "search-superseded")
                if run.info.status == "RUNNING":
                    self.client.set_terminated(run.info.run_id, "KILLED")
            found = []
        if found:
            self.parent_id = found[0].info.run_id
            self.client.update_run(self.parent_id, status="RUNNING")
            inputs = found[0].inputs
            if inputs is None or not inputs.dataset_inputs:  # a kill may have cut the first recording short
                self._log_dataset(self.parent_id)
            self._record_setup(found[0], params, files)
            return self.parent_id
        self.source_tags |= {k: v for k, v in tags.items() if k.startswith("mlflow.source.")}
        run = self.client.create_run(
            self.experiment_id,
            run_name=self.name,
            tags={SEARCH_TAG: self.name, KIND_TAG: "search", **self.source_tags, **tags},
        )
        time.sleep(settle)
        first = self._search_runs()[0].info.run_id
        if first != run.info.run_id:  # a twin created at the same moment came first
            self.client.delete_run(run.info.run_id)
            self.parent_id = first
            return first
        self.parent_id = run.info.run_id
        self._log_dataset(self.parent_id)
        self._record_setup(run, params, files)
        return self.parent_id

    def set_tags(self, run_id: str, tags: dict[str, str]) -> None:
        for key, value in tags.items():
            self.client.set_tag(run_id, key, value)

    def _record_setup(self, run: Any, params: dict[str, Any], files: list[Path]) -> None:
        """Log the params and files that ``run`` does not hold yet."""
        for key, value in params.items():
            if key not in run.data.params:
                self.client.log_param(run.info.run_id, key, clean_value(value))
        logged = {a.path for a in self.client.list_artifacts(run.info.run_id)}
        for path in files:
            if Path(path).name not in logged:
                self.client.log_artifact(run.info.run_id, str(path))

    def kill_stale_trials(self) -> list[str]:
        """Mark trial runs left RUNNING by an interrupted search KILLED; their run ids."""
        stale = self._runs(f"tags.mlflow.parentRunId = '{self.parent_id}' and attributes.status = 'RUNNING'")
        return self.kill_runs([r.info.run_id for r in stale], "interrupted")

    def kill_runs(self, run_ids: list[str], reason: str) -> list[str]:
        """Mark runs KILLED with ``reason`` as tag ``pianotx.failure``; their ids."""
        for run_id in run_ids:
            self.client.set_tag(run_id, FAILURE_TAG, reason[:5000])
            self.client.set_terminated(run_id, "KILLED")
        return run_ids

    def running_trial_runs(self) -> list[Run]:
        """The search's trial runs that are RUNNING."""
        return self._runs(f"tags.mlflow.parentRunId = '{self.parent}' and attributes.status = 'RUNNING'")

    def kill_trial_runs(self, trial_id: str, reason: str) -> list[str]:
        """Mark the trial's RUNNING runs KILLED (a trial starting again: they are stale)."""
        stale = [r.info.run_id for r in self.running_trial_runs() if r.data.tags.get(TRIAL_TAG) == trial_id]
        return self.kill_runs(stale, reason)

    def beat(self, run_id: str) -> str:
        """A worker's heartbeat on its trial run; the run's status (KILLED: the chief
        gave the trial to another worker)."""
        self.client.set_tag(run_id, HEARTBEAT_TAG, f"{time.time():.3f}")
        return str(self.client.get_run(run_id).info.status)

    def copy_history(
        self,
        trial_id: str,
        run_id: str,
        keys: tuple[str, ...],
        first: int,
        last: int,
        fill: Mapping[int, Mapping[str, float]] | None = None,
    ) -> str | None:
        """Copy the epochs ``first..last`` (steps) of ``keys`` into ``run_id`` from the
        trial's earlier runs (the latest run holding a step wins), so the run that goes
        on from an interrupted run's last epoch holds the trial's whole history; the id
        of the run it went on from (``None`` when none had those epochs).

        ``fill`` (``{step: {key: value}}``, the trial's own record of its epochs) gives
        the values of steps no earlier run logged: a process killed after an epoch's
        backup but before its logging leaves such a step.
        """
        from mlflow.entities import Metric

        earlier = sorted(
            (
                r
                for r in self._runs(f"tags.mlflow.parentRunId = '{self.parent}' and tags.`{TRIAL_TAG}` = '{trial_id}'")
                if r.info.run_id != run_id
            ),
            key=lambda r: r.info.start_time,
        )
        merged: dict[tuple[str, int], Metric] = {}
        source = None
        for run in earlier:
            for key in keys:
                for m in self.client.get_metric_history(run.info.run_id, key):
                    if first <= m.step <= last:
                        merged[(key, m.step)] = Metric(key, m.value, m.timestamp, m.step)
                        source = run.info.run_id
        now = int(time.time() * 1000)
        for step, values in sorted((fill or {}).items()):
            if first <= step <= last and not any((key, step) in merged for key in keys):
                merged.update({(k, step): Metric(k, float(v), now, step) for k, v in values.items() if k in keys})
        metrics = list(merged.values())
        for start in range(0, len(metrics), 1000):  # MLflow takes at most 1000 per batch
            self.client.log_batch(run_id, metrics=metrics[start : start + 1000])
        if earlier and (source is not None or metrics):
            source = source or earlier[-1].info.run_id
            self.client.set_tag(run_id, RESUMED_TAG, f"run {source} at epoch {last}")
        return source

    def trial_runs(self) -> list[Run]:
        """All trial runs of this search."""
        return self._runs(f"tags.mlflow.parentRunId = '{self.parent_id}'")

    def complete_trial_run(self, trial_id: str) -> Any | None:
        """The trial's run that finished with its model logged (the latest, should a
        store hold two); ``None`` when the trial has none.

        A run is FINISHED only after its model is logged and tagged, so this is the run
        to register; a trial killed after its run finished but before Keras Tuner
        recorded it is not trained again but answered from this run.
        """
        runs = self._runs(
            f"tags.mlflow.parentRunId = '{self.parent}' and tags.`{TRIAL_TAG}` = '{trial_id}' "
            "and attributes.status = 'FINISHED'"
        )
        complete = [r for r in runs if MODEL_URI_TAG in r.data.tags and OBJECTIVE_METRIC in r.data.metrics]
        return max(complete, key=lambda r: r.info.start_time) if complete else None

    def _log_dataset(self, run_id: str) -> None:
        if self.dataset is not None:
            self.client.log_inputs(run_id, datasets=[self.dataset.as_input("training")])

    def start_trial(self, trial_id: str, params: dict[str, Any], tags: dict[str, str] | None = None) -> str:
        """A nested run for one trial, holding every setting of its model and training
        (searched, fixed and default alike) so MLflow's compare view lines trials up."""
        run = self.client.create_run(
            self.experiment_id,
            run_name=f"trial-{trial_id}",
            tags={
                "mlflow.parentRunId": self.parent,
                TRIAL_TAG: trial_id,
                SEARCH_TAG: self.name,
                **self.source_tags,
                **(tags or {}),
            },
        )
        from mlflow.entities import Param

        params_list = [Param(key, str(clean_value(value))) for key, value in params.items()]
        for start in range(0, len(params_list), 100):  # MLflow takes at most 100 per batch
            self.client.log_batch(run.info.run_id, params=params_list[start : start + 100])
        self._log_dataset(run.info.run_id)
        return run.info.run_id

    def log_artifacts(self, run_id: str, folder: Path, path: str) -> None:
        """Every file of ``folder`` under artifact path ``path`` of the run."""
        self.client.log_artifacts(run_id, str(folder), path)

    def log_summary(self, rows: list[dict[str, Any]], figure: Any | None) -> None:
        """The parent run's closing summary: a table of the trials and a figure."""
        if rows:
            columns = list(dict.fromkeys(k for row in rows for k in row))
            table = {c: [clean_value(row.get(c)) for row in rows] for c in columns}
            self.client.log_table(self.parent, table, "trials.json")
        if figure is not None:
            self.client.log_figure(self.parent, figure, "hyperparameters.png")

    def log_metrics(self, run_id: str, metrics: dict[str, float], step: int | None = None) -> None:
        for key, value in metrics.items():
            self.client.log_metric(run_id, key, float(value), step=step or 0)

    def log_figure(self, run_id: str, figure: Any, name: str) -> None:
        self.client.log_figure(run_id, figure, name)

    def log_model(self, run_id: str, model: Any, example: tuple[Any, Any] | None, metadata: dict[str, Any]) -> str:
        """Log a Keras model carrying ``metadata`` as the audio-to-notes model of
        :mod:`pianotx.serving`; its URI (see :meth:`log_model_to`)."""
        return self.log_model_to(self.client, run_id, model, example, metadata)

    @staticmethod
    def log_model_to(
        client: MlflowClient, run_id: str, model: Any, example: tuple[Any, Any] | None, metadata: dict[str, Any]
    ) -> str:
        """Log ``model`` (Keras) with ``metadata`` (:func:`pianotx.config.model_metadata`
        and more) as artifact ``model`` of run ``run_id``, an MLflow ``python_function``
        model that takes audio and returns notes (:class:`pianotx.serving.PianoModel`);
        its URI (also set as the run's tag ``pianotx.model_uri``).

        The logged model holds the Keras file and the metadata (artifact
        ``transcriber``), the pianotx package as code (a Python without pianotx loads
        it), :data:`PIP_REQUIREMENTS`, the signature of :func:`serving_signature`, a
        short silent WAV as input example, and ``metadata`` under the MLmodel's
        metadata key ``pianotx``. ``example`` (a batch of features and the Keras
        model's outputs, which the Keras-flavour models of earlier versions were
        logged with) is not needed and is ignored.
        """
        from pianotx import serving

        with tempfile.TemporaryDirectory(prefix="pianotx-log-") as tmp:
            folder = serving.save_transcriber(model, metadata, Path(tmp) / serving.ARTIFACT)
            code = _package_copy(Path(tmp) / "code")
            entry = Path(tmp) / "piano_model.py"
            entry.write_text(MODEL_CODE)
            path = list(sys.path)
            mlflow.start_run(run_id=run_id, nested=mlflow.active_run() is not None)
            try:
                with warnings.catch_warnings():  # MLflow's notes on models-from-code files
                    warnings.simplefilter("ignore", UserWarning)
                    info = mlflow.pyfunc.log_model(
                        name="model",
                        python_model=str(entry),
                        artifacts={serving.ARTIFACT: str(folder)},
                        code_paths=[str(code)],
                        signature=serving_signature(),
                        input_example=serving_example(),
                        pip_requirements=PIP_REQUIREMENTS,
                        metadata={METADATA_KEY: metadata},
                    )
            finally:
                # MLflow checks the input example by loading the model, which puts the
                # model's copy of pianotx on sys.path: this process keeps its own.
                sys.path[:] = path
                # Leaving the run as a `with mlflow.start_run` block does would mark it
                # FINISHED before its objective is logged, and a kill then would leave a
                # FINISHED run that no resume closes: it stays RUNNING until end_trial.
                mlflow.end_run(status="RUNNING")
        client.set_tag(run_id, MODEL_URI_TAG, info.model_uri)
        return str(info.model_uri)

    def end_trial(self, run_id: str, failure: str | None = None, status: str | None = None) -> None:
        """FINISHED, or ``status`` (default FAILED) with the reason as tag ``pianotx.failure``."""
        if failure:
            self.client.set_tag(run_id, FAILURE_TAG, failure[:5000])
        self.client.set_terminated(run_id, status or ("FAILED" if failure else "FINISHED"))

    def attach(self, timeout: float = 300.0) -> str:
        """Join the parent run the chief of a distributed search created (waits for it;
        of two runs created in a race, the one the chief settled on)."""
        deadline = time.monotonic() + timeout
        while True:
            found = self._search_runs()
            if found:
                self.parent_id = found[0].info.run_id
                return self.parent_id
            if time.monotonic() > deadline:
                raise TrackingError(f"no search run {self.name!r} in {self.store.tracking_uri}; start the chief first")
            time.sleep(2.0)

    @property
    def parent(self) -> str:
        """The search's parent run id (after :meth:`start_search` or :meth:`attach`)."""
        if self.parent_id is None:
            raise TrackingError(f"search {self.name!r} has no parent run yet")
        return self.parent_id

    def end_search(self, best: dict[str, Any] | None, failure: str | None = None, status: str | None = None) -> None:
        if best:
            self.client.set_tag(self.parent, "best_trial_id", best["trial_id"])
            self.client.set_tag(self.parent, "best_run_id", best["run_id"])
            self.client.set_tag(self.parent, "best_model_uri", best["model_uri"])
            self.log_metrics(self.parent, {f"best_{best['objective']}": best["value"]})
        if failure:
            self.client.set_tag(self.parent, FAILURE_TAG, failure[:5000])
        self.client.set_terminated(self.parent, status or ("FAILED" if failure else "FINISHED"))


def _package_copy(folder: Path) -> Path:
    """A copy of the pianotx package (its sources, not the bundled model's file nor
    bytecode) as ``folder/pianotx``, for a logged model's ``code_paths``."""
    import shutil

    source = Path(__file__).resolve().parent
    target = folder / source.name
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.keras"))
    return target


def bad_request(message: str) -> MlflowException:
    """An MLflow error saying ``message``, which MLflow's scoring server answers with
    HTTP 400 and ``message`` in its JSON body (a served model's refusal of a request)."""
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

    return MlflowException(message, error_code=INVALID_PARAMETER_VALUE)


def serving_signature() -> Any:
    """The signature of every model pianotx logs (see :mod:`pianotx.serving`): input
    columns ``audio`` (string, a file path) and ``audio_bytes`` (binary, the file's
    contents), either one per row; output columns ``input`` (long), ``onset`` and
    ``offset`` (double), ``pitch`` and ``velocity`` (long)."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    from pianotx.serving import INPUT_COLUMNS, NOTE_COLUMNS

    inputs = Schema([ColSpec(kind, name, required=False) for name, kind in INPUT_COLUMNS.items()])
    outputs = Schema([ColSpec(kind, name) for name, kind in NOTE_COLUMNS.items()])
    return ModelSignature(inputs=inputs, outputs=outputs)


def serving_example(seconds: float = 0.25, sample_rate: int = 16000) -> Any:
    """The input example logged with every model: one row of ``audio_bytes``, a WAV
    file of ``seconds`` of silence (MLflow shows it as a request body, base64 text)."""
    import io

    import numpy as np
    import pandas as pd
    import soundfile

    buffer = io.BytesIO()
    soundfile.write(buffer, np.zeros(int(seconds * sample_rate), np.float32), sample_rate, format="WAV")
    return pd.DataFrame({"audio_bytes": [buffer.getvalue()]})


CHAMPION_ALIAS = "champion"  # the version `pianotx transcribe` uses (stage Production, alias production too)
CHALLENGER_ALIAS = "challenger"  # the latest search's best model, promoted or not
PRODUCTION_ALIAS = "production"
BUNDLED_TAG = "pianotx.bundled"  # on a version holding the bundled model: its file's digest
BUNDLED_EXPERIMENT = "bundled"  # the runs that logged the bundled model for the registry
COMPARISON_TAG = "pianotx.comparison_run"  # on a search run: its champion-challenger evaluation run
DECISION_TAG = "pianotx.decision"  # promoted | kept


def register_version(
    store: Store, model_uri: str, name: str, tags: Mapping[str, str] | None = None, description: str | None = None
) -> int:
    """Register ``model_uri`` as a version of ``name`` (reusing the version that already
    holds it: a resumed search does not register twice), with ``tags`` and
    ``description``; no stage or alias is moved. The version number."""
    client = connect(store)
    same = [v for v in _versions(client, name) if v.source == model_uri]
    version = same[0] if same else mlflow.register_model(model_uri, name)
    set_version_tags(store, name, int(version.version), tags or {})
    if description:
        client.update_model_version(name, version.version, description=description)
    return int(version.version)


def set_alias(store: Store, name: str, alias: str, version: int) -> None:
    connect(store).set_registered_model_alias(name, alias, str(version))


def promote(store: Store, name: str, version: int, stage: str = "Production") -> None:
    """Make ``version`` the one ``models:/NAME/Production`` serves: stage ``stage`` (the
    previous version archived) and aliases ``champion`` and ``production``."""
    client = connect(store)
    with warnings.catch_warnings():  # stages are deprecated but still serve models:/NAME/Production
        warnings.simplefilter("ignore")
        client.transition_model_version_stage(name, str(version), stage, archive_existing_versions=True)
    for alias in (CHAMPION_ALIAS, PRODUCTION_ALIAS):
        client.set_registered_model_alias(name, alias, str(version))


def register(store: Store, model_uri: str, name: str, stage: str = "Production") -> int:
    """Register ``model_uri`` as a version of ``name`` and :func:`promote` it, whatever
    it scores; the version number."""
    version = register_version(store, model_uri, name)
    promote(store, name, version, stage)
    return version


def champion_version(store: Store, name: str) -> int | None:
    """The version of ``name`` that serves: alias ``champion``, else the latest in stage
    Production; ``None`` when there is none (a store not created yet has none)."""
    if not store.exists:
        return None
    client = connect(store)
    try:
        return int(client.get_model_version_by_alias(name, CHAMPION_ALIAS).version)
    except MlflowException:
        pass
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            latest = client.get_latest_versions(name, stages=["Production"])
        except MlflowException:
            return None
    return int(latest[0].version) if latest else None


def version_with_tag(store: Store, name: str, key: str, value: str) -> int | None:
    """The first version of ``name`` tagged ``key=value`` (``None``: none)."""
    found = [v for v in _versions(connect(store), name) if v.tags.get(key) == value]
    return min(int(v.version) for v in found) if found else None


def log_bundled(store: Store, model: Any, metadata: dict[str, Any], digest: str, n_bins: int | None = None) -> str:
    """Log the bundled model as an MLflow model (a run of experiment ``bundled``), so that
    it can be registered like a search's; its model URI. ``n_bins`` (the model's input
    width, which Keras-flavour logging needed for an example) is ignored."""
    client = connect(store)
    run = client.create_run(
        experiment_id(client, store, BUNDLED_EXPERIMENT),
        run_name="pianotx bundled model",
        tags={BUNDLED_TAG: digest, "mlflow.source.name": "pianotx/bundled/piano.keras", "mlflow.source.type": "LOCAL"},
    )
    try:
        uri = SearchTracker.log_model_to(client, run.info.run_id, model, None, metadata)
    except BaseException:
        best_effort(client.set_terminated, run.info.run_id, "FAILED")
        raise
    client.set_terminated(run.info.run_id, "FINISHED")
    return uri


def log_comparison(store: Store, comparison: dict[str, Any], search_run_id: str | None) -> str:
    """One run of experiment ``evaluation`` recording a champion-challenger comparison
    (see :func:`pianotx.tuning.champion.compare`): both versions' scores per split as
    metrics (``challenger_validation_note_f1``, ...), the decision as tag
    ``pianotx.decision`` and as the run's note, the search run it closes linked both
    ways (tag ``pianotx.search_run`` here, ``pianotx.comparison_run`` there)."""
    client = connect(store)
    tags = {
        DECISION_TAG: comparison["decision"],
        "mlflow.note.content": comparison["summary"],
        "model_name": comparison["model_name"],
    }
    if search_run_id:
        tags["pianotx.search_run"] = search_run_id
    run = client.create_run(
        experiment_id(client, store, "evaluation"),
        tags=tags,
        run_name=f"{comparison['model_name']} v{comparison['challenger']['version']} "
        f"vs v{comparison['champion']['version']}",
    )
    from mlflow.entities import Metric, Param

    params = {
        "challenger_version": comparison["challenger"]["version"],
        "champion_version": comparison["champion"]["version"],
        "challenger_uri": comparison["challenger"]["uri"],
        "champion_uri": comparison["champion"]["uri"],
        "objective": comparison["objective"],
        "metric": comparison["metric"],
        "promote": comparison["policy"],
        "dataset": comparison["dataset"],
        "dataset_fingerprint": comparison["dataset_fingerprint"],
    }
    now = int(time.time() * 1000)
    metrics = [
        Metric(f"{role}_{split}_{key}", float(value), now, 0)
        for role in ("challenger", "champion")
        for split, scores in comparison[role]["scores"].items()
        for key, value in scores.items()
    ]
    client.log_batch(
        run.info.run_id, metrics=metrics, params=[Param(k, str(clean_value(v))) for k, v in params.items()]
    )
    client.log_dict(run.info.run_id, comparison, "comparison.json")
    client.set_terminated(run.info.run_id, "FINISHED")
    if search_run_id:
        client.set_tag(search_run_id, COMPARISON_TAG, run.info.run_id)
    return run.info.run_id


def run_tags(store: Store, run_id: str) -> dict[str, str]:
    return dict(connect(store).get_run(run_id).data.tags)


def set_run_tags(store: Store, run_id: str, tags: Mapping[str, str]) -> None:
    client = connect(store)
    for key, value in tags.items():
        client.set_tag(run_id, key, value)


def set_version_tags(store: Store, name: str, version: int, tags: Mapping[str, Any]) -> None:
    client = connect(store)
    for key, value in tags.items():
        client.set_model_version_tag(name, str(version), key, str(clean_value(value)))


def comparison_of(store: Store, run_id: str) -> dict[str, Any] | None:
    """The comparison recorded by evaluation run ``run_id`` (``None``: none there)."""
    connect(store)
    try:
        return dict(mlflow.artifacts.load_dict(f"runs:/{run_id}/comparison.json"))
    except (MlflowException, OSError, ValueError):
        return None


def _versions(client: MlflowClient, name: str) -> list[ModelVersion]:
    try:
        return list(client.search_model_versions(f"name = '{name}'"))
    except MlflowException:
        return []


def registered_models(store: Store) -> list[str]:
    return sorted(m.name for m in connect(store).search_registered_models())


def has_model(store: Store, uri: str) -> bool:
    """Whether ``uri`` (models:/...) resolves in ``store`` (a store not created yet has none)."""
    if not store.exists:
        return False
    connect(store)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            mlflow.artifacts.download_artifacts(artifact_uri=f"{uri}/MLmodel", dst_path=tmp)
            return True
        except (MlflowException, OSError):
            return False


def load_model(store: Store, uri: str) -> tuple[Any, dict[str, Any]]:
    """Load a logged model's Keras model and the pianotx metadata it carries.

    ``uri``: ``models:/NAME/STAGE``, ``models:/NAME@ALIAS``, ``models:/NAME/VERSION``,
    ``runs:/RUN_ID/model`` or a local model folder. Both kinds of model pianotx has
    logged load: the audio-to-notes models of :mod:`pianotx.serving` (the Keras file of
    their artifact ``transcriber``) and the Keras-flavour models of earlier versions.

    Raises:
        TrackingError: the URI does not resolve (the message lists registered models),
            or names a model that is neither kind.
    """
    from mlflow.models import Model

    import pianotx.model  # noqa: F401 - registers pianotx's layers and losses for loading

    if not store.exists and uri.startswith(("models:/", "runs:/")):  # reading creates nothing
        raise TrackingError(f"model {uri} not found in {store.tracking_uri} (registered models: none)")
    connect(store)
    try:
        local = mlflow.artifacts.download_artifacts(artifact_uri=uri) if ":" in uri else uri
        logged = Model.load(local)
        meta = (logged.metadata or {}).get(METADATA_KEY)
        with warnings.catch_warnings():  # the optimizer's slots are not needed for inference
            warnings.simplefilter("ignore", UserWarning)
            model = _keras_model(uri, local, logged)
    except TrackingError:
        raise
    except (MlflowException, OSError) as exc:
        names = ", ".join(registered_models(store)) or "none"
        raise TrackingError(f"model {uri} not found in {store.tracking_uri} (registered models: {names})") from exc
    except Exception as exc:  # MLflow's artifact repositories raise many types on odd URIs
        raise TrackingError(f"model {uri} cannot be loaded ({type(exc).__name__}: {exc})") from exc
    if meta is None:
        raise TrackingError(f"model {uri} carries no pianotx metadata (feature config)")
    return model, meta


def _keras_model(uri: str, local: str, logged: Any) -> Any:
    """The Keras model of the logged model ``logged``, downloaded to ``local``."""
    if "keras" in logged.flavors:  # logged by an earlier version with MLflow's Keras flavour
        import mlflow.keras

        return mlflow.keras.load_model(local)
    import keras

    from pianotx.serving import ARTIFACT, MODEL_FILE

    artifacts = logged.flavors.get("python_function", {}).get("artifacts", {})
    if ARTIFACT not in artifacts:
        raise TrackingError(f"model {uri} is not a pianotx model (no artifact {ARTIFACT!r} nor Keras flavour)")
    return keras.models.load_model(Path(local) / artifacts[ARTIFACT]["path"] / MODEL_FILE, compile=False)


def model_version(store: Store, uri: str) -> dict[str, str]:
    """Registered name and version behind a ``models:/`` URI (empty when not registered)."""
    if not uri.startswith("models:/") or uri.startswith("models:/m-"):
        return {}
    client = connect(store)
    rest = uri.removeprefix("models:/")
    if "@" in rest:
        name, alias = rest.split("@", 1)
        return {"model_name": name, "model_version": str(client.get_model_version_by_alias(name, alias).version)}
    name, _, ref = rest.partition("/")
    if ref.isdigit():
        return {"model_name": name, "model_version": ref}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        latest = client.get_latest_versions(name, stages=[ref])
    return {"model_name": name, "model_version": str(latest[0].version)} if latest else {"model_name": name}


def log_evaluation(store: Store, report: dict[str, Any], experiment: str = "evaluation") -> str:
    """One run recording an evaluation (see :func:`pianotx.evaluate.write_report`): the
    mean scores as metrics, tagged with the model's registered name and version."""
    client = connect(store)
    tags = {"pianotx.model": report["model"], **model_version(store, report["model"])}
    run = client.create_run(
        experiment_id(client, store, experiment),
        tags=tags,
        run_name=f"{tags.get('model_name', 'model')}-{report['split']}",
    )
    params = {
        "split": report["split"],
        "dataset": report["dataset"],
        "dataset_fingerprint": report["dataset_fingerprint"],
        "pieces": report["pieces"],
    }
    for key, value in params.items():
        client.log_param(run.info.run_id, key, clean_value(value))
    for key, value in report["mean"].items():
        client.log_metric(run.info.run_id, key, float(value))
    client.log_dict(run.info.run_id, report, "evaluation.json")
    client.set_terminated(run.info.run_id, "FINISHED")
    return run.info.run_id


def latest_search_url(store: Store, port: int = UI_PORT) -> str | None:
    """The UI's address of the runs of the most recent search in ``store`` (``None``
    when the store holds none; a store that does not exist is not created)."""
    if not store.exists:
        return None
    client = connect(store)
    experiments = [e.experiment_id for e in client.search_experiments()]
    if not experiments:
        return None
    runs = client.search_runs(
        experiments, f"tags.{KIND_TAG} = 'search'", max_results=1, order_by=["attributes.start_time DESC"]
    )
    if not runs:
        return None
    return f"http://127.0.0.1:{port}/#/experiments/{runs[0].info.experiment_id}/runs"


def open_ui(tracking_uri: str | None, port: int, echo: Callable[[str], None]) -> NoReturn:
    """``pianotx ui``: replace this process with MLflow's UI over the store (as for a
    search: ``tracking_uri``, else ``MLFLOW_TRACKING_URI``, else ``mlruns/``), after
    saying its command line and the address of the latest search's trials.

    Raises:
        TrackingError: MLflow's ``mlflow`` command is not beside this Python.
    """
    store = resolve_store(tracking_uri)
    cmd = ui_command(store, port)
    echo(" ".join(cmd))
    url = latest_search_url(store, port)
    echo(f"the latest search's trials: {url}" if url else f"open http://127.0.0.1:{port}")
    mlflow_bin = Path(sys.executable).with_name("mlflow")
    if not mlflow_bin.is_file():
        raise TrackingError(f"{mlflow_bin}: MLflow's command is missing; run `make install`")
    os.execv(str(mlflow_bin), [str(mlflow_bin), *cmd[1:]])


def ui_command(store: Store, port: int = UI_PORT) -> list[str]:
    """The ``mlflow ui`` command line over ``store``, bound to 127.0.0.1."""
    cmd = ["mlflow", "ui", "--backend-store-uri", store.tracking_uri, "--host", "127.0.0.1", "--port", str(port)]
    if store.artifact_root:
        cmd += ["--default-artifact-root", store.artifact_root]
    return cmd
