"""``pianotx search-distributed``: a whole distributed search on this machine.

Starts, in order: an MLflow tracking server over the project's store (SQLite in
``mlruns/mlflow.db``, artifacts in ``mlruns/artifacts``, a folder every process here
writes to directly, so the store stays readable without the server afterwards); then,
together, a chief (``pianotx search --chief``) and N workers (``pianotx search
--worker I``). It waits for the chief, then stops everything it started, workers first
and the server last; Ctrl-C or SIGTERM stop them the same way (each search process
closes its MLflow runs as KILLED). Every process logs to its own file in one folder,
beside ``cluster.json`` (the server's address, each process's pid and command line: a
worker that died is started again with its own command).

Keras Tuner's state goes to ``mlruns/keras-tuner``, as for ``pianotx search`` on the same
store: a search can be resumed by either command.

Only loopback addresses are used; for several machines see docs/distributed.md.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pianotx.config import ConfigError, DistributedConfig
from pianotx.files import write_json_atomic
from pianotx.locations import MODEL_NAME, find_store_dir

LOOPBACK = "127.0.0.1"
SERVER_START = 180.0  # seconds the MLflow server may take to answer
STOP_GRACE = 30.0  # seconds a process may take to close its runs before it is killed
CLUSTER_FILE = "cluster.json"


@dataclass(frozen=True)
class Cluster:
    """A distributed search on this machine.

    Attributes:
        space: the search-space file.
        data: the dataset folder.
        store_dir: folder of the store (``mlflow.db``, ``artifacts/``, ``keras-tuner/``).
        settings: workers, ports (0: any free one), threads, timeouts, restarts.
        logs: folder for the logs (default: ``STORE_DIR/logs/NAME-YYYYmmdd-HHMMSS``).
        gpus: GPU ids, one per worker (``CUDA_VISIBLE_DEVICES``); empty: as inherited.
        register_as: the registered name of the best model (``None``: register nothing).
        overwrite: start the search afresh instead of resuming it.
        note_eval_pieces: validation pieces each worker scores per trial (``None``: the
            space file's).
        promote: when the chief promotes the best model (``if-better``, ``always``, ``never``).
        init_from: the model every trial starts from (``None``: as the space file says).
    """

    space: Path
    data: Path
    store_dir: Path
    settings: DistributedConfig = field(default_factory=DistributedConfig)
    logs: Path | None = None
    gpus: tuple[str, ...] = ()
    register_as: str | None = MODEL_NAME
    overwrite: bool = False
    note_eval_pieces: int | None = None
    promote: str = "if-better"
    init_from: str | None = None


@dataclass
class Process:
    """A process started here, with its log (appended to when it is started again)."""

    name: str
    cmd: list[str]
    env: dict[str, str]
    log: Path
    popen: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    reported: bool = False

    def start(self) -> Process:
        with self.log.open("ab") as handle:  # the child keeps its own copy
            self.popen = subprocess.Popen(
                self.cmd,
                stdout=handle,
                stderr=subprocess.STDOUT,
                env={**self.env, "PYTHONUNBUFFERED": "1"},
                start_new_session=True,  # Ctrl-C reaches the launcher only, which stops each in turn
            )
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    @property
    def code(self) -> int | None:
        return self.popen.poll() if self.popen is not None else None


def stop(processes: list[Process], grace: float = STOP_GRACE) -> None:
    """SIGTERM to each process group, SIGKILL to those still there after ``grace`` s;
    then SIGKILL to what is left of the groups just stopped (the MLflow server's job
    runners can outlive it; a group that ended earlier is left alone: its id may be
    another process's by now)."""
    running = [p for p in processes if p.popen is not None and p.code is None]
    for proc in running:
        _signal_group(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for proc in running:
        assert proc.popen is not None
        try:
            proc.popen.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            _signal_group(proc.pid, signal.SIGKILL)
            proc.popen.wait()
    for proc in running:
        _signal_group(proc.pid, signal.SIGKILL)


def _signal_group(pid: int, sig: signal.Signals) -> None:
    """Signal the process group ``pid`` leads (each process here starts its own)."""
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass


def free_port() -> int:
    """A TCP port free on the loopback address now."""
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def _port(port: int, what: str, option: str) -> int:
    if port == 0:
        return free_port()
    with socket.socket() as sock:
        try:
            sock.bind((LOOPBACK, port))
        except OSError as exc:
            raise ConfigError(f"{what} port {port} is in use on {LOOPBACK}; choose another with {option}") from exc
    return port


def exit_reason(code: int | None) -> str:
    """``exit code 1`` or ``killed by SIGKILL``."""
    if code is None:
        return "running"
    if code < 0:
        return f"killed by {signal.Signals(-code).name}"
    return f"exit code {code}"


def server_command(cluster: Cluster, port: int) -> list[str]:
    """``mlflow server`` over the cluster's store, on the loopback address."""
    store = cluster.store_dir.resolve()
    return [
        *(sys.executable, "-m", "mlflow", "server"),
        *("--backend-store-uri", f"sqlite:///{store / 'mlflow.db'}"),
        *("--default-artifact-root", (store / "artifacts").as_uri(), "--no-serve-artifacts"),
        *("--host", LOOPBACK, "--port", str(port), "--workers", "1"),
    ]


def search_commands(cluster: Cluster, tracking_uri: str, oracle_port: int) -> dict[str, list[str]]:
    """The chief's and each worker's ``pianotx search`` command lines, by process name."""
    common = [
        *(sys.executable, "-m", "pianotx.cli", "search", str(cluster.space.resolve())),
        *("--data", str(cluster.data.resolve()), "--tracking-uri", tracking_uri),
        *("--state-dir", str(cluster.store_dir.resolve() / "keras-tuner")),
        *(("--init-from", cluster.init_from) if cluster.init_from else ()),
    ]
    chief = [
        *common,
        *("--chief", "--bind", LOOPBACK, "--port", str(oracle_port)),
        *("--worker-timeout", str(cluster.settings.worker_timeout), "--chief-poll", str(cluster.settings.chief_poll)),
        *(("--register-as", cluster.register_as) if cluster.register_as else ("--no-register",)),
        *(("--promote", cluster.promote) if cluster.promote != "if-better" else ()),
        *(("--overwrite",) if cluster.overwrite else ()),
    ]
    commands = {"chief": chief}
    pieces = () if cluster.note_eval_pieces is None else ("--note-eval-pieces", str(cluster.note_eval_pieces))
    for i in range(cluster.settings.workers):
        oracle = f"{LOOPBACK}:{oracle_port}"
        commands[f"tuner{i}"] = [*common, "--worker", str(i), "--oracle", oracle, *pieces]
    return commands


def worker_env(cluster: Cluster, index: int) -> dict[str, str]:
    """A worker's environment: its share of the CPU threads, its GPU."""
    threads = cluster.settings.threads or max(1, (os.cpu_count() or 1) // cluster.settings.workers)
    env = {**os.environ, "TF_NUM_INTRAOP_THREADS": str(threads), "TF_NUM_INTEROP_THREADS": str(threads)}
    if cluster.gpus:
        env["CUDA_VISIBLE_DEVICES"] = cluster.gpus[index]
    return env


def _start(name: str, cmd: list[str], logs: Path, env: dict[str, str]) -> Process:
    log = logs / f"{name}.log"
    log.write_bytes(b"")
    return Process(name, cmd, env, log).start()


def _wait_for_server(server: Process, url: str) -> None:
    deadline = time.monotonic() + SERVER_START
    while time.monotonic() < deadline:
        if server.code is not None:
            raise ConfigError(f"the MLflow server stopped ({exit_reason(server.code)}); see {server.log}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as reply:
                if reply.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise ConfigError(f"the MLflow server did not answer at {url} within {SERVER_START:.0f} s; see {server.log}")


def _check(cluster: Cluster) -> str:
    """The search's name; one-line errors for a bad cluster before anything starts."""
    from pianotx.tuning.space import load_spec

    if cluster.settings.workers < 1:
        raise ConfigError(f"--workers must be 1 or more, got {cluster.settings.workers}")
    if cluster.gpus and len(cluster.gpus) < cluster.settings.workers:
        raise ConfigError(f"--gpus names {len(cluster.gpus)} GPUs for {cluster.settings.workers} workers: one each")
    if not (cluster.data / "manifest.json").is_file():
        raise ConfigError(f"{cluster.data}: not a dataset (no manifest.json); build one with `pianotx data build`")
    return load_spec(cluster.space).name


def launch_cluster(
    space: Path,
    data: Path,
    settings: DistributedConfig,
    *,
    store_dir: Path | None = None,
    logs: Path | None = None,
    gpus: tuple[str, ...] = (),
    register_as: str | None = MODEL_NAME,
    overwrite: bool = False,
    note_eval_pieces: int | None = None,
    promote: str = "if-better",
    init_from: str | None = None,
    echo: Callable[[str], None] = print,
) -> int:
    """``pianotx search-distributed``: :func:`launch` the cluster these describe, its
    store the project's ``mlruns/`` unless ``store_dir`` names another (see :class:`Cluster`)."""
    store = (store_dir or find_store_dir()).resolve()
    cluster = Cluster(
        space, data, store, settings, logs, gpus, register_as, overwrite, note_eval_pieces, promote, init_from
    )
    return launch(cluster, echo)


def launch(cluster: Cluster, echo: Callable[[str], None] = print) -> int:
    """Run the cluster's search to its end; the chief's exit code (130: interrupted).

    Raises:
        ConfigError: a bad setting, a port in use, a server that does not start.
    """
    name = _check(cluster)
    mlflow_port = _port(cluster.settings.mlflow_port, "the MLflow server's", "--mlflow-port")
    oracle_port = _port(cluster.settings.port, "the chief's", "--port")
    logs = cluster.logs or cluster.store_dir / "logs" / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    logs.mkdir(parents=True, exist_ok=True)
    (cluster.store_dir / "artifacts").mkdir(parents=True, exist_ok=True)
    url = f"http://{LOOPBACK}:{mlflow_port}"
    started: list[Process] = []
    previous = signal.signal(signal.SIGTERM, _interrupt)
    # Ctrl-C stops the cluster even when this process started with SIGINT ignored (a
    # background job of a non-interactive shell, where Python installs no handler).
    previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        server = _start("mlflow", server_command(cluster, mlflow_port), logs, dict(os.environ))
        started.append(server)
        _wait_for_server(server, url)
        echo(f"MLflow server (and UI) at {url}; logs in {logs}")
        commands = search_commands(cluster, url, oracle_port)
        for proc_name, cmd in commands.items():
            index = int(proc_name.removeprefix("tuner")) if proc_name != "chief" else -1
            env = worker_env(cluster, index) if index >= 0 else {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
            started.append(_start(proc_name, cmd, logs, env))

        def record() -> None:
            write_json_atomic(
                logs / CLUSTER_FILE,
                {
                    "mlflow": url,
                    "oracle": f"{LOOPBACK}:{oracle_port}",
                    "pids": {p.name: p.pid for p in started},
                    "commands": {p.name: p.cmd for p in started},
                },
            )

        record()
        echo(f"chief on {LOOPBACK}:{oracle_port}, {cluster.settings.workers} workers; waiting for the chief")
        return _supervise(started[1], started[2:], server, cluster.settings.worker_restarts, echo, record)
    except KeyboardInterrupt:
        echo("interrupted: stopping the workers, the chief and the server")
        return 130
    finally:
        _stop_all(started)
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, previous_int)


def _interrupt(signum: int, frame: object) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second signal must not cut the clean-up
    raise KeyboardInterrupt(f"signal {signum}")


def _supervise(
    chief: Process,
    workers: list[Process],
    server: Process,
    restarts: int,
    echo: Callable[[str], None],
    record: Callable[[], None],
) -> int:
    """Wait for the chief; start a worker that failed again (``restarts`` times at most):
    with its tuner id, it takes its unfinished trial back from the chief. Once the
    chief has ended, its workers (told to stop) get ``STOP_GRACE`` s to end by themselves."""
    while chief.code is None:
        for worker in workers:
            if worker.code is None or worker.reported:
                continue
            if worker.code and worker.restarts < restarts:
                worker.restarts += 1
                why = exit_reason(worker.code)
                echo(f"{worker.name} stopped ({why}); starting it again ({worker.restarts} of {restarts})")
                worker.start()
                record()
                continue
            _report(worker, echo)
        codes = [w.code for w in workers]
        if None not in codes and all(codes):  # a worker that ended well (0) was told: no trial left
            echo("every worker has failed: stopping the chief; the same command resumes the search")
            return 1
        if server.code is not None:
            echo(f"the MLflow server stopped ({exit_reason(server.code)}); log {server.log}")
            return 1
        time.sleep(0.5)
    deadline = time.monotonic() + STOP_GRACE
    while any(w.code is None for w in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    for worker in workers:
        if worker.code is not None and not worker.reported:
            _report(worker, echo)
    for line in chief.log.read_text(errors="replace").strip().splitlines()[-3:]:
        echo(f"chief: {line}")
    return int(chief.code or 0)


def _report(worker: Process, echo: Callable[[str], None]) -> None:
    worker.reported = True
    lost = "" if worker.code == 0 else "; the chief gives its trial to another worker"
    echo(f"{worker.name} stopped ({exit_reason(worker.code)}){lost}; log {worker.log}")


def _stop_all(started: list[Process]) -> None:
    """The chief and the workers (each closes its runs), then the server."""
    stop(started[1:])
    stop(started[:1])
