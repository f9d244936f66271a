"""The lock that keeps a job to one process: never two holders at once, however many
processes try together; a live holder named in the refusal; a file left by a killed
holder taken by the next process; the file itself never removed."""

import fcntl
import json
import multiprocessing
import os
import signal
import socket
import time

import pytest

from pianotx.lock import LockError, exclusive

ROUNDS, PROCESSES = 100, 4


def _contend(path, barrier, inside, most, entered, refused):
    """Each round: wait for the others, try the lock, and count who is inside."""
    for round_ in range(ROUNDS):
        barrier.wait()
        try:
            with exclusive(path, "job"):
                with inside.get_lock():
                    inside.value += 1
                    most.value = max(most.value, inside.value)
                with entered.get_lock():
                    entered[round_] += 1
                time.sleep(0.002)  # hold it while the others try
                with inside.get_lock():
                    inside.value -= 1
        except LockError:
            with refused.get_lock():
                refused.value += 1
        barrier.wait()  # every holder has released before the next round


def test_processes_released_together_never_hold_the_lock_at_once(tmp_path):
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(PROCESSES, timeout=60)
    inside, most, refused = context.Value("i", 0), context.Value("i", 0), context.Value("i", 0)
    entered = context.Array("i", ROUNDS)
    path = tmp_path / "job.lock"
    args = (path, barrier, inside, most, entered, refused)
    workers = [context.Process(target=_contend, args=args) for _ in range(PROCESSES)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
    assert [w.exitcode for w in workers] == [0] * PROCESSES
    assert most.value == 1  # never two inside at once
    assert min(entered) >= 1  # the lock free at each round's start: someone always got it
    assert sum(entered) + refused.value == ROUNDS * PROCESSES
    assert refused.value > 0
    assert path.is_file()  # never removed


def _hold(path, ready, done):
    with exclusive(path, "job"):
        ready.set()
        done.wait(60)


def test_a_live_holder_is_refused_with_its_pid_host_and_start(tmp_path):
    context = multiprocessing.get_context("spawn")
    ready, done = context.Event(), context.Event()
    path = tmp_path / "job.lock"
    holder = context.Process(target=_hold, args=(path, ready, done))
    holder.start()
    try:
        assert ready.wait(60)
        since = json.loads(path.read_text())["since"]
        with pytest.raises(LockError) as err:
            with exclusive(path, "search 'quick'"):
                pass
        assert str(err.value) == (
            f"search 'quick' is already running (pid {holder.pid} on {socket.gethostname()}, since {since}); "
            "wait for it, or stop that process"
        )
    finally:
        done.set()
        holder.join(60)
    with exclusive(path, "job"):  # released when its holder ended
        assert json.loads(path.read_text())["pid"] == os.getpid()


def test_a_holder_that_has_not_written_its_record_yet_is_still_refused(tmp_path):
    path = tmp_path / "job.lock"
    path.write_text("")
    with open(path, "rb") as other:  # another open of the file: a holder of its own
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(LockError) as err:
            with exclusive(path, "job"):
                pass
    assert str(err.value) == "job is already running (pid ? on ?, since ?); wait for it, or stop that process"
    assert path.read_text() == ""  # the refused process wrote nothing


def _hold_forever(path, ready):
    with exclusive(path, "job"):
        ready.set()
        time.sleep(600)


def test_the_lock_file_of_a_killed_holder_is_taken_over(tmp_path):
    context = multiprocessing.get_context("spawn")
    ready = context.Event()
    path = tmp_path / "job.lock"
    holder = context.Process(target=_hold_forever, args=(path, ready))
    holder.start()
    assert ready.wait(60)
    os.kill(holder.pid, signal.SIGKILL)
    holder.join(60)
    assert json.loads(path.read_text())["pid"] == holder.pid  # its record is still there
    with exclusive(path, "job"):
        record = json.loads(path.read_text())
    assert (record["pid"], record["host"]) == (os.getpid(), socket.gethostname())


def test_a_record_naming_a_live_process_without_the_lock_is_taken_over(tmp_path):
    """A recycled pid, or a record copied with its folder: only the held lock counts."""
    path = tmp_path / "job.lock"
    path.write_text(json.dumps({"pid": os.getppid(), "host": socket.gethostname(), "since": "long ago"}) + " " * 50)
    with exclusive(path, "job"):
        assert json.loads(path.read_text())["pid"] == os.getpid()  # the longer old record fully replaced


def test_a_lock_that_cannot_be_opened_is_one_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(LockError) as err:
        with exclusive(blocker / "job.lock", "job"):
            pass
    assert str(err.value) == f"{blocker / 'job.lock'}: cannot open the lock file of job ({blocker}: File exists)"
