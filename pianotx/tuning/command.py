"""``pianotx search`` as one call: the options checked, the store found, the search run
(or resumed) by :func:`pianotx.tuning.search.run_search`, its outcome said in a line or two.

What belongs to the command rather than to ``run_search``: a SIGTERM becomes an
interrupt (so that a killed search still closes its MLflow runs; see
:mod:`pianotx.tuning.interrupt`), a chief hides the GPUs
(it trains nothing), every failure becomes one :class:`SearchError` line, and a search
run as a command replaces its process every few trials: TensorFlow keeps the graphs of
every model a process trained (20-50 MB each; ``clear_session`` does not free them), so
a fresh process, which resumes the search, keeps a long search's memory flat.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from pianotx.config import ConfigError, DistributedConfig
from pianotx.errors import PianotxError
from pianotx.locations import MODEL_NAME, Store, resolve_store
from pianotx.tuning.interrupt import interrupt_on_sigterm, raise_if_interrupted

if TYPE_CHECKING:
    from pianotx.tuning.distributed import Role
    from pianotx.tuning.search import SearchResult

# Trials per process of a search run as a command: its memory after 20 trials is then
# that after 2 (benchmarks/search_overhead.py).
TRIALS_PER_PROCESS = 2

Echo = Callable[[str], None]


class SearchError(PianotxError, RuntimeError):
    """A search that stopped (interrupted, failed, or no trial completed)."""


@dataclass(frozen=True)
class SearchOptions:
    """What ``pianotx search`` was asked to do.

    Attributes:
        space: the search-space YAML file.
        data: the dataset folder.
        tracking_uri: the MLflow store (``None``: ``MLFLOW_TRACKING_URI``, else ``mlruns/``).
        register_as: registered name of the best model (``None``: register nothing).
        overwrite: start afresh instead of resuming.
        note_eval_pieces: validation pieces scored per trial (``None``: the space file's).
        state_dir: Keras Tuner's state folder (``None``: beside a local store).
        chief: serve the oracle of a distributed search, train nothing.
        worker: this process's worker id in a distributed search.
        oracle: a worker's chief, ``HOST:PORT``.
        distributed: the chief's port, address, worker timeout and poll interval.
        trials_per_process: replace the process after this many trials (0: never;
            ``None``: :data:`TRIALS_PER_PROCESS` when the process can be replaced, else 0).
        promote: when the best model becomes champion: ``if-better`` (it beats the
            champion on the validation split), ``always``, ``never``.
        init_from: the model every trial starts from (``None``: the space file's).
    """

    space: Path
    data: Path
    tracking_uri: str | None = None
    register_as: str | None = MODEL_NAME
    overwrite: bool = False
    note_eval_pieces: int | None = None
    state_dir: Path | None = None
    chief: bool = False
    worker: str | None = None
    oracle: str | None = None
    distributed: DistributedConfig = field(default_factory=DistributedConfig)
    trials_per_process: int | None = None
    promote: str = "if-better"
    init_from: str | None = None


def search_command(options: SearchOptions, echo: Echo, replace_process: Callable[[], None] | None = None) -> None:
    """Run (or resume) the search ``options`` ask for, saying its outcome with ``echo``.

    Args:
        replace_process: starts the same command afresh (it does not return), given when
            the process may be replaced (a command, not the app called from Python); a
            search stopped after its trials per process then goes on there.

    Raises:
        ConfigError: a missing space file, or distributed options that do not fit.
        SearchError: the search was interrupted or failed, or no trial completed.
        PianotxError: what :func:`pianotx.tuning.search.run_search` refuses.
    """
    if not options.space.is_file():
        raise ConfigError(f"{options.space}: no such search-space file")
    role = _role(options)
    store = resolve_store(options.tracking_uri)
    if options.chief:
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # the chief trains nothing: leave the GPUs to the workers
    interrupt_on_sigterm()  # a killed search still closes its MLflow runs
    per_process = trials_per_process(options.trials_per_process, replaceable=replace_process is not None)
    try:
        from pianotx.tuning.search import run_search

        result = run_search(
            options.space,
            options.data,
            store,
            options.register_as,
            options.overwrite,
            note_eval_pieces=options.note_eval_pieces,
            role=role,
            state_dir=options.state_dir,
            trials_per_process=per_process,
            promote=options.promote,
            init_from=options.init_from,
        )
        if result.go_on:  # a signal lost during this process's last trial: no fresh process
            raise_if_interrupted()
    except PianotxError:
        raise
    except KeyboardInterrupt:
        raise SearchError("search interrupted; run the same command again to resume it") from None
    except Exception as exc:  # Keras Tuner, MLflow, the store: one line, not a traceback
        raise SearchError(f"search failed: {type(exc).__name__}: {exc}") from exc
    if result.go_on:
        if replace_process is None:
            echo(f"stopped after {result.trials} trials; run the same search again to go on")
            return
        echo(f"{result.trials} trials in this process: the search goes on in a fresh process (its memory released)")
        replace_process()
    _report(result, options, store, echo)


def trials_per_process(asked: int | None, replaceable: bool) -> int:
    """Trials before the process is replaced (0: never): as asked, else
    :data:`TRIALS_PER_PROCESS` for a process that can be replaced."""
    if asked is not None:
        return asked
    return TRIALS_PER_PROCESS if replaceable else 0


def _role(options: SearchOptions) -> Role | None:
    """The distributed role the options ask for (``None``: one process)."""
    from pianotx.tuning.distributed import chief_role, worker_role

    if options.chief and options.worker is not None:
        raise ConfigError("--chief and --worker exclude each other: a process is one or the other")
    if options.worker is not None:
        if options.oracle is None:
            raise ConfigError("--worker needs --oracle HOST:PORT (the chief's address and --port)")
        return worker_role(options.worker, options.oracle)
    if options.oracle is not None:
        raise ConfigError("--oracle is for a worker: add --worker ID")
    d = options.distributed
    return chief_role(d.port, d.bind, d.worker_timeout, d.chief_poll) if options.chief else None


def _report(result: SearchResult, options: SearchOptions, store: Store, echo: Echo) -> None:
    if result.worker is not None:
        echo(
            f"worker {result.worker}: {result.trials} trials completed, {result.failed} failed; "
            "the chief registers the best model"
        )
        return
    if result.best_trial_id is None:
        raise SearchError(
            f"no trial of {options.space} completed ({result.failed} failed); see the runs in {store.tracking_uri}"
        )
    echo(
        f"{result.trials} trials done, {result.failed} failed; best trial {result.best_trial_id} "
        f"({result.best_value:.4f}), run {result.best_run_id}"
    )
    if result.registered_version is not None:
        name = options.register_as
        echo(f"registered {name} version {result.registered_version} as models:/{name}@challenger")
        if result.outcome is not None:
            echo(result.outcome.summary)
            echo(f"pianotx transcribe uses models:/{name}/Production: version {result.outcome.champion}")


def replace_this_process() -> None:
    """Replace this process with the same command, ``--overwrite`` dropped (the search is
    resumed, not restarted); its memory is released, its pid stays."""
    sys.stdout.flush()
    sys.stderr.flush()
    argv = [arg for arg in sys.orig_argv[1:] if arg != "--overwrite"]
    os.execv(sys.executable, [sys.executable, *argv])
