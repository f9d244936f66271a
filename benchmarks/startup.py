"""Start-up time of the command line: `pianotx --help`, and `pianotx transcribe` of a
1-second clip with the bundled .keras model and with a models:/ URI.

Set-up (not timed): a 1-second 44.1 kHz clip, and a temporary local MLflow store
(SQLite) in which the bundled model is logged and registered as ``piano``, stage
Production, through pianotx.tracking. Each command then runs in fresh processes with a
temporary, empty pianotx cache folder: the first run is reported alone (it builds the
CQT's filter banks into the cache, and may find files cold in the OS cache), then the
median wall and CPU (user + system) seconds of ``--runs`` more, with the cache warm.
CPU seconds matter on a shared machine, where wall time also counts the waiting for a
core. The last line is a table.

    python benchmarks/startup.py [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def pianotx_command() -> list[str]:
    """The installed `pianotx` script beside this Python, else ``python -m pianotx.cli``."""
    script = Path(sys.executable).with_name("pianotx")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "pianotx.cli"]


def write_clip(path: Path) -> None:
    """One second of a decaying 440 Hz tone, 44.1 kHz mono."""
    import soundfile

    t = np.arange(44100) / 44100
    soundfile.write(path, (0.3 * np.sin(2 * np.pi * 440 * t) * np.exp(-2 * t)).astype(np.float32), 44100)


def register_bundled(store_uri: str) -> str:
    """Log the bundled model in the store at ``store_uri`` and register it; its models:/ URI."""
    from pianotx.locations import resolve_store
    from pianotx.quiet import import_keras_quietly

    import_keras_quietly()
    from pianotx.tracking import SearchTracker, register
    from pianotx.transcribe import BUNDLED_MODEL, load_local

    store = resolve_store(store_uri)
    bundled = load_local(BUNDLED_MODEL)
    model = bundled.model
    meta = json.loads(BUNDLED_MODEL.with_suffix(".json").read_text())
    example = np.zeros((1, 8, bundled.features.n_bins), np.float32)
    tracker = SearchTracker(store, "startup-benchmark")
    tracker.start_search({}, {}, [])
    run = tracker.start_trial("0", {})
    uri = tracker.log_model(run, model, (example, model.predict_on_batch(example)), meta)
    tracker.end_trial(run)
    register(store, uri, "piano")
    return "models:/piano/Production"


def run_once(args: list[str], cache: Path) -> tuple[float, float]:
    """Wall and CPU seconds of one fresh process with ``cache`` as XDG_CACHE_HOME; exits
    on failure."""
    env = {**os.environ, "XDG_CACHE_HOME": str(cache)}
    start = time.perf_counter()
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    output = proc.stdout.read() if proc.stdout else ""
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{output}")
    return wall, usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="timed runs after the first, per command")
    args = parser.parse_args()
    from pianotx.transcribe import BUNDLED_MODEL

    pianotx = pianotx_command()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        clip, out = root / "1s.wav", root / "midi"
        write_clip(clip)
        store_uri = f"sqlite:///{root / 'store' / 'mlflow.db'}"
        model_uri = register_bundled(store_uri)
        transcribe = [*pianotx, "transcribe", str(clip), "-o", str(out), "--model"]
        commands = {
            "pianotx --help": [*pianotx, "--help"],
            "transcribe 1s.wav --model bundled.keras": [*transcribe, str(BUNDLED_MODEL)],
            f"transcribe 1s.wav --model {model_uri}": [*transcribe, model_uri, "--tracking-uri", store_uri],
        }
        rows = []
        for name, command in commands.items():
            cache = root / "cache" / str(len(rows))  # empty for the first run
            first = run_once(command, cache)
            timed = [run_once(command, cache) for _ in range(args.runs)]
            wall = statistics.median(t[0] for t in timed)
            cpu = statistics.median(t[1] for t in timed)
            each = ", ".join(f"{t[0]:.2f}" for t in timed)
            print(f"{name}: first run (cold cache) {first[0]:.2f} s (CPU {first[1]:.2f} s)")
            print(f"{name}: median of {args.runs} (warm) {wall:.2f} s (CPU {cpu:.2f} s); each: {each}")
            rows.append(f"{name} | {first[0]:.2f} | {wall:.2f} | {cpu:.2f}")
    load = os.getloadavg()[0]
    header = "command | first run (cold cache) | median wall (warm) | median CPU (warm)"
    print(f"table (s; load average {load:.1f}): {header} || " + " || ".join(rows))


if __name__ == "__main__":
    main()
