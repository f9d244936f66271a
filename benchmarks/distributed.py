"""Trials per hour of one search run three ways on this machine: one process
(``pianotx search``), and a chief with two workers (``pianotx search-distributed``)
whose chief checks every second (pianotx's) or every 20 s (Keras Tuner's own loop);
and what coordination costs.

Each run is a fresh store and the whole command. From the MLflow runs:
``start-up`` is from the command's start to the first trial run (imports, the MLflow
server, the chief); ``in-run`` is the mean duration of a trial run (training,
evaluation, logging the model); ``between`` is the mean gap between one trial run's end
and the next on the same process (reporting the trial, asking the oracle for the next,
opening its run): the coordination cost per trial; ``end wait`` is from the last
trial's end to the search run's end (the chief noticing the end; registration skipped);
``steady trials/hour`` is the rate once started, ``processes x 3600 / (in-run + between)``.

Builds a small dataset (generated pieces) unless ``--data`` is given.

    python benchmarks/distributed.py [--trials 8] [--epochs 4] [--data DIR]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SPACE = """
name: bench
tuner: {{type: random, max_trials: {trials}, seed: 0}}
hyperparameters:
  lstm_units: {{type: int, min_value: 8, max_value: 128, step: 8}}
fixed: {{epochs: {epochs}, recurrent_dropout: 0.0, dense_units: 32, batch_size: 8, early_stopping_patience: 100}}
"""


def make_dataset(root: Path, pieces: int) -> Path:
    """Generated pairs (additive tones), built into a dataset of 64-frame chunks."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from conftest import melody, write_pair

    from pianotx.build import build_dataset
    from pianotx.config import BuildConfig, ChunkConfig

    for i in range(pieces):
        write_pair(root / "pairs", f"p{i:02d}", melody(i, seconds=10.0))
    config = BuildConfig(chunks=ChunkConfig(chunk_frames=64))
    build_dataset(root / "pairs", root / "ds", config, workers=1, progress=False, log=lambda _: None)
    return root / "ds"


def run(cmd: list[str], log: Path) -> tuple[float, float]:
    """Run ``cmd`` to its end; its start (epoch seconds) and wall time (seconds)."""
    start, clock = time.time(), time.perf_counter()
    with log.open("wb") as out:
        code = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT).returncode
    if code:
        sys.exit(f"{' '.join(cmd[:5])} ... failed ({code}); see {log}")
    return start, time.perf_counter() - clock


def figures(db: Path, start: float, wall: float, processes: int) -> dict[str, float]:
    """Trials per hour and the coordination costs, read from the store ``db``."""
    from pianotx.locations import Store
    from pianotx.tracking import connect

    client = connect(Store(f"sqlite:///{db}", None))
    exp = client.get_experiment_by_name("bench")
    runs = client.search_runs([exp.experiment_id])
    parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
    trials = [r for r in runs if r.info.status == "FINISHED" and "pianotx.trial_id" in r.data.tags]
    gaps = []
    for worker in {r.data.tags["pianotx.worker"] for r in trials}:
        mine = sorted((r.info.start_time, r.info.end_time) for r in trials if r.data.tags["pianotx.worker"] == worker)
        gaps += [(b[0] - a[1]) / 1000 for a, b in zip(mine, mine[1:])]
    in_run = statistics.mean((r.info.end_time - r.info.start_time) / 1000 for r in trials)
    between = statistics.mean(gaps) if gaps else 0.0
    return {
        "trials": len(trials),
        "wall": wall,
        "per_hour": len(trials) / wall * 3600,
        "start_up": min(r.info.start_time for r in trials) / 1000 - start,
        "in_run": in_run,
        "between": between,
        "steady": processes * 3600 / (in_run + between),
        "end_wait": (parent.info.end_time - max(r.info.end_time for r in trials)) / 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--pieces", type=int, default=24, help="generated pieces when no --data")
    parser.add_argument("--data", type=Path)
    args = parser.parse_args()
    cli = [sys.executable, "-m", "pianotx.cli"]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = args.data or make_dataset(root, args.pieces)
        space = root / "bench.yaml"
        space.write_text(SPACE.format(trials=args.trials, epochs=args.epochs))
        one = root / "one"
        one.mkdir()
        uri = f"sqlite:///{one / 'mlflow.db'}"
        cmd = [*cli, "search", str(space), "--data", str(data), "--tracking-uri", uri, "--no-register"]
        rows.append(("1 process", figures(one / "mlflow.db", *run(cmd, root / "one.log"), 1)))
        print(f"{rows[-1][0]}: {rows[-1][1]['wall']:.0f} s", flush=True)
        for poll in (1.0, 20.0):
            store = root / f"poll{poll:.0f}"
            cmd = [*cli, "search-distributed", str(space), "--data", str(data), "--store-dir", str(store)]
            cmd += ["--port", "0", "--mlflow-port", "0", "--no-register", "--chief-poll", str(poll)]
            rows.append(
                (f"chief + 2 workers, poll {poll:.0f} s", figures(store / "mlflow.db", *run(cmd, root / "d.log"), 2))
            )
            print(f"{rows[-1][0]}: {rows[-1][1]['wall']:.0f} s", flush=True)
    lines = [
        "| run | trials | wall s | trials/hour | steady trials/hour | start-up s | in-run s/trial | between s/trial "
        "| end wait s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, f in rows:
        lines.append(
            f"| {name} | {f['trials']:.0f} | {f['wall']:.0f} | {f['per_hour']:.0f} | {f['steady']:.0f} "
            f"| {f['start_up']:.0f} "
            f"| {f['in_run']:.1f} | {f['between']:.2f} | {f['end_wait']:.1f} |"
        )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
