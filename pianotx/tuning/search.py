"""``pianotx search``: one search-space file, one Keras Tuner search, one MLflow parent run.

The same command again resumes: Keras Tuner reloads finished trials from its folder
(they are neither rerun nor logged again); a trial that was interrupted is retried and
goes on from its last epoch (Keras' BackupAndRestore), while its old MLflow run is
marked KILLED. A search-space file changed since the search began is refused unless
``overwrite`` starts the search afresh.

Keras Tuner's state lives in a folder derived from the store, not from the working
folder (:mod:`pianotx.tuning.state`), bound to the search's parent run both ways.

Distributed search is Keras Tuner's own (:mod:`pianotx.tuning.distributed`): a chief
(``role`` from :func:`~pianotx.tuning.distributed.chief_role`) creates the parent run,
serves the oracle, takes trials back from workers that stopped beating, and registers
the best model when all trials are done; it trains nothing. Workers
(:func:`~pianotx.tuning.distributed.worker_role`, or Keras Tuner's environment
variables) wait for the chief, nest their trial runs under its parent run, and return
once the chief has no trial left for them.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import re
import shutil
import socket
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from pianotx.config import ConfigError, DecodingConfig
from pianotx.files import remove_inside
from pianotx.locations import MODEL_NAME, Store
from pianotx.lock import LockError, exclusive
from pianotx.store import MANIFEST, Manifest, load_manifest
from pianotx.tracking import (
    HOST_TAG,
    MODEL_URI_TAG,
    ORACLE_TAG,
    STATE_TAG,
    TRIAL_TAG,
    WORKER_TAG,
    WORKER_TIMEOUT_TAG,
    DatasetRef,
    SearchTracker,
    best_effort,
)
from pianotx.tuning.champion import Outcome, check_policy, settle
from pianotx.tuning.distributed import Role, keras_tuner_env, role_from_env, serve_oracle, wait_for_chief
from pianotx.tuning.initial import InitialModel, check_initial, init_names, resolve_initial
from pianotx.tuning.space import SearchSpec, load_spec, to_hyperparameters
from pianotx.tuning.state import bind, check_state, location, prepare_worker_state, state_root

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
    worker: str | None = None  # a distributed worker's tuner id (its counts are its own trials)
    go_on: bool = False  # stopped after trials_per_process trials: run the same search again
    outcome: Outcome | None = None  # champion and challenger, when the best model was registered


def _check_unchanged(
    spec: SearchSpec, project: Path, fingerprint: str, overwrite: bool, root: Path | None = None
) -> None:
    """Refuse to resume a search whose space file or dataset changed since it began.

    With ``overwrite`` the search's folder ``project`` is removed first, only when it
    lies inside ``root``, the state folder of every search (default: ``project``'s
    parent).

    Raises:
        ConfigError: the space file or the dataset changed.
        OutputError: ``project`` is not inside ``root`` (nothing is removed).
    """
    saved, saved_fp = project / SPEC_COPY, project / DATASET_FINGERPRINT
    if overwrite:
        remove_inside(project, project.parent if root is None else root, f"state of search {spec.name!r}")
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


def lock_path(root: Path, name: str) -> Path:
    """The lock file of search ``name`` in the state folder ``root``, for this process's
    tuner id (``KERASTUNER_TUNER_ID``, default ``tuner0``): ``root/.NAME.TUNER.lock``.

    It lies beside the search's folder, not in it, so ``--overwrite`` (which removes
    that folder) keeps it; a search name starts with a letter or digit, so no search's
    folder is ever called like it. Any character of the tuner id other than letters,
    digits, ``.``, ``_`` and ``-`` becomes ``_``."""
    tuner = re.sub(r"[^A-Za-z0-9._-]", "_", os.environ.get("KERASTUNER_TUNER_ID", "tuner0"))
    return root / f".{name}.{tuner}.lock"


@contextmanager
def search_lock(project: Path, name: str) -> Iterator[None]:
    """Hold the lock of search ``name`` (its folder ``project``) while it runs, so the
    same search cannot run twice at once: a second gets one line naming the first's pid
    and host (:func:`pianotx.lock.exclusive`; the lock goes with the process, however
    it ends). Take it before anything is written or removed, ``--overwrite`` included.

    The lock is :func:`lock_path` in ``project``'s parent. ``flock`` keeps processes
    apart on one machine; a state folder shared between machines over a network file
    system may not be locked across them (see :mod:`pianotx.lock`).

    Raises:
        ConfigError: the search is running in another process, or its lock file
            cannot be opened.
    """
    held = ExitStack()
    try:
        held.enter_context(exclusive(lock_path(project.parent, name), f"search {name!r}"))
    except LockError as exc:
        raise ConfigError(str(exc)) from None
    with held:
        yield


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
    heartbeat: float | None = None,
    trials_per_process: int = 0,
    initial: dict[str, InitialModel] | None = None,
) -> Any:
    """The Keras Tuner tuner of ``spec`` with the whole space declared up front
    (``heartbeat``: seconds between a distributed worker's heartbeats; ``initial``: the
    models fine-tuning trials start from, by the name ``init_from`` gives)."""
    import keras_tuner as kt

    from pianotx.tuning.tuner import TUNERS, keep_values_of_conditional_names, write_state_atomically

    write_state_atomically()
    keep_values_of_conditional_names()
    settings = dict(spec.tuner_settings)
    # Keras Tuner reads seed 0 as "no seed" (a random one): shift it so that every seed
    # in a space file, 0 included, draws the same trials every time.
    settings["seed"] = int(settings.get("seed", 0)) + 1
    tuner = TUNERS[spec.tuner](
        tracker=tracker,
        manifest=manifest,
        decoding=decoding,
        note_eval_pieces=note_eval_pieces,
        heartbeat=heartbeat,
        trials_per_process=trials_per_process,
        initial=initial,
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
    elif isinstance(tuner.oracle, kt.Oracle):  # not a worker's client of the chief's oracle
        retry_unrecorded_trials(tuner.oracle)
    return tuner


@dataclass(frozen=True)
class _Search:
    """What every part of one search needs."""

    spec: SearchSpec
    manifest: Manifest
    store: Store
    root: Path  # the Keras Tuner state folder (the search's is root / spec.name)
    decoding: DecodingConfig
    note_eval_pieces: int
    verbose: int
    trials_per_process: int = 0
    register_as: str | None = MODEL_NAME
    promote: str = "if-better"

    @property
    def project(self) -> Path:
        return self.root / self.spec.name

    def initial_models(self) -> dict[str, InitialModel]:
        """The models the space's fine-tuning trials start from, resolved (once per
        search: kept in its folder) and checked against the space and the dataset."""
        initial = {}
        for name in init_names(self.spec.fixed, self.spec.hyperparameters):
            model = resolve_initial(name, self.project, self.store, self.register_as)
            where = str(self.spec.path)
            check_initial(
                where,
                model,
                self.spec.fixed,
                self.spec.hyperparameters,
                self.manifest.features,
                str(self.manifest.root),
            )
            initial[name] = model
        return initial

    def tracker(self) -> SearchTracker:
        dataset_dir = self.manifest.root
        dataset = DatasetRef(dataset_dir.resolve().name, dataset_dir, self.manifest.data["fingerprint"])
        return SearchTracker(self.store, self.spec.name, dataset, source=f"pianotx search {self.spec.path.name}")

    def tuner(
        self, tracker: SearchTracker, heartbeat: float | None = None, initial: dict[str, InitialModel] | None = None
    ) -> Any:
        return make_tuner(
            self.spec,
            self.manifest,
            tracker,
            self.root,
            self.decoding,
            self.note_eval_pieces,
            heartbeat,
            0 if heartbeat is not None else self.trials_per_process,
            initial,
        )


def retry_unrecorded_trials(oracle: Any) -> list[str]:
    """Queue for retry the trials a kill left RUNNING without the oracle knowing them.

    Keras Tuner writes a new trial's ``trial.json`` before the oracle state that names
    it ongoing: a process killed between the two leaves a trial that a reload neither
    retries nor counts as drawn, so the search would end a trial short and draw its
    hyperparameters again for the next. Such trials are recorded and retried instead.

    Returns:
        The ids of the trials queued.
    """
    from keras_tuner.engine.trial import TrialStatus

    known = set(oracle._retry_queue) | {t.trial_id for t in oracle.ongoing_trials.values()}
    lost = [t for t in oracle.trials.values() if t.status == TrialStatus.RUNNING and t.trial_id not in known]
    for trial in lost:
        oracle._record_values(trial)
        if trial.trial_id not in oracle.start_order:
            oracle.start_order.append(trial.trial_id)
        oracle._retry_queue.append(trial.trial_id)
    return [t.trial_id for t in lost]


def run_search(
    spec_path: str | Path,
    dataset_dir: str | Path,
    store: Store,
    register_as: str | None = MODEL_NAME,
    overwrite: bool = False,
    decoding: DecodingConfig | None = None,
    note_eval_pieces: int | None = None,
    verbose: int = 2,
    role: Role | None = None,
    state_dir: str | Path | None = None,
    trials_per_process: int = 0,
    promote: str = "if-better",
    init_from: str | None = None,
) -> SearchResult:
    """Run (or resume) the search of ``spec_path`` on the dataset in ``dataset_dir``.

    The best model is registered as ``register_as``'s challenger and promoted to
    champion as ``promote`` says (:mod:`pianotx.tuning.champion`).

    Args:
        promote: ``if-better`` (the default: only when it beats the champion on the
            dataset's validation split), ``always`` or ``never``.
        init_from: the model every trial starts from (``--init-from``), replacing the
            space file's ``init_from``; see :mod:`pianotx.tuning.initial`.
        role: this process's part in a distributed search (default: from Keras Tuner's
            environment variables; none: one process runs the whole search).
        state_dir: where Keras Tuner's state goes (default: derived from ``store``).
        trials_per_process: stop after this many trials (0: never), the search run left
            open, with ``go_on`` set in the result: running the same search again (in a
            fresh process, which frees what TensorFlow kept of each trained model) goes
            on where this one stopped. One process, not a distributed search.
    """
    check_policy(promote)
    spec = load_spec(spec_path)
    if init_from is not None:
        if "init_from" in spec.hyperparameters:
            raise ConfigError(f"{spec.path}: searches init_from; --init-from would replace the whole choice")
        spec = dataclasses.replace(spec, fixed=spec.fixed | {"init_from": init_from})
    manifest = load_manifest(dataset_dir)
    if not manifest.data["splits"]["validation"]["chunks"] or not manifest.data["splits"]["train"]["chunks"]:
        raise ConfigError(f"{dataset_dir}: the dataset needs train and validation chunks")
    role = role or role_from_env()
    pieces = spec.note_eval_pieces if note_eval_pieces is None else note_eval_pieces
    search = _Search(
        spec,
        manifest,
        store,
        state_root(store, state_dir),
        decoding or DecodingConfig(),
        pieces,
        verbose,
        trials_per_process if role is None else 0,
        register_as,
        promote,
    )
    with keras_tuner_env(role), search_lock(search.project, spec.name):
        if role is not None and not role.is_chief:
            return _run_worker(search, role)
        return _run_oracle(search, role, overwrite)


def _identity_tags(search: _Search, role: Role | None) -> dict[str, str]:
    """The parent run's record of who runs the search and where its state is."""
    tags = {WORKER_TAG: role.tuner_id if role else "tuner0", HOST_TAG: socket.gethostname()}
    tags[STATE_TAG] = location(search.project)
    if role is not None:
        tags |= {ORACLE_TAG: f"{socket.gethostname()}:{role.port}", WORKER_TIMEOUT_TAG: str(role.worker_timeout)}
    return tags


def _check_state_here(search: _Search, tracker: SearchTracker) -> None:
    """Refuse (one line) to run a search whose Keras Tuner state is not in this process's folder."""
    found = tracker.find_search()
    check_state(
        search.project,
        search.spec.name,
        search.store.tracking_uri,
        found.info.run_id if found else None,
        found.data.tags.get(STATE_TAG) if found else None,
        tracker.has_trials(found.info.run_id) if found else False,
    )


def _search_params(search: _Search) -> dict[str, Any]:
    spec = search.spec
    return {
        "tuner": spec.tuner,
        "objective": f"{spec.objective} ({spec.direction})",
        "dataset": str(search.manifest.root.resolve()),
        "dataset_fingerprint": search.manifest.data["fingerprint"],
        **{f"tuner.{k}": v for k, v in spec.tuner_settings.items()},
    }


def _run_oracle(search: _Search, role: Role | None, overwrite: bool) -> SearchResult:
    """The search in one process, or a distributed search's chief."""
    from pianotx.tuning.tuner import ProcessBudgetReached

    spec, project = search.spec, search.project
    tracker = search.tracker()
    if not overwrite:
        _check_state_here(search, tracker)
    _check_unchanged(spec, project, search.manifest.data["fingerprint"], overwrite, search.root)
    initial = search.initial_models()  # before anything trains: a space that does not fit is refused
    files = [spec.path, search.manifest.root / MANIFEST]
    identity = _identity_tags(search, role)
    tracker.start_search(_search_params(search), _environment_tags() | identity, files, fresh=overwrite)
    try:
        tracker.set_tags(tracker.parent, identity)
        bind(project, tracker.parent, search.store.tracking_uri)
        tracker.kill_stale_trials()
        tuner = search.tuner(tracker, initial=initial)
        if role is not None:
            tuner.oracle.verbose = search.verbose
            serve_oracle(tuner, tracker, role)
        else:
            tuner.search(str(search.manifest.root), verbose=search.verbose)
        return _finish(tuner, tracker, search)
    except ProcessBudgetReached:  # the search run stays open for the next process
        return SearchResult(sum(tuner.outcomes.values()), 0, None, None, None, None, None, go_on=True)
    except KeyboardInterrupt:
        best_effort(tracker.end_search, None, failure="interrupted", status="KILLED")
        raise
    except BaseException as exc:
        best_effort(tracker.end_search, None, failure=f"{type(exc).__name__}: {exc}")
        raise


def _run_worker(search: _Search, role: Role) -> SearchResult:
    """A distributed worker: trials from the chief until it has none left."""
    wait_for_chief(role)  # it serves once the search run exists
    tracker = search.tracker()
    parent = tracker.client.get_run(tracker.attach(timeout=60.0))
    chief_fp = parent.data.params.get("dataset_fingerprint")
    if chief_fp and chief_fp != search.manifest.data["fingerprint"]:
        raise ConfigError(
            f"{search.manifest.root}: not the dataset of search {search.spec.name!r} (its fingerprint differs "
            "from the chief's); copy the chief's dataset folder, or build it with the same options"
        )
    prepare_worker_state(search.project, tracker.parent, search.store.tracking_uri)
    timeout = float(parent.data.tags.get(WORKER_TIMEOUT_TAG, role.worker_timeout))
    tuner = search.tuner(tracker, heartbeat=timeout / 4, initial=search.initial_models())
    tuner.search(str(search.manifest.root), verbose=search.verbose)
    done = tuner.outcomes["COMPLETED"]
    failed = tuner.outcomes["FAILED"] + tuner.outcomes["INVALID"]
    return SearchResult(done, failed, None, None, None, None, None, worker=role.tuner_id)


def _finish(tuner: Any, tracker: SearchTracker, search: _Search) -> SearchResult:
    from keras_tuner.engine.trial import TrialStatus

    spec, store = search.spec, search.store
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
    if not search.register_as:
        return SearchResult(len(done), failed, trial.trial_id, value, run.info.run_id, model_uri, None)
    outcome = settle(
        store,
        search.register_as,
        model_uri,
        search.manifest,
        spec.objective,
        search.promote,
        search_run=tracker.parent,
        version_tags={"search": spec.name, "trial": trial.trial_id, "run_id": run.info.run_id, spec.objective: value},
        description=f"Best trial ({trial.trial_id}) of search {spec.name!r} ({spec.path.name}), "
        f"{spec.objective} {value:.4f}; dataset {search.manifest.root.resolve().name}.",
    )
    return SearchResult(
        len(done), failed, trial.trial_id, value, run.info.run_id, model_uri, outcome.challenger, outcome=outcome
    )


def _summary(trials: list[Any], spec: SearchSpec, tracker: SearchTracker) -> tuple[list[dict[str, Any]], Any]:
    """The parent run's closing table (trials sorted by the objective) and its figure
    (the objective against each searched hyperparameter)."""
    from pianotx.plots import hyperparameter_figure

    runs = {r.data.tags.get(TRIAL_TAG): r.info.run_id for r in tracker.trial_runs() if r.info.status == "FINISHED"}
    rows = []
    for trial in trials:
        row = {"trial": trial.trial_id, "status": str(trial.status), spec.objective: trial.score}
        row |= {k: trial.hyperparameters.values.get(k) for k in spec.hyperparameters}
        if "tuner/epochs" in trial.hyperparameters.values:  # Hyperband: the epochs the trial reached
            row["epochs"] = trial.hyperparameters.values["tuner/epochs"]
        rows.append(row | {"run_id": runs.get(trial.trial_id, "")})
    done = [r for r in rows if r[spec.objective] is not None]
    done.sort(key=lambda r: r[spec.objective], reverse=spec.direction == "max")
    rows = done + [r for r in rows if r[spec.objective] is None]
    figure = hyperparameter_figure(done, list(spec.hyperparameters), spec.objective) if done else None
    return rows, figure
