"""Keeping native libraries' chatter off the terminal.

TensorFlow's C++ start-up and libmpg123 (inside libsndfile) write to the process's
stderr directly, below Python; only redirecting file descriptor 2 silences them. Used
around the few calls known to chatter, so pianotx's own one-line errors stay readable.
"""

from __future__ import annotations

import atexit
import gc
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def quiet_native_stderr() -> Iterator[None]:
    """Silence what native decoders (libmpg123 inside libsndfile) print on stderr."""
    try:
        saved = os.dup(2)
    except OSError:  # no stderr to silence
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


# Imported by Keras at start-up only for integrations pianotx never uses: the
# scikit-learn wrappers, keras.visualization's plots, DataFrames as fit() inputs.
# Together ~1.1 s of a command's start-up (scikit-learn brings scipy.stats).
KERAS_OPTIONAL = ("sklearn", "matplotlib", "pandas")


def import_keras_quietly() -> None:
    """Import Keras (and TensorFlow) with their start-up notices silenced, and without
    the optional packages of :data:`KERAS_OPTIONAL` not imported yet.

    Keras imports each of them inside ``try: ... except ImportError``, so they are hidden
    for the duration of the import (a ``None`` entry in ``sys.modules`` makes ``import``
    raise ImportError) and Keras takes them as not installed; afterwards they import as
    usual for any other code. Later calls are free, and errors raised by the import
    still propagate.

    The ~400,000 objects TensorFlow and Keras create live as long as the process, so the
    garbage collector is told to leave them out (``gc.freeze``): otherwise each full
    collection walks them all (~0.2 s). Objects made later are collected as usual, until
    the process exits: then everything is frozen (an ``atexit`` hook) before the
    interpreter's final collections, which would otherwise walk TensorFlow's, Keras's
    and MLflow's objects again for 0.5-2 s just before the memory is handed back anyway.
    (Only the command line calls this, so the hook is the command's, not a library
    user's.)
    """
    if "keras" in sys.modules:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    hidden = [name for name in KERAS_OPTIONAL if name not in sys.modules]
    for name in hidden:
        sys.modules[name] = None  # type: ignore[assignment]
    try:
        with quiet_native_stderr():
            import keras  # noqa: F401
    finally:
        for name in hidden:
            if sys.modules.get(name, "") is None:
                del sys.modules[name]
    gc.freeze()
    atexit.register(gc.freeze)
