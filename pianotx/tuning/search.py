"""``pianotx search``: one search-space file, one Keras Tuner search, one MLflow parent run.

The same command again resumes: Keras Tuner reloads finished trials from its folder
(they are neither rerun nor logged again); a trial that was interrupted is retried and
goes on from its last epoch (Keras' BackupAndRestore), while its old MLflow run is
marked KILLED. A search-space file changed since the search began is refused unless
``overwrite`` starts the search afresh.

Distributed search is Keras Tuner's own: set ``KERASTUNER_TUNER_ID`` (``chief``,
``tuner0``, ...), ``KERASTUNER_ORACLE_IP`` and ``KERASTUNER_ORACLE_PORT`` and run the same
command on every machine with a shared ``--tracking-uri``; the chief serves the oracle
and registers the best model when all trials are done.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from pianotx.config import ConfigError, DecodingConfig
from pianotx.files import pid_alive
from pianotx.locations import Store
from pianotx.store import MANIFEST, Manifest, load_manifest
from pianotx.tracking import MODEL_URI_TAG, TRIAL_TAG, DatasetRef, SearchTracker, best_effort, register
from pianotx.tuning.space import SearchSpec, load_spec, to_hyperparameters

SPEC_COPY = "search_space.yaml"
DATASET_FINGERPRINT = "dataset_fingerprint.txt"
PACKAGES = ("pianotx", "tensorflow", "keras", "keras-tuner", "mlflow", "librosa", "numpy", "mir_eval")


@dataclass(frozen=True)
class SearchResult:
    trials: int  # completed trials
    failed: int
    best_trial_id: str | None
    best_value: float | None
    best_run_id: str | None
    model_uri: str | None
    registered_version: int | None


def tuner_directory(store: Store) -> Path:
    """Keras Tuner's state beside a local store (``mlruns/keras-tuner``), else ``./keras-tuner``."""
    if store.local_path is not None:
        return store.local_path.parent / "keras-tuner"
    return Path("keras-tuner").resolve()


def _check_unchanged(spec: SearchSpec, project: Path, fingerprint: str, overwrite: bool) -> None:
    """Refuse to resume a search whose space file or dataset changed since it began."""
    saved, saved_fp = project / SPEC_COPY, project / DATASET_FINGERPRINT
    if overwrite and project.exists():
        shutil.rmtree(project)
    elif saved.is_file() and saved.read_bytes() != spec.path.read_bytes():
        raise ConfigError(
            f"{spec.path}: changed since search {spec.name!r} began ({saved}); "
            "use --overwrite to start it afresh, or give the search a new name"
        )
    elif saved_fp.is_file() and saved_fp.read_text().strip() != fingerprint:
        raise ConfigError(
            f"the dataset changed since search {spec.name!r} began (fingerprint in {saved_fp}); "
            "use --overwrite to start it afresh, or give the search a new name"
        )
    project.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(spec.path, saved)
    saved_fp.write_text(fingerprint + "\n")


@contextmanager
def search_lock(project: Path, name: str) -> Iterator[None]:
    """Hold ``project/.lock-<tuner id>`` while a search runs, so the same search cannot
    run twice at once (a second gets one line naming the first's pid and host).

    A lock left by a process that no longer runs (same host) is taken over.

    Raises:
        ConfigError: the search is running in another process.
    """
    project.mkdir(parents=True, exist_ok=True)
    lock = project / f".lock-{os.environ.get('KERASTUNER_TUNER_ID', 'tuner0')}"
    me = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            break
        except FileExistsError:
            _refuse_or_clear(lock, name)
    else:
        raise ConfigError(f"search {name!r}: could not take its lock {lock}")
    with os.fdopen(fd, "w") as handle:
        json.dump(me, handle)
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)


def _refuse_or_clear(lock: Path, name: str) -> None:
    try:
        held = json.loads(lock.read_text())
        pid, host = int(held["pid"]), str(held["host"])
    except (OSError, ValueError, KeyError, TypeError):
        lock.unlink(missing_ok=True)  # unreadable: a half-written lock of a killed process
        return
    if host != socket.gethostname() or pid_alive(pid):
        raise ConfigError(
            f"search {name!r} is already running (pid {pid} on {host}, since {held.get('since', '?')}); "
            f"wait for it, or remove {lock} if that process is gone"
        )
    lock.unlink(missing_ok=True)


def _environment_tags() -> dict[str, str]:
    tags = {"python": platform.python_version()}
    for pkg in PACKAGES:
        try:
            tags[f"version.{pkg}"] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        if commit.returncode == 0:
            tags["mlflow.source.git.commit"] = commit.stdout.strip()
    except OSError:
        pass
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    tags["device"] = f"GPU x{len(gpus)}" if gpus else "CPU"
    return tags


def make_tuner(
    spec: SearchSpec,
    manifest: Manifest,
    tracker: SearchTracker,
    directory: Path,
    decoding: DecodingConfig,
    note_eval_pieces: int,
) -> Any:
    """The Keras Tuner tuner of ``spec`` with the whole space declared up front."""
    import keras_tuner as kt

    from pianotx.tuning.tuner import TUNERS

    settings = dict(spec.tuner_settings)
    # Keras Tuner reads seed 0 as "no seed" (a random one): shift it so that every seed
    # in a space file, 0 included, draws the same trials every time.
    settings["seed"] = int(settings.get("seed", 0)) + 1
    tuner = TUNERS[spec.tuner](
        tracker=tracker,
        manifest=manifest,
        decoding=decoding,
        note_eval_pieces=note_eval_pieces,
        objective=kt.Objective(spec.objective, spec.direction),
        hyperparameters=to_hyperparameters(spec),
        tune_new_entries=False,
        allow_new_entries=False,
        directory=str(directory),
        project_name=spec.name,
        overwrite=False,
        **settings,
    )
    state = Path(tuner.project_dir) / f"{tuner.tuner_id}.json"
    if not state.is_file():
        # Keras Tuner reloads its oracle (and so retries an interrupted trial with the
        # same hyperparameters) only where this file exists: write it before any trial.
        tuner.save()
    return tuner


def run_search(
    spec_path: str | Path,
    dataset_dir: str | Path,
    store: Store,
    register_as: str | None = "piano",
    overwrite: bool = False,
    decoding: DecodingConfig | None = None,
    note_eval_pieces: int | None = None,
    verbose: int = 2,
) -> SearchResult:
    """Run (or resume) the search of ``spec_path`` on the dataset in ``dataset_dir``."""
    spec = load_spec(spec_path)
    manifest = load_manifest(dataset_dir)
    if not manifest.data["splits"]["validation"]["chunks"] or not manifest.data["splits"]["train"]["chunks"]:
        raise ConfigError(f"{dataset_dir}: the dataset needs train and validation chunks")
    directory = tuner_directory(store)
    with search_lock(directory / spec.name, spec.name):
        return _run_locked(
            spec, manifest, store, directory, register_as, overwrite, decoding, note_eval_pieces, verbose
        )


def _run_locked(
    spec: SearchSpec,
    manifest: Manifest,
    store: Store,
    directory: Path,
    register_as: str | None,
    overwrite: bool,
    decoding: DecodingConfig | None,
    note_eval_pieces: int | None,
    verbose: int,
) -> SearchResult:
    dataset_dir = manifest.root
    fingerprint = manifest.data["fingerprint"]
    dataset = DatasetRef(dataset_dir.resolve().name, dataset_dir, fingerprint)
    tracker = SearchTracker(store, spec.name, dataset, source=f"pianotx search {spec.path.name}")
    worker = is_worker()
    if worker:  # a distributed worker: the chief owns the parent run and the registry
        tracker.attach()
    else:
        _check_unchanged(spec, directory / spec.name, fingerprint, overwrite)
        params = {
            "tuner": spec.tuner,
            "objective": f"{spec.objective} ({spec.direction})",
            "dataset": str(Path(dataset_dir).resolve()),
            "dataset_fingerprint": fingerprint,
            **{f"tuner.{k}": v for k, v in spec.tuner_settings.items()},
        }
        tracker.start_search(params, _environment_tags(), [spec.path, Path(dataset_dir) / MANIFEST], fresh=overwrite)
    try:
        if not worker:
            tracker.kill_stale_trials()
        pieces = spec.note_eval_pieces if note_eval_pieces is None else note_eval_pieces
        tuner = make_tuner(spec, manifest, tracker, directory, decoding or DecodingConfig(), pieces)
        tuner.search(str(dataset_dir), verbose=verbose)
        if worker:
            return SearchResult(0, 0, None, None, None, None, None)
        return _finish(tuner, tracker, spec, store, register_as)
    except KeyboardInterrupt:
        if not worker:
            best_effort(tracker.end_search, None, failure="interrupted", status="KILLED")
        raise
    except BaseException as exc:
        if not worker:
            best_effort(tracker.end_search, None, failure=f"{type(exc).__name__}: {exc}")
        raise


def _finish(
    tuner: Any, tracker: SearchTracker, spec: SearchSpec, store: Store, register_as: str | None
) -> SearchResult:
    from keras_tuner.engine.trial import TrialStatus

    trials = list(tuner.oracle.trials.values())
    done = [t for t in trials if t.status == TrialStatus.COMPLETED]
    failed = sum(t.status in (TrialStatus.FAILED, TrialStatus.INVALID) for t in trials)
    best = tuner.oracle.get_best_trials(1) if done else []
    if not best:
        tracker.end_search(None, failure="no trial completed")
        return SearchResult(len(done), failed, None, None, None, None, None)
    trial = best[0]
    run = tracker.complete_trial_run(trial.trial_id)
    if run is None:
        tracker.end_search(None, failure=f"trial {trial.trial_id} has no complete run")
        raise ConfigError(f"best trial {trial.trial_id} of {spec.name!r} has no complete MLflow run")
    model_uri = run.data.tags[MODEL_URI_TAG]
    value = float(trial.score)
    tracker.end_search(
        {
            "trial_id": trial.trial_id,
            "run_id": run.info.run_id,
            "model_uri": model_uri,
            "objective": spec.objective,
            "value": value,
        }
    )
    best_effort(tracker.log_summary, *_summary(trials, spec, tracker))
    version = register(store, model_uri, register_as) if register_as else None
    return SearchResult(len(done), failed, trial.trial_id, value, run.info.run_id, model_uri, version)


def _summary(trials: list[Any], spec: SearchSpec, tracker: SearchTracker) -> tuple[list[dict[str, Any]], Any]:
    """The parent run's closing table (trials sorted by the objective) and its figure
    (the objective against each searched hyperparameter)."""
    from pianotx.plots import hyperparameter_figure

    runs = {r.data.tags.get(TRIAL_TAG): r.info.run_id for r in tracker.trial_runs() if r.info.status == "FINISHED"}
    rows = []
    for trial in trials:
        row = {"trial": trial.trial_id, "status": str(trial.status), spec.objective: trial.score}
        row |= {k: trial.hyperparameters.values.get(k) for k in spec.hyperparameters}
        rows.append(row | {"run_id": runs.get(trial.trial_id, "")})
    done = [r for r in rows if r[spec.objective] is not None]
    done.sort(key=lambda r: r[spec.objective], reverse=spec.direction == "max")
    rows = done + [r for r in rows if r[spec.objective] is None]
    figure = hyperparameter_figure(done, list(spec.hyperparameters), spec.objective) if done else None
    return rows, figure


def is_worker() -> bool:
    """True in a Keras Tuner distributed worker (not the chief, not a lone process)."""
    return os.environ.get("KERASTUNER_TUNER_ID", "chief") != "chief"
