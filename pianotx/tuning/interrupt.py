"""A SIGTERM to a search as an interrupt that cannot be lost.

The handler raises :class:`KeyboardInterrupt` where the main thread happens to be; when
that is a finaliser (TensorFlow's iterators and tensors have ``__del__`` methods),
Python prints "Exception ignored" and goes on, and the search would train to its end.
So the handler also sets :data:`INTERRUPTED`, and :func:`raise_if_interrupted` checks it
where a search can stop cleanly: after every training batch and epoch (an epoch is
backed up and logged first), before each trial, before a process that ended its
trials replaces itself and in a distributed chief's loop. A trial
whose training has ended is finished and logged first: its work is kept.
"""

from __future__ import annotations

import signal
import threading

INTERRUPTED = threading.Event()


def interrupt_on_sigterm() -> None:
    """Make SIGTERM an interrupt: :data:`INTERRUPTED` is set and KeyboardInterrupt raised
    (a second signal is ignored, so that it cannot cut the clean-up)."""

    def handler(signum: int, frame: object) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        INTERRUPTED.set()
        raise KeyboardInterrupt(f"signal {signum}")

    INTERRUPTED.clear()
    signal.signal(signal.SIGTERM, handler)


def raise_if_interrupted() -> None:
    """Raise KeyboardInterrupt if a SIGTERM came, wherever its own raise ended up."""
    if INTERRUPTED.is_set():
        raise KeyboardInterrupt("interrupted by a signal")
