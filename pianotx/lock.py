"""One process at a time: an exclusive lock held on a file for as long as a job runs.

The lock is ``fcntl.flock`` (exclusive, non-blocking) on a lock file that stays where it
is: it is created once and never removed, so every process locks the same file and no
process can remove a lock another holds. The kernel releases the lock when its holder
ends, however it ends (a kill included), so a lock file left behind is simply taken by
the next process: there is no stale lock to clear.

Once it holds the lock, the holder writes its pid, host and start time into the file;
a process refused reads them, best-effort, for its message (a holder that has not
written them yet shows ``?``).

Limits: ``flock`` works between processes of one machine on a local file system. On
some network file systems (NFS without lock support, some FUSE and SMB mounts) it locks
only within each machine, or not at all: two machines sharing such a folder are not
kept apart. Keep the lock file on a local disk, or run the job from one machine.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pianotx.errors import PianotxError

RECORD_BYTES = 4096  # the most of a lock file read for the holder's record


class LockError(PianotxError, RuntimeError):
    """The lock is held by another process, or cannot be taken (the message says which)."""


@contextmanager
def exclusive(path: str | Path, what: str) -> Iterator[None]:
    """Hold the lock on ``path`` (created with its folder if missing) while the block runs.

    Args:
        path: the lock file; never removed, by this or any other process.
        what: what the lock protects, for the refusal (``search 'quick'``).

    Raises:
        LockError: another process holds it: ``WHAT is already running (pid N on HOST,
            since TIME); wait for it, or stop that process``; or the file cannot be
            opened or locked (named, with the reason).
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        reason = f"{exc.filename}: {exc.strerror}" if exc.filename and exc.strerror else str(exc)
        raise LockError(f"{path}: cannot open the lock file of {what} ({reason})") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LockError(refusal(path, what)) from None
        except OSError as exc:
            raise LockError(f"{path}: cannot lock the lock file of {what} ({exc.strerror or exc})") from None
        record = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}
        data = json.dumps(record).encode()
        os.pwrite(fd, data, 0)
        os.ftruncate(fd, len(data))
        yield
    finally:
        os.close(fd)  # releases the lock


def holder(path: str | Path) -> dict[str, str]:
    """The pid, host and start time recorded in the lock file ``path`` (``?`` for each
    that cannot be read: no file, or a record being written)."""
    found = {"pid": "?", "host": "?", "since": "?"}
    try:
        with open(path, "rb") as handle:
            record = json.loads(handle.read(RECORD_BYTES))
    except (OSError, ValueError):
        return found
    if isinstance(record, dict):
        found |= {k: str(record[k]) for k in found if k in record}
    return found


def refusal(path: str | Path, what: str) -> str:
    """The one line that refuses to run ``what`` while the lock on ``path`` is held."""
    held = holder(path)
    return (
        f"{what} is already running (pid {held['pid']} on {held['host']}, since {held['since']}); "
        "wait for it, or stop that process"
    )
