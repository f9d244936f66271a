"""Keeping native libraries' chatter off the terminal.

TensorFlow's C++ start-up and libmpg123 (inside libsndfile) write to the process's
stderr directly, below Python; only redirecting file descriptor 2 silences them. Used
around the few calls known to chatter, so pianotx's own one-line errors stay readable.
"""

from __future__ import annotations

import os
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


def import_keras_quietly() -> None:
    """Import Keras (and TensorFlow) with their start-up notices silenced.

    Later imports are free, and errors raised by the import still propagate.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with quiet_native_stderr():
        import keras  # noqa: F401
