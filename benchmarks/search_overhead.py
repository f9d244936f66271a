"""What pianotx's search costs on top of training: frames/s of one tracked trial vs a bare
``model.fit`` of the same model on the same data, and peak memory after 1 and 10 trials.

Needs a built dataset (default: data/default, from `make data`). Uses a temporary MLflow
store. Each side runs the same epochs on the same streaming loader; the ratio is the
median over --repeats pairs run alternately.

    python benchmarks/search_overhead.py [--data data/default] [--epochs 3] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import psutil

SPACE = """
name: {name}
tuner: {{type: random, max_trials: {trials}, seed: 0}}
hyperparameters: {hyperparameters}
fixed: {{epochs: {epochs}, recurrent_dropout: 0.0, dense_units: 120, batch_size: 8, early_stopping_patience: 100{more}}}
"""
UNITS = 96  # the bare fit's model, and the single tracked trial's


def bare_fit(data: Path, epochs: int) -> float:
    """Frames/s of model.fit alone (same model, loader, epochs; no callbacks)."""
    import keras

    from pianotx.config import ModelConfig, TrainConfig
    from pianotx.loader import ChunkDataset
    from pianotx.model import build_model

    keras.backend.clear_session()
    train = ChunkDataset(data, "train", 8)
    model = build_model(ModelConfig(lstm_units=UNITS, recurrent_dropout=0.0), TrainConfig())
    start = time.perf_counter()
    model.fit(train, epochs=epochs, verbose=0)
    frames = train.arrays.n_chunks * train.arrays.manifest.chunk_frames * epochs
    return frames / (time.perf_counter() - start)


def tracked_trials(data: Path, root: Path, name: str, trials: int, epochs: int) -> float:
    """Frames/s of a whole pianotx search of ``trials`` trials (all its overheads)."""
    from pianotx.locations import Store
    from pianotx.store import load_manifest
    from pianotx.tuning.search import run_search

    space = root / f"{name}.yaml"
    if trials == 1:  # exactly the bare fit's model
        text = SPACE.format(name=name, trials=1, epochs=epochs, hyperparameters="{}", more=f", lstm_units: {UNITS}")
    else:  # distinct widths, so every trial trains
        hps = "{lstm_units: {type: int, min_value: 64, max_value: 136, step: 8}}"
        text = SPACE.format(name=name, trials=trials, epochs=epochs, hyperparameters=hps, more="")
    space.write_text(text)
    store = Store(f"sqlite:///{root / 'mlflow.db'}", (root / "artifacts").as_uri())
    manifest = load_manifest(data)
    start = time.perf_counter()
    run_search(space, data, store, None, verbose=0)
    frames = manifest.data["splits"]["train"]["chunks"] * manifest.chunk_frames * epochs * trials
    return frames / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("data/default"))
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    process = psutil.Process()
    ratios = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for i in range(args.repeats):
            bare = bare_fit(args.data, args.epochs)
            tracked = tracked_trials(args.data, root, f"one{i}", 1, args.epochs)
            ratios.append(tracked / bare)
            print(f"pair {i + 1}: bare fit {bare:,.0f} frames/s, tracked trial {tracked:,.0f} frames/s")
        after_one = process.memory_info().rss / 2**20
        tracked_trials(args.data, root, "ten", 10, 1)
        after_ten = process.memory_info().rss / 2**20
    print(
        f"resident memory after the single-trial searches: {after_one:.0f} MiB; "
        f"after a further 10-trial search: {after_ten:.0f} MiB"
    )
    print(f"median throughput ratio, tracked trial / bare fit: {statistics.median(ratios):.2f}")


if __name__ == "__main__":
    main()
