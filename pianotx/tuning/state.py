"""Where a search keeps Keras Tuner's state, and which search that state belongs to.

Keras Tuner keeps a search's oracle (trial ids, hyperparameters drawn, scores) in a
folder; MLflow keeps the search's runs. Both must describe the same search, whatever
folder a command is run from:

- the folder is derived from the store, never from the working folder: beside a local
  store (``mlruns/keras-tuner``), else (a tracking server) under pianotx's cache, one
  folder per server (``~/.cache/pianotx/keras-tuner/HOST_PORT-HASH``), or ``--state-dir``;
- the search's folder holds ``search.json`` naming its parent run, and the parent run
  carries the tag ``pianotx.state`` (``HOST:FOLDER``), so a command that finds the run
  but not its state (another machine, another ``--state-dir``, a cleared cache) refuses
  with one line naming where the state is, instead of drawing trial ids 0, 1, ... again
  under a finished search.

A distributed worker's folder holds only scratch (checkpoints, backups of the epochs of
its trials): it is cleared when the search it was made for is not the search running.
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
from pathlib import Path
from urllib.parse import urlsplit

from pianotx.config import ConfigError
from pianotx.files import remove_inside, write_json_atomic
from pianotx.locations import Store, cache_dir

STATE_FILE = "search.json"
ORACLE_FILE = "oracle.json"


def state_root(store: Store, state_dir: str | Path | None = None) -> Path:
    """The folder holding the Keras Tuner state of the searches of ``store``.

    Args:
        store: the MLflow store.
        state_dir: an explicit folder (``--state-dir``), used as given.
    """
    if state_dir is not None:
        return Path(state_dir).expanduser().resolve()
    if store.local_path is not None:
        return store.local_path.parent / "keras-tuner"
    return cache_dir() / "keras-tuner" / store_key(store.tracking_uri)


def store_key(tracking_uri: str) -> str:
    """A folder name for a tracking server: its host and port, and a digest of the URI
    (``127.0.0.1_5000-3f2a9c1e``)."""
    parts = urlsplit(tracking_uri)
    readable = re.sub(r"[^A-Za-z0-9.-]+", "_", parts.netloc or parts.scheme or "store").strip("_")
    return f"{readable}-{hashlib.sha256(tracking_uri.encode()).hexdigest()[:8]}"


def location(project: Path) -> str:
    """``HOST:FOLDER`` of a search's state, as recorded on its parent run."""
    return f"{socket.gethostname()}:{project}"


def bound_run(project: Path) -> str | None:
    """The parent run id the state in ``project`` belongs to (``None``: no record)."""
    try:
        return str(json.loads((project / STATE_FILE).read_text())["parent_run_id"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def bind(project: Path, parent_run_id: str, tracking_uri: str) -> None:
    """Record in ``project`` that its state belongs to the search run ``parent_run_id``."""
    project.mkdir(parents=True, exist_ok=True)
    write_json_atomic(project / STATE_FILE, {"parent_run_id": parent_run_id, "tracking_uri": tracking_uri})


def check_state(
    project: Path, name: str, tracking_uri: str, parent_run_id: str | None, recorded: str | None, has_trials: bool
) -> None:
    """Refuse to run a search whose Keras Tuner state is not in ``project``.

    Args:
        project: this process's state folder for the search.
        name: the search's name.
        tracking_uri: the store, for the message.
        parent_run_id: the search's run in the store (``None``: the search is new).
        recorded: the run's ``pianotx.state`` tag (``None``: not recorded).
        has_trials: whether the run has trial runs.

    Raises:
        ConfigError: the state belongs to another run, or the run's state is elsewhere.
    """
    bound = bound_run(project)
    has_oracle = (project / ORACLE_FILE).is_file()
    if parent_run_id is None:
        if bound is not None or has_oracle:
            raise ConfigError(
                f"{project}: holds the Keras Tuner state of a search {name!r} (run {bound or 'unknown'}) that "
                f"{tracking_uri} does not have; start afresh with --overwrite, or choose another --state-dir"
            )
        return
    if bound == parent_run_id:
        return
    if bound is None and not has_trials and not has_oracle:
        return  # the search stopped before its first trial: nothing to lose
    if bound is None and has_oracle and recorded is None:
        return  # state written before searches recorded where it is: this folder is the one
    if recorded == location(project):
        raise ConfigError(
            f"search {name!r} (run {parent_run_id} in {tracking_uri}): its Keras Tuner state in {project} is gone; "
            "start afresh with --overwrite"
        )
    where = recorded or "a folder this process does not see"
    raise ConfigError(
        f"search {name!r} (run {parent_run_id} in {tracking_uri}) keeps its Keras Tuner state in {where}, "
        f"not in {project}: run it there (or pass --state-dir with that folder), or start afresh with --overwrite"
    )


def prepare_worker_state(project: Path, parent_run_id: str, tracking_uri: str) -> None:
    """Make a worker's folder the scratch of the search ``parent_run_id``: trial folders
    left by another search of the same name (whose backups a new trial would otherwise
    resume from) are removed: each only inside ``project`` (a trial folder that is a
    symbolic link loses the link, never what it points to)."""
    if project.is_dir() and bound_run(project) != parent_run_id:
        for trial_dir in sorted(project.glob("trial_*")):
            remove_inside(trial_dir, project, "trial folder")
    bind(project, parent_run_id, tracking_uri)
