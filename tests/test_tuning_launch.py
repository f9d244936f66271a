"""The one-machine launcher: its command lines, ports, restarts of a failed worker, and
that it stops everything it started, on Ctrl-C too (stand-in processes, no training)."""

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest

from pianotx.config import ConfigError, DistributedConfig
from pianotx.tuning.launch import Cluster, Process, _port, _supervise, search_commands, stop, worker_env

SLEEP = [sys.executable, "-c", "import time; time.sleep(120)"]


def _cluster(tmp_path, **more) -> Cluster:
    return Cluster(space=tmp_path / "s.yaml", data=tmp_path / "ds", store_dir=tmp_path / "mlruns", **more)


def test_each_process_gets_its_role_and_the_same_store_and_state(tmp_path):
    settings = DistributedConfig(workers=2, threads=3)
    cluster = _cluster(tmp_path, settings=settings, gpus=("0", "1"), register_as=None)
    commands = search_commands(cluster, "http://127.0.0.1:5001", 8123)
    assert list(commands) == ["chief", "tuner0", "tuner1"]
    state = ["--state-dir", str((tmp_path / "mlruns" / "keras-tuner").resolve())]
    for cmd in commands.values():
        assert cmd[1:4] == ["-m", "pianotx.cli", "search"] and "--tracking-uri" in cmd
        assert cmd[cmd.index("--tracking-uri") + 1] == "http://127.0.0.1:5001"
        assert cmd[cmd.index("--state-dir") : cmd.index("--state-dir") + 2] == state
    chief = commands["chief"]
    assert chief[chief.index("--chief") :][:5] == ["--chief", "--bind", "127.0.0.1", "--port", "8123"]
    assert chief[-1] == "--no-register"
    # workers score as many validation pieces as the space file says, unless told
    assert commands["tuner1"][-4:] == ["--worker", "1", "--oracle", "127.0.0.1:8123"]
    told = search_commands(_cluster(tmp_path, note_eval_pieces=0, overwrite=True), "http://h:1", 8123)
    assert told["tuner0"][-2:] == ["--note-eval-pieces", "0"] and "--overwrite" not in told["tuner0"]
    assert told["chief"][-3:] == ["--register-as", "piano", "--overwrite"]
    env = worker_env(cluster, 1)
    assert (env["CUDA_VISIBLE_DEVICES"], env["TF_NUM_INTRAOP_THREADS"]) == ("1", "3")


def test_a_port_in_use_is_refused_with_one_line():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(
            ConfigError, match=f"the chief's port {port} is in use on 127.0.0.1; choose another with --port"
        ):
            _port(port, "the chief's", "--port")
    assert _port(0, "the chief's", "--port") > 0


def test_a_process_that_ignores_sigterm_is_killed_after_the_grace(tmp_path):
    stubborn = [
        sys.executable,
        "-c",
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(120)",
    ]
    procs = [
        Process(f"p{i}", cmd, dict(os.environ), tmp_path / f"p{i}.log").start()
        for i, cmd in enumerate([SLEEP, stubborn])
    ]
    time.sleep(0.5)
    start = time.monotonic()
    stop(procs, grace=1.0)
    assert time.monotonic() - start < 5
    assert [p.code for p in procs] == [-signal.SIGTERM, -signal.SIGKILL]


def test_a_failed_worker_is_started_again_then_the_search_stops(tmp_path):
    fails = [sys.executable, "-c", "raise SystemExit(3)"]
    chief = Process("chief", SLEEP, dict(os.environ), tmp_path / "chief.log").start()
    server = Process("mlflow", SLEEP, dict(os.environ), tmp_path / "mlflow.log").start()
    worker = Process("tuner0", fails, dict(os.environ), tmp_path / "tuner0.log").start()
    lines, records = [], []
    try:
        code = _supervise(chief, [worker], server, 2, lines.append, lambda: records.append(worker.pid))
    finally:
        stop([chief, server])
    assert code == 1 and worker.restarts == 2 and len(records) == 2
    assert lines == [
        "tuner0 stopped (exit code 3); starting it again (1 of 2)",
        "tuner0 stopped (exit code 3); starting it again (2 of 2)",
        f"tuner0 stopped (exit code 3); the chief gives its trial to another worker; log {worker.log}",
        "every worker has failed: stopping the chief; the same command resumes the search",
    ]


FAKE_SERVER = """
import http.server, sys
class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.end_headers(); self.wfile.write(b"OK")
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Health).serve_forever()
"""

LAUNCHER = """
import sys
from pathlib import Path
from pianotx.config import DistributedConfig
from pianotx.tuning import launch
sleep = [sys.executable, "-c", "import time; time.sleep(120)"]
launch.server_command = lambda cluster, port: [sys.executable, "-c", {server!r}, str(port)]
launch.search_commands = lambda cluster, url, port: {{"chief": sleep, "tuner0": sleep, "tuner1": sleep}}
root = Path({root!r})
ports = DistributedConfig(port=0, mlflow_port=0)
cluster = launch.Cluster(root / "s.yaml", root / "ds", root / "mlruns", ports, logs=root / "logs")
sys.exit(launch.launch(cluster))
"""


def test_ctrl_c_stops_everything_the_launcher_started(tmp_path):
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "manifest.json").write_text("{}")
    (tmp_path / "s.yaml").write_text("name: s\ntuner: {type: random, max_trials: 1}\n")
    script = LAUNCHER.format(server=FAKE_SERVER, root=str(tmp_path))
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(script)], stdout=subprocess.PIPE, text=True)
    record, deadline = tmp_path / "logs" / "cluster.json", time.time() + 60
    while not record.is_file() and time.time() < deadline:
        time.sleep(0.2)
    pids = json.loads(record.read_text())["pids"]
    assert sorted(pids) == ["chief", "mlflow", "tuner0", "tuner1"]
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "interrupted: stopping the workers, the chief and the server" in out
    for pid in pids.values():
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_the_chief_may_finish_after_its_last_worker(tmp_path):
    ends = [sys.executable, "-c", "import time; time.sleep(0.2)"]
    dies = [sys.executable, "-c", "raise SystemExit(-9)"]
    chief = Process("chief", [sys.executable, "-c", "import time; time.sleep(3)"], dict(os.environ), tmp_path / "c.log")
    server = Process("mlflow", SLEEP, dict(os.environ), tmp_path / "mlflow.log").start()
    workers = [
        Process(f"tuner{i}", cmd, dict(os.environ), tmp_path / f"t{i}.log").start()
        for i, cmd in enumerate([ends, dies])
    ]
    lines = []
    try:
        code = _supervise(chief.start(), workers, server, 0, lines.append, lambda: None)
    finally:
        stop([server])
    assert code == 0 and chief.code == 0  # waited for the chief's registration, not stopped
