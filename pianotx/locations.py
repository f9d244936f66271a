"""Where pianotx keeps things: the MLflow store and the cache folder.

Nothing here imports MLflow, so commands that may not need it (transcribing with a
``.keras`` file, ``--help``) can find the store without paying for the import.

The store: ``--tracking-uri``, else ``MLFLOW_TRACKING_URI``, else the embedded default,
SQLite at ``mlruns/mlflow.db`` with artifacts in ``mlruns/artifacts``. The ``mlruns/``
folder is looked for from the working directory upwards (like git looks for ``.git``;
a clone of pianotx has one at its root), so a command run from a subfolder finds the
same store; where there is none, ``./mlruns`` is used, and created only when something
is written (reading a store that does not exist creates nothing).

The cache (``$XDG_CACHE_HOME/pianotx``, else ``~/.cache/pianotx``) holds what pianotx
makes once per machine and never beside a user's data: built pianos, the CQT's filter banks.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

STORE_DIR = "mlruns"
DB_NAME = "mlflow.db"
MODEL_NAME = "piano"  # a search's best model is registered under it; an export's file stem
DEFAULT_URI = f"models:/{MODEL_NAME}/Production"  # what transcribe and evaluate use by default
UI_PORT = 5000  # `pianotx ui`'s port on 127.0.0.1


def cache_dir() -> Path:
    """pianotx's cache folder (not created here)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "pianotx"


@dataclass(frozen=True)
class Store:
    tracking_uri: str
    artifact_root: str | None  # file URI for new experiments; None: the server decides

    @property
    def local_path(self) -> Path | None:
        """The SQLite file of a local store (None for a server)."""
        return (
            Path(self.tracking_uri.removeprefix("sqlite:///")) if self.tracking_uri.startswith("sqlite:///") else None
        )

    @property
    def exists(self) -> bool:
        """False for a local store not created yet (reading it would create it)."""
        return self.local_path is None or self.local_path.is_file()


def find_store_dir(start: Path | None = None) -> Path:
    """The nearest ``mlruns/`` folder from ``start`` upwards (a clone of pianotx has one at
    its root); else ``start/mlruns``."""
    start = (start or Path.cwd()).resolve()
    for folder in (start, *start.parents):
        if (folder / STORE_DIR).is_dir():
            return folder / STORE_DIR
    return start / STORE_DIR


def resolve_store(tracking_uri: str | None = None) -> Store:
    """The store to use: explicit URI, ``MLFLOW_TRACKING_URI``, or the embedded default."""
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        local = uri.startswith("sqlite:///")
        root = Path(uri.removeprefix("sqlite:///")).parent / "artifacts" if local else None
        return Store(uri, root.resolve().as_uri() if root else None)
    folder = find_store_dir()
    return Store(f"sqlite:///{folder / DB_NAME}", (folder / "artifacts").as_uri())
