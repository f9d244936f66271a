"""A search over several processes or machines: Keras Tuner's chief and workers.

Keras Tuner's distributed mode: the chief holds the oracle and serves it over gRPC; each
worker asks it for trials and trains them. pianotx adds what the mode lacks:

- roles from the command line (:func:`chief_role`, :func:`worker_role`), mapped onto
  Keras Tuner's environment variables (``KERASTUNER_TUNER_ID``, ``KERASTUNER_ORACLE_IP``,
  ``KERASTUNER_ORACLE_PORT``) only while the search runs (:func:`keras_tuner_env`);
- the chief serves only once the search's MLflow run exists, so a worker that reaches
  it (:func:`wait_for_chief`) always finds the run to nest its trials under;
- heartbeats: a worker tags its trial run every ``timeout / 4`` seconds
  (:class:`Heartbeat`); the chief (:class:`WorkerMonitor`) retries a trial whose run
  stopped beating for ``timeout`` seconds (its own clock: machines' clocks may differ)
  on another worker, and marks the silent run KILLED. A trial whose worker dies
  :data:`MAX_LOST_RUNS` times is FAILED rather than retried forever;
- workers stay until every trial handed out has ended (one may come back for a retry),
  then leave; the chief checks every second (Keras Tuner's own loop: every 20 s) and
  does not wait for workers that died between trials longer than ``timeout``.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pianotx.config import ConfigError, DistributedConfig
from pianotx.tuning.interrupt import raise_if_interrupted

if TYPE_CHECKING:
    from pianotx.tracking import SearchTracker

WORKER_TIMEOUT = DistributedConfig.worker_timeout  # seconds without a heartbeat: a worker is gone
CHIEF_WAIT = 600.0  # seconds a worker waits for the chief to answer
CHIEF_POLL = DistributedConfig.chief_poll  # seconds between the chief's checks
HOLD = 1.0  # seconds a worker waiting for a possible retry waits before asking again
MAX_LOST_RUNS = 3  # runs of one trial lost with their worker before the trial is FAILED
ENV_KEYS = ("KERASTUNER_TUNER_ID", "KERASTUNER_ORACLE_IP", "KERASTUNER_ORACLE_PORT")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Role:
    """This process's part in a distributed search.

    Attributes:
        tuner_id: ``chief``, or a worker's id (``tuner0``, ``tuner1``, ...).
        host: the chief: the address its oracle listens on; a worker: the chief's address.
        port: the oracle's port.
        worker_timeout: the chief: seconds without a heartbeat before a trial is retried.
        chief_wait: a worker: seconds to wait for the chief to answer.
        poll: the chief: seconds between its checks.
    """

    tuner_id: str
    host: str
    port: int
    worker_timeout: float = WORKER_TIMEOUT
    chief_wait: float = CHIEF_WAIT
    poll: float = CHIEF_POLL

    @property
    def is_chief(self) -> bool:
        return self.tuner_id == "chief"

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def environ(self) -> dict[str, str]:
        """Keras Tuner's environment variables for this role."""
        return dict(zip(ENV_KEYS, (self.tuner_id, self.host, str(self.port))))


def chief_role(
    port: int = DistributedConfig.port,
    bind: str = DistributedConfig.bind,
    worker_timeout: float = WORKER_TIMEOUT,
    poll: float = CHIEF_POLL,
) -> Role:
    """The chief, serving the oracle on ``bind:port``.

    Raises:
        ConfigError: a port outside 1..65535 or a timeout that is not positive.
    """
    if not 0 < port < 65536:
        raise ConfigError(f"--port must be 1..65535, got {port}")
    if worker_timeout <= 0 or poll <= 0:
        raise ConfigError(f"--worker-timeout must be positive, got {worker_timeout}")
    return Role("chief", bind, port, worker_timeout=worker_timeout, poll=poll)


def worker_role(worker_id: str, oracle: str) -> Role:
    """A worker: ``worker_id`` (a number N gives ``tunerN``) asking the chief at ``oracle``.

    Raises:
        ConfigError: a malformed id or ``HOST:PORT``.
    """
    tuner_id = f"tuner{worker_id}" if worker_id.isdigit() else worker_id
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", tuner_id) or "chief" in tuner_id:
        raise ConfigError(f"--worker {worker_id!r}: use a number or letters, digits, '_', '.', '-' (not 'chief')")
    host, _, port = oracle.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"--oracle {oracle!r}: expected HOST:PORT of the chief, e.g. 10.0.0.5:8000")
    return Role(tuner_id, host.strip("[]"), int(port))


def role_from_env() -> Role | None:
    """The role Keras Tuner's environment variables describe (``None``: one process)."""
    if "KERASTUNER_ORACLE_IP" not in os.environ:
        return None
    missing = [k for k in ENV_KEYS if not os.environ.get(k)]
    if missing or not os.environ["KERASTUNER_ORACLE_PORT"].isdigit():
        raise ConfigError(f"Keras Tuner's distributed mode needs {', '.join(ENV_KEYS)} (port a number)")
    tuner_id = os.environ["KERASTUNER_TUNER_ID"]
    return Role(
        "chief" if "chief" in tuner_id else tuner_id,
        os.environ["KERASTUNER_ORACLE_IP"],
        int(os.environ["KERASTUNER_ORACLE_PORT"]),
    )


@contextmanager
def keras_tuner_env(role: Role | None) -> Iterator[None]:
    """Set Keras Tuner's variables for ``role`` (unset them for one process), restored after."""
    saved = {k: os.environ.get(k) for k in ENV_KEYS}
    for key, value in (role.environ() if role else {}).items():
        os.environ[key] = value
    if role is None:
        for key in ENV_KEYS:
            os.environ.pop(key, None)
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


def wait_for_chief(role: Role) -> None:
    """Block until the chief's oracle answers (it serves once the search run exists).

    Raises:
        ConfigError: no oracle answered within ``role.chief_wait`` seconds.
    """
    import grpc

    from pianotx.tuning.private import protos

    channel = grpc.insecure_channel(role.address)
    try:
        stub = protos().get_service_grpc().OracleStub(channel)
        stub.GetSpace(protos().get_service().GetSpaceRequest(), wait_for_ready=True, timeout=role.chief_wait)
    except grpc.RpcError as exc:
        raise ConfigError(
            f"no chief answered at {role.address} within {role.chief_wait:.0f} s ({exc.code().name}); "
            "start the chief first (pianotx search SPACE --chief), and check --oracle and its --bind"
        ) from exc
    finally:
        channel.close()


@contextmanager
def locked(oracle: Any) -> Iterator[None]:
    """Hold the lock Keras Tuner's oracle methods take (``keras_tuner.synchronized``)."""
    from pianotx.tuning.private import oracle_locks

    LOCKS, THREADS = oracle_locks()
    name = threading.current_thread().name
    mine = THREADS[oracle] == name
    if not mine:
        LOCKS[oracle].acquire()
        THREADS[oracle] = name
    try:
        yield
    finally:
        if not mine:
            THREADS[oracle] = None
            LOCKS[oracle].release()


def requeue_trial(oracle: Any, tuner_id: str, trial_id: str, reason: str) -> str | None:
    """Take the trial ``trial_id`` back from the worker ``tuner_id`` that stopped: it is
    queued for another worker, or FAILED after :data:`MAX_LOST_RUNS` lost runs.

    Returns:
        ``"retry"``, ``"failed"``, or ``None`` when the worker no longer holds the trial.
    """
    from keras_tuner.engine.trial import TrialStatus

    with locked(oracle):
        trial = oracle.ongoing_trials.get(tuner_id)
        if trial is None or trial.trial_id != trial_id:
            return None
        del oracle.ongoing_trials[tuner_id]
        oracle.tuner_ids.discard(tuner_id)
        oracle._run_times[trial_id] += 1
        if oracle._run_times[trial_id] >= MAX_LOST_RUNS:
            trial.status, trial.message = TrialStatus.FAILED, f"{reason}; its worker was lost {MAX_LOST_RUNS} times"
            oracle.end_order.append(trial_id)
            outcome = "failed"
        else:
            trial.status = TrialStatus.IDLE
            oracle._retry_queue.append(trial_id)
            outcome = "retry"
        oracle._save_trial(trial)
        oracle.save()
    return outcome


def ongoing(oracle: Any) -> dict[str, str]:
    """``{tuner id: trial id}`` of the trials being run now."""
    with locked(oracle):
        return {tuner: trial.trial_id for tuner, trial in oracle.ongoing_trials.items()}


class WorkerMonitor:
    """The chief's watch over its workers' trials (see the module docstring).

    Args:
        oracle: the chief's Keras Tuner oracle.
        tracker: the search's MLflow runs (trial runs carry the heartbeats).
        timeout: seconds without a new heartbeat before a trial is taken back.
        clock: the chief's clock (seconds; tests pass their own).
    """

    def __init__(
        self, oracle: Any, tracker: SearchTracker, timeout: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.oracle, self.tracker, self.timeout, self.clock = oracle, tracker, timeout, clock
        self.seen: dict[tuple[str, str], tuple[Any, float]] = {}  # (tuner, trial) -> (beats, since)
        self.next_check = 0.0

    def check(self) -> list[str]:
        """Take back the trials whose worker went silent; their ids. Queries MLflow at
        most every ``timeout / 8`` seconds."""
        now = self.clock()
        if now < self.next_check:
            return []
        self.next_check = now + self.timeout / 8
        from pianotx.tracking import HEARTBEAT_TAG, TRIAL_TAG

        runs: dict[str, list[Any]] = {}
        for run in self.tracker.running_trial_runs():
            runs.setdefault(run.data.tags.get(TRIAL_TAG, ""), []).append(run)
        taken = []
        current = ongoing(self.oracle)
        self.seen = {k: v for k, v in self.seen.items() if current.get(k[0]) == k[1]}
        for tuner_id, trial_id in current.items():
            beats = sorted((r.info.run_id, r.data.tags.get(HEARTBEAT_TAG)) for r in runs.get(trial_id, []))
            last = self.seen.get((tuner_id, trial_id))
            if last is None or last[0] != beats:
                self.seen[(tuner_id, trial_id)] = (beats, now)
            elif now - last[1] > self.timeout and self._take_back(tuner_id, trial_id, [b[0] for b in beats]):
                taken.append(trial_id)
        return taken

    def check_safely(self) -> list[str]:
        """:meth:`check`, where a store that does not answer is logged, not raised: the
        heartbeats are timed afresh once it answers again (workers could not beat)."""
        try:
            return self.check()
        except Exception as exc:  # noqa: BLE001 - the chief outlives a server restart
            log.warning("could not read the workers' heartbeats: %s", exc)
            self.seen.clear()
            return []

    def _take_back(self, tuner_id: str, trial_id: str, run_ids: list[str]) -> bool:
        reason = f"worker {tuner_id} sent no heartbeat for {self.timeout:.0f} s"
        self.tracker.kill_runs(run_ids, f"{reason}; trial {trial_id} given to another worker")
        outcome = requeue_trial(self.oracle, tuner_id, trial_id, reason)
        if outcome is not None:
            log.warning("trial %s: %s; %s", trial_id, reason, "retried" if outcome == "retry" else "FAILED")
        self.seen.pop((tuner_id, trial_id), None)
        return outcome is not None


def drop_ended_retries(oracle: Any) -> list[str]:
    """Remove ended trials from the oracle's retry queue; their ids.

    Keras Tuner saves its oracle before it removes an ended trial from the ongoing ones,
    so a chief's last saved state still lists the last trial, which a reload queues for
    a retry though it has ended.
    """
    from keras_tuner.engine.trial import TrialStatus

    ended = (TrialStatus.COMPLETED, TrialStatus.FAILED)
    with locked(oracle):
        dropped = [t for t in oracle._retry_queue if oracle.trials[t].status in ended]
        oracle._retry_queue = [t for t in oracle._retry_queue if t not in dropped]
    return dropped


def all_ended(oracle: Any) -> bool:
    """Whether every trial of a search with ``max_trials`` has been run and has ended."""
    with locked(oracle):
        return (
            bool(oracle.max_trials)
            and len(oracle.trials) >= oracle.max_trials
            and not oracle.ongoing_trials
            and not oracle._retry_queue
        )


def _servicer(oracle: Any, hold: float = HOLD) -> Any:
    """Keras Tuner's oracle servicer, except that a worker asking for a trial once all are
    handed out waits (is answered IDLE, and asks again) while other workers' trials run:
    one of them may come back for a retry. Every IDLE answer comes after ``hold`` s
    (Hyperband's too, while a bracket's trials run), so waiting workers do not spin."""
    from keras_tuner.engine.trial import TrialStatus

    from pianotx.tuning.private import oracle_servicer, protos

    class HoldingServicer(oracle_servicer()):  # type: ignore[misc]
        def CreateTrial(self, request: Any, context: Any) -> Any:
            trial = self.oracle.create_trial(request.tuner_id)
            if trial.status == TrialStatus.STOPPED:
                with locked(self.oracle):
                    others = set(self.oracle.ongoing_trials) - {request.tuner_id}
                    if others:
                        self.oracle.tuner_ids.add(request.tuner_id)
                if others:
                    trial.status = TrialStatus.IDLE
                else:
                    self.stop_triggered = True
            if trial.status == TrialStatus.IDLE:  # the worker asks again at once: not in a tight loop
                time.sleep(hold)
            return protos().get_service().CreateTrialResponse(trial=trial.to_proto())

    return HoldingServicer(oracle)


def serve_oracle(tuner: Any, tracker: SearchTracker, role: Role) -> None:
    """The chief's search: serve the oracle on ``role.address`` until every trial has
    ended and every worker has been told to stop (or is gone), taking trials back from
    silent workers meanwhile.

    Raises:
        ConfigError: the address cannot be served (port in use, not this machine's).
    """
    from concurrent import futures

    import grpc

    from pianotx.tuning.private import exit_chief, protos

    oracle = tuner.oracle
    drop_ended_retries(oracle)
    tuner.save()
    if all_ended(oracle):  # a chief started again after the search's end: nothing to serve
        return
    # idle workers each hold a thread for HOLD seconds: room for many
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=64))
    servicer = _servicer(oracle)
    protos().get_service_grpc().add_OracleServicer_to_server(servicer, server)
    try:
        bound = server.add_insecure_port(role.address)
    except RuntimeError:
        bound = 0
    if not bound:
        raise ConfigError(
            f"the chief cannot listen on {role.address}: the port is in use or the address is not this machine's"
        )
    monitor = WorkerMonitor(oracle, tracker, role.worker_timeout)
    server.start()
    idle_since = None
    try:
        while True:
            time.sleep(role.poll)
            raise_if_interrupted()  # the handler's own raise may have been lost
            monitor.check_safely()
            if not servicer.stop_triggered:
                continue
            if exit_chief(oracle):
                return
            if ongoing(oracle):
                idle_since = None
                continue
            idle_since = idle_since or time.monotonic()
            if time.monotonic() - idle_since > role.worker_timeout:  # the rest died between trials
                log.warning("workers %s never came back for the end of the search", sorted(oracle.tuner_ids))
                return
    finally:
        server.stop(grace=1.0)
        with locked(oracle):  # Keras Tuner saves before it forgets an ended trial: save after
            oracle.save()


class Heartbeat:
    """A worker's heartbeat on its trial run, in a thread, while the trial runs.

    ``abandoned`` is set when the run was marked KILLED meanwhile (the chief gave the
    trial to another worker): the trial is then stopped and not reported.

    Args:
        tracker: the search's MLflow runs.
        run_id: the trial's run.
        interval: seconds between beats.
    """

    def __init__(self, tracker: SearchTracker, run_id: str, interval: float) -> None:
        self.tracker, self.run_id, self.interval = tracker, run_id, interval
        self.abandoned = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat-{run_id[:8]}", daemon=True)

    def _beat(self) -> None:
        while not self._stop.is_set():
            try:
                if self.tracker.beat(self.run_id) == "KILLED":
                    self.abandoned.set()
                    return
            except Exception as exc:  # noqa: BLE001 - a missed beat is retried; the chief tolerates a few
                log.warning("heartbeat of run %s failed: %s", self.run_id, exc)
            self._stop.wait(self.interval)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10.0)
