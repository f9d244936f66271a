"""The model family side by side: validation frame and onset F1, parameters and training
speed of each variant after the same brief training on a built dataset.

Every variant trains with :func:`pianotx.train.fit` (Adam at 3e-3 by default, so that a
few hundred steps leave the all-silent prior; batch 8; the same seed and epochs) on the
streaming loader; variants with an onset head get widened onset targets and the
weighted onset loss of :class:`~pianotx.config.TrainConfig`. After training, the
whole validation split is scored at the decoding thresholds: frame F1 cell by cell, and
onset F1 as onset events matched within one frame (:func:`pianotx.train.onset_counts`)
against the true, unwidened onsets. A model without an onset head is scored on the
rising edges of its frame output, which is where decoding starts its notes. Training
frames/s leaves out validation and, when there are several epochs, the first epoch
(graph tracing).

    python benchmarks/model_family.py --data /tmp/model-data/default [--epochs 10] [--steps 0]
        [--variants seed,lstm,onsets,conv,conv+onsets] [--threads 2]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from pianotx.config import ModelConfig, TrainConfig

FAST = ModelConfig(recurrent_dropout=0.0)  # the seed without recurrent dropout (3.5x faster)
# Onsets and Frames' stack, narrower (16/16/32 filters, 2 frequency pools) and without the
# dense projection, which slowed the first few hundred steps.
CONV = {"conv_layers": 3, "conv_filters": 16, "conv_dense_units": 0}
VARIANTS = {
    "seed": ModelConfig(),
    "lstm": FAST,
    "onsets": replace(FAST, onset_head=True),
    "conv": replace(FAST, **CONV),
    "conv+onsets": replace(FAST, onset_head=True, **CONV),
}


def train_clock() -> Any:
    """A Keras callback whose ``seconds`` lists each epoch's time in training batches
    (from the epoch's start to its last batch: validation excluded)."""
    import keras

    class TrainClock(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.seconds: list[float] = []
            self.start = self.last = 0.0

        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            self.start = self.last = time.perf_counter()

        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            self.last = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            self.seconds.append(self.last - self.start)

    return TrainClock()


def score(model: Any, data: Path) -> dict[str, float]:
    """Frame and onset P/R/F1 over the validation split at DecodingConfig's thresholds."""
    import numpy as np

    from pianotx.decoding import DecodingConfig
    from pianotx.evaluate import prf
    from pianotx.loader import ChunkDataset
    from pianotx.model import output_heads
    from pianotx.train import frame_counts, onset_counts

    decoding = DecodingConfig()
    totals = {"frame": np.zeros(3, np.int64), "onset": np.zeros(3, np.int64)}
    for x, y in ChunkDataset(data, "validation", 8, shuffle=False, onsets=True, onset_width=1):
        heads = output_heads(model.predict_on_batch(x))
        onset_probs, onset_threshold = heads.get("onsets"), decoding.onset_threshold
        if onset_probs is None:
            onset_probs, onset_threshold = heads["frames"], decoding.threshold
        totals["frame"] += frame_counts(heads["frames"], y["frames"], decoding.threshold)
        totals["onset"] += onset_counts(onset_probs, y["onsets"], onset_threshold)
    out = {}
    for key, counts in totals.items():
        p, r, f = prf(*(int(c) for c in counts))
        out |= {f"{key}_p": p, f"{key}_r": r, f"{key}_f1": f}
    return out


def run_variant(name: str, config: ModelConfig, train_cfg: TrainConfig, data: Path) -> dict[str, Any]:
    """Train one variant from scratch; its scores, parameters and training frames/s."""
    import keras

    from pianotx.loader import ChunkDataset
    from pianotx.model import build_model
    from pianotx.store import load_manifest
    from pianotx.train import fit, release_memory

    release_memory()
    keras.utils.set_random_seed(train_cfg.seed)
    manifest = load_manifest(data)
    onsets = {"onsets": config.onset_head, "onset_width": train_cfg.onset_width}
    train = ChunkDataset(
        data, "train", train_cfg.batch_size, seed=train_cfg.seed, limit_batches=train_cfg.steps_per_epoch, **onsets
    )
    val = ChunkDataset(data, "validation", train_cfg.batch_size, shuffle=False, **onsets)
    model = build_model(config, train_cfg, manifest.features.n_bins, input_stats=manifest.feature_stats)
    clock = train_clock()
    history = fit(model, train, val, train_cfg, [clock], verbose=0).history
    timed = clock.seconds[1:] or clock.seconds
    frames = min(len(train) * train.batch_size, train.n_chunks) * manifest.chunk_frames
    result = {
        "variant": name,
        "params": model.count_params(),
        "frames_per_s": frames * len(timed) / sum(timed),
        "loss": history["loss"][-1],
        "val_loss": history["val_loss"][-1],
    }
    return result | score(model, data)


def table(results: list[dict[str, Any]]) -> str:
    """One row per variant, fixed-width columns."""
    head = f"{'variant':<12} {'params':>9} {'frames/s':>9} {'frame P/R/F1':>17} {'onset P/R/F1':>17}"
    rows = [head]
    for r in results:
        frame = f"{r['frame_p']:.3f}/{r['frame_r']:.3f}/{r['frame_f1']:.3f}"
        onset = f"{r['onset_p']:.3f}/{r['onset_r']:.3f}/{r['onset_f1']:.3f}"
        rows.append(f"{r['variant']:<12} {r['params']:>9,} {r['frames_per_s']:>9,.0f} {frame:>17} {onset:>17}")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("data/default"))
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--steps", type=int, default=0, help="training batches per epoch (0: the whole split)")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, of {', '.join(VARIANTS)}")
    parser.add_argument("--threads", type=int, default=2, help="TensorFlow intra- and inter-op threads")
    parser.add_argument("--learning-rate", type=float, default=3.0e-3)
    parser.add_argument("--onset-width", type=int, default=TrainConfig.onset_width)
    parser.add_argument("--onset-pos-weight", type=float, default=TrainConfig.onset_pos_weight)
    args = parser.parse_args()
    names = [v for v in args.variants.split(",") if v]
    unknown = sorted(set(names) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variant(s) {', '.join(unknown)}; expected some of {', '.join(VARIANTS)}")

    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    train_cfg = TrainConfig(
        epochs=args.epochs,
        learning_rate=args.learning_rate,
        steps_per_epoch=args.steps,
        early_stopping_patience=args.epochs,
        onset_width=args.onset_width,
        onset_pos_weight=args.onset_pos_weight,
    )
    print(
        f"data {args.data}; {args.epochs} epochs x {args.steps or 'all'} steps, "
        f"learning rate {args.learning_rate}; onset width {args.onset_width}, "
        f"positive weight {args.onset_pos_weight}; {args.threads} threads"
    )
    results = []
    for name in names:
        result = run_variant(name, VARIANTS[name], train_cfg, args.data)
        print(
            f"{name}: {result['params']:,} params, {result['frames_per_s']:,.0f} training frames/s, "
            f"loss {result['loss']:.4f}, val_loss {result['val_loss']:.4f}, "
            f"frame F1 {result['frame_f1']:.3f}, onset P/R/F1 {result['onset_p']:.3f}/{result['onset_r']:.3f}/"
            f"{result['onset_f1']:.3f}",
            flush=True,
        )
        results.append(result)
    print(table(results))


if __name__ == "__main__":
    main()
