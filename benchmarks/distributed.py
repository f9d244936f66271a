"""Trials per hour of one search run three ways on this machine: one process
(``pianotx search``), and a chief with two workers (``pianotx search-distributed``)
whose chief checks every second (pianotx's) or every 20 s (Keras Tuner's own loop);
and what coordination costs per trial.

Each run is a fresh store and the whole command, start-up included. From the MLflow
runs: ``in-run s/trial`` is the mean duration of a trial run (training, evaluation,
logging); ``outside s/trial`` is the time of the training processes not spent inside
a trial run (start-up, asking the chief, waiting), ``(wall x processes - sum of trial
runs) / trials``; ``end wait`` is from the last trial's end to the search run's end
(the chief noticing the end, the registration skipped).

Builds a small dataset (generated pieces) unless ``--data`` is given.

    python benchmarks/distributed.py [--trials 6] [--epochs 4] [--data DIR]
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
  lstm_units: {{type: int, min_value: 16, max_value: 64, step: 8}}
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


def run(cmd: list[str], log: Path) -> float:
    """Run ``cmd`` to its end; its wall time in seconds."""
    start = time.perf_counter()
    with log.open("wb") as out:
        code = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT).returncode
    if code:
        sys.exit(f"{' '.join(cmd[:5])} ... failed ({code}); see {log}")
    return time.perf_counter() - start


def figures(db: Path, wall: float, processes: int) -> dict[str, float]:
    """Trials per hour and the coordination costs, read from the store ``db``."""
    from pianotx.locations import Store
    from pianotx.tracking import connect

    client = connect(Store(f"sqlite:///{db}", None))
    exp = client.get_experiment_by_name("bench")
    runs = client.search_runs([exp.experiment_id])
    parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
    trials = [r for r in runs if r.info.status == "FINISHED" and "pianotx.trial_id" in r.data.tags]
    durations = [(r.info.end_time - r.info.start_time) / 1000 for r in trials]
    return {
        "trials": len(trials),
        "wall": wall,
        "per_hour": len(trials) / wall * 3600,
        "in_run": statistics.mean(durations),
        "outside": (wall * processes - sum(durations)) / len(trials),
        "end_wait": (parent.info.end_time - max(r.info.end_time for r in trials)) / 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--pieces", type=int, default=16, help="generated pieces when no --data")
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
        wall = run(cmd, root / "one.log")
        rows.append(("1 process", figures(one / "mlflow.db", wall, 1)))
        for poll in (1.0, 20.0):
            store = root / f"poll{poll:.0f}"
            cmd = [*cli, "search-distributed", str(space), "--data", str(data), "--store-dir", str(store)]
            cmd += ["--port", "0", "--mlflow-port", "0", "--no-register", "--chief-poll", str(poll)]
            wall = run(cmd, root / f"poll{poll:.0f}.log")
            rows.append((f"chief + 2 workers, poll {poll:.0f} s", figures(store / "mlflow.db", wall, 2)))
            print(f"{rows[-1][0]}: {wall:.0f} s", flush=True)
    header = "| run | trials | wall s | trials/hour | in-run s/trial | outside s/trial | end wait s |"
    lines = [header, "|---|---|---|---|---|---|---|"]
    for name, f in rows:
        lines.append(
            f"| {name} | {f['trials']:.0f} | {f['wall']:.0f} | {f['per_hour']:.0f} | {f['in_run']:.1f} "
            f"| {f['outside']:.1f} | {f['end_wait']:.1f} |"
        )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
