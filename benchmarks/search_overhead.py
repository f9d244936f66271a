"""What pianotx's search costs on top of training, at the default search's trial length.

Throughput: one tracked trial (a whole one-trial ``pianotx search``: its MLflow runs,
the per-epoch validation pass (losses, frame and onset F1), the end-of-trial note
scoring with tuned thresholds and latency, the piano-roll figure, the listening excerpt
and the logged model) against a bare ``model.fit`` of the same model on the same loader
for the same steps (no validation, no callbacks). The model is quick.yaml's (bidirectional LSTM with the onset head,
dense 128, batches of 16 chunks, 48 steps per epoch) and an epoch count of its
Hyperband's longest trial. Pairs run alternately; the ratio is the median of the pairs.
Where the tracked trial's time goes is printed too (summed over its calls).

Memory: resident memory after each trial of a 20-trial search (small trials): in this
process (the library's run_search), and of a `pianotx search` command, which replaces
itself with a fresh process every ``--trials-per-process`` trials (the command's default,
2), and the wall time the replacements add per trial.

Needs a built dataset (default: data/default, from `make data`); uses temporary stores.

    python benchmarks/search_overhead.py [--data data/default] [--epochs 6] [--repeats 3] [--trials 20]
"""

from __future__ import annotations

import argparse
import functools
import statistics
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil

from pianotx.cli import TRIALS_PER_PROCESS

MODEL = {
    "lstm_units": 96,
    "lstm_layers": 1,
    "dropout": 0.1,
    "bidirectional": True,
    "onset_head": True,
    "dense_units": 128,
    "recurrent_dropout": 0.0,
}
TRAIN = {"learning_rate": 2.0e-3, "batch_size": 16, "steps_per_epoch": 48, "early_stopping_patience": 100}
NOTE_EVAL_PIECES = 12  # quick.yaml's


def _yaml_map(values: dict[str, Any]) -> str:
    return "{" + ", ".join(f"{k}: {str(v).lower() if isinstance(v, bool) else v}" for k, v in values.items()) + "}"


def bare_fit(data: Path, epochs: int) -> float:
    """Seconds of ``model.fit`` alone: quick.yaml's model, loader and steps."""
    import keras

    from pianotx.config import ModelConfig, TrainConfig
    from pianotx.loader import ChunkDataset
    from pianotx.model import build_model
    from pianotx.store import load_manifest

    keras.backend.clear_session()
    train_cfg = TrainConfig(**{**TRAIN, "epochs": epochs})
    manifest = load_manifest(data)
    train = ChunkDataset(
        manifest,
        "train",
        train_cfg.batch_size,
        seed=train_cfg.seed,
        limit_batches=train_cfg.steps_per_epoch,
        onsets=True,
        onset_width=train_cfg.onset_width,
    )
    model = build_model(ModelConfig(**MODEL), train_cfg, manifest.features.n_bins, input_stats=manifest.feature_stats)
    start = time.perf_counter()
    model.fit(train, epochs=epochs, verbose=0)
    return time.perf_counter() - start


def one_trial_space(root: Path, name: str, epochs: int) -> Path:
    space = root / f"{name}.yaml"
    space.write_text(
        f"name: {name}\nobjective: {{name: val_note_f1, direction: max}}\n"
        "tuner: {type: random, max_trials: 1, seed: 0}\n"
        f"note_eval_pieces: {NOTE_EVAL_PIECES}\n"
        f"fixed: {_yaml_map({**MODEL, **TRAIN, 'epochs': epochs})}\n"
    )
    return space


def store_in(root: Path, name: str) -> Any:
    from pianotx.locations import Store

    return Store(f"sqlite:///{root / name / 'mlflow.db'}", (root / name / "artifacts").as_uri())


def tracked_trial(data: Path, root: Path, name: str, epochs: int) -> float:
    """Seconds of a whole one-trial search of the same model (every overhead included)."""
    from pianotx.tuning.search import run_search

    space = one_trial_space(root, name, epochs)
    start = time.perf_counter()
    result = run_search(space, data, store_in(root, name), None, verbose=0)
    assert result.trials == 1, result
    return time.perf_counter() - start


# Where a tracked trial spends its time beyond training: (label, module, attribute).
PARTS = [
    ("per-epoch validation pass (val_loss, val_f1, val_onset_f1)", "pianotx.train", "validation_pass"),
    ("per-epoch MLflow metrics", "pianotx.tuning.tuner", "EpochLogger.on_epoch_end"),
    ("best checkpoint reload", "pianotx.tuning.tuner", "TrackedRandomSearch.load_model"),
    ("note scoring + threshold tuning", "pianotx.tuning.tuner", "TrackedTrials._tune_and_score"),
    ("piano-roll figure", "pianotx.tracking", "SearchTracker.log_figure"),
    ("listening excerpt (FluidSynth)", "pianotx.tuning.tuner", "TrackedTrials._log_excerpt"),
    ("model logged to MLflow", "pianotx.tracking", "SearchTracker.log_model"),
    ("search run setup", "pianotx.tracking", "SearchTracker.start_search"),
]


@contextmanager
def timed_parts() -> Iterator[dict[str, float]]:
    """Sum the seconds spent in each of :data:`PARTS` while the block runs."""
    import importlib

    totals: dict[str, float] = defaultdict(float)
    restore: list[tuple[Any, str, Any]] = []

    def wrap(label: str, func: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(func)
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return func(*args, **kwargs)
            finally:
                totals[label] += time.perf_counter() - start

        return timed

    for label, module_name, attribute in PARTS:
        owner: Any = importlib.import_module(module_name)
        *path, name = attribute.split(".")
        for part in path:
            owner = getattr(owner, part)
        own = owner.__dict__.get(name)  # None: inherited (restored by deleting the wrapper)
        restore.append((owner, name, own))
        setattr(owner, name, wrap(label, getattr(owner, name)))
    try:
        yield totals
    finally:
        for owner, name, own in reversed(restore):
            if own is None:
                delattr(owner, name)
            else:
                setattr(owner, name, own)


def memory_space(root: Path, name: str, trials: int) -> Path:
    """A search of ``trials`` small trials (what is measured is what a trial leaves
    behind, not its training)."""
    space = root / f"{name}.yaml"
    small = {k: v for k, v in MODEL.items() if k != "lstm_units"}
    space.write_text(
        f"name: {name}\ntuner: {{type: random, max_trials: {trials}, seed: 0}}\n"
        "note_eval_pieces: 2\n"
        "hyperparameters: {lstm_units: {type: int, min_value: 16, max_value: 64, step: 1}}\n"
        f"fixed: {_yaml_map({**small, **TRAIN, 'steps_per_epoch': 4, 'epochs': 1})}\n"
    )
    return space


def memory_of_command(data: Path, root: Path, trials: int, per_process: int) -> tuple[list[float], float]:
    """Resident MiB of a ``pianotx search --trials-per-process per_process`` command
    (its pid stays when it replaces itself) when each of its trials has ended: the
    samples taken while the store held that many finished trial runs, the last one;
    and the command's wall seconds."""
    import sqlite3
    import subprocess
    import sys

    name = f"command{per_process}"
    store = store_in(root, name)
    start = time.perf_counter()
    cmd = [sys.executable, "-m", "pianotx.cli", "search", str(memory_space(root, name, trials))]
    cmd += ["--data", str(data), "--tracking-uri", store.tracking_uri, "--no-register"]
    cmd += ["--trials-per-process", str(per_process)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    watched, by_trials = psutil.Process(proc.pid), {}
    query = (
        "SELECT count(*) FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid "
        "WHERE t.key = 'pianotx.trial_id' AND r.status = 'FINISHED'"
    )
    while proc.poll() is None:
        time.sleep(0.2)
        try:
            rss = watched.memory_info().rss / 2**20
            with sqlite3.connect(f"file:{store.local_path}?mode=ro", uri=True, timeout=1) as con:
                done = con.execute(query).fetchone()[0]
        except (psutil.Error, sqlite3.Error):
            continue
        if rss > 0:  # 0: the process has just exited
            by_trials[done] = rss  # the last sample before the next trial ended
    assert proc.returncode == 0, proc.returncode
    return [by_trials[n] for n in sorted(by_trials) if n > 0], time.perf_counter() - start


def memory_per_trial(data: Path, root: Path, trials: int) -> list[float]:
    """Resident MiB of this process after each trial of one ``trials``-trial search."""
    from pianotx.tuning.search import run_search
    from pianotx.tuning.tuner import TrackedTrials

    space = memory_space(root, "memory", trials)
    process = psutil.Process()
    rss: list[float] = []
    original = TrackedTrials.on_trial_end

    def noted(self: Any, trial: Any) -> None:
        original(self, trial)
        rss.append(process.memory_info().rss / 2**20)

    TrackedTrials.on_trial_end = noted  # type: ignore[method-assign]
    try:
        result = run_search(space, data, store_in(root, "memory"), None, verbose=0)
    finally:
        TrackedTrials.on_trial_end = original  # type: ignore[method-assign]
    assert result.trials == trials, result
    return rss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("data/default"))
    parser.add_argument("--epochs", type=int, default=6, help="epochs per trial (quick.yaml's longest: 6)")
    parser.add_argument("--repeats", type=int, default=3, help="throughput pairs (0: memory only)")
    parser.add_argument("--trials", type=int, default=20, help="trials of the memory searches")
    parser.add_argument(
        "--per-process", type=int, default=TRIALS_PER_PROCESS, help="the command's --trials-per-process"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if args.repeats:
            tracked_trial(args.data, root, "warmup", 1)  # imports, first graph traces
        ratios, parts = [], []
        for i in range(args.repeats):
            bare = bare_fit(args.data, args.epochs)
            with timed_parts() as totals:
                tracked = tracked_trial(args.data, root, f"pair{i}", args.epochs)
            parts.append(dict(totals))
            ratios.append(bare / tracked)
            print(f"pair {i + 1}: bare fit {bare:.1f} s, tracked trial {tracked:.1f} s ({bare / tracked:.2f}x)")
        if parts:
            print("where the tracked trial's extra time goes (median seconds per trial):")
            for label, _, _ in PARTS:
                print(f"  {label}: {statistics.median(p.get(label, 0.0) for p in parts):.1f} s")
        rss = memory_per_trial(args.data, root, args.trials)
        command, wall = memory_of_command(args.data, root, args.trials, args.per_process)
        _, wall_one = memory_of_command(args.data, root, args.trials, 0)
    print(
        f"resident memory, one process: after trial 2 {rss[1]:.0f} MiB, after trial {len(rss)} {rss[-1]:.0f} MiB "
        f"(+{rss[-1] - rss[1]:.0f} MiB, {(rss[-1] - rss[1]) / (len(rss) - 2):.0f} MiB per trial)"
    )
    print(
        f"resident memory, `pianotx search --trials-per-process {args.per_process}`: after trial 2 "
        f"{command[1]:.0f} MiB, after trial {len(command)} {command[-1]:.0f} MiB (+{command[-1] - command[1]:.0f} MiB; "
        f"highest {max(command):.0f} MiB); wall {wall:.0f} s against {wall_one:.0f} s in one process "
        f"({(wall - wall_one) / args.trials:+.1f} s per trial)"
    )
    if ratios:
        print(f"median throughput, tracked trial / bare fit ({args.epochs} epochs): {statistics.median(ratios):.2f}x")


if __name__ == "__main__":
    main()
