"""What each addition is worth on the held-out piano: the pianos, the augmentation, the
piano textures and how many of them, the onset head, the conv front-end and the tuned
decoding, measured one at a time against the whole.

Every variant trains from the same seed for the same number of steps (batches of the
same size) on the training split of one built dataset, rendered with augmentation
(``pianotx data render OUT --augment default``), keeping only the training pieces the
variant allows; its decoding thresholds and latency are tuned on validation pieces
(as a search trial does), and it is scored on the test split (the held-out piano
playing unseen music) with mir_eval: note F1, note-with-offset F1, frame F1, in %.
The decoding rows reuse the whole model: its thresholds untuned (DecodingConfig's
defaults) and tuned without the latency correction.

    python benchmarks/ablations.py --data /tmp/aug/default [--epochs 6] [--steps 48]
        [--variants all,one-piano,...] [--note-eval-pieces 24]

Brief training ranks what helps early; a long training (the bundled model) can narrow
or widen each gap.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from pianotx.config import ModelConfig, TrainConfig
from pianotx.render.corpus import RenderOptions
from pianotx.render.generated import DRILLS, KINDS, allocate, parse_kinds
from pianotx.render.textures import KINDS as TEXTURES

BASE = ModelConfig(
    lstm_units=128, bidirectional=True, dropout=0.1, recurrent_dropout=0.0, dense_units=128, onset_head=True
)
CONV = {"conv_layers": 3, "conv_filters": 16, "conv_dense_units": 0}
FIRST_PIANO = "FluidR3_GM"  # the corpus's one piano before the others were added
# `data build --validation-piano`'s trial: training without this piano, decoding tuned on
# its renderings of validation music (unseen sound) or on the other pianos' (heard sound).
VALIDATION_PIANO = "FreePats-Bright"

# The default corpus before every kind had four generated pieces: 30 of them, 1-3 a kind.
FEW_GENERATED = 30

Keep = Callable[[dict[str, Any]], bool]  # a render.json entry -> train on it?


def everything(entry: dict[str, Any]) -> bool:
    return True


VARIANTS: dict[str, tuple[ModelConfig, Keep]] = {
    "all": (BASE, everything),
    "one-piano": (BASE, lambda e: e["piano"] == FIRST_PIANO),
    "no-augmentation": (BASE, lambda e: "augment" not in e),
    "no-textures": (BASE, lambda e: e["kind"] not in TEXTURES),
    "scores-only": (BASE, lambda e: e["kind"] not in TEXTURES and e["kind"] not in DRILLS),
    "no-onset-head": (replace(BASE, onset_head=False), everything),
    "conv": (replace(BASE, **CONV), everything),
    "validation-piano": (BASE, lambda e: not on_validation_piano(e)),
    "fewer-generated": (BASE, lambda e: among_first_generated(e)),
}


def split_pieces(manifest: Any, split: str, keep: Keep) -> list[str]:
    """Names of the split's pieces whose render.json entry ``keep`` accepts."""
    rendered = json.loads((Path(manifest.data["source"]) / "render.json").read_text())
    entries = {e["name"]: e for e in rendered["pieces"]}
    return [p["name"] for p in manifest.pieces(split) if keep(entries[p["name"]])]


def among_first_generated(entry: dict[str, Any]) -> bool:
    """A score, or a generated piece that a corpus of :data:`FEW_GENERATED` generated
    pieces (at the default weights) also has: ``gen-KIND-NNN`` with NNN below its kind's
    share of them."""
    if entry["kind"] not in KINDS:
        return True
    return int(entry["source"].rsplit("-", 1)[1]) < few_generated_shares().count(entry["kind"])


@functools.cache
def few_generated_shares() -> tuple[str, ...]:
    """The kinds of :data:`FEW_GENERATED` generated pieces at the default weights, once."""
    return tuple(allocate(FEW_GENERATED, parse_kinds(RenderOptions().kinds)))


def on_validation_piano(entry: dict[str, Any]) -> bool:
    return bool(entry["piano"] == VALIDATION_PIANO)


def cycled(dataset: Any, batches: int) -> Any:
    """``dataset`` served for exactly ``batches`` batches an epoch, starting over (in a
    new shuffled order) when a small selection runs out, so every variant trains the
    same number of steps."""
    import keras

    class Cycled(keras.utils.PyDataset):
        def __init__(self) -> None:
            super().__init__(workers=1, use_multiprocessing=False)

        def __len__(self) -> int:
            return batches

        def __getitem__(self, index: int) -> Any:
            if index and index % len(dataset) == 0:
                dataset.on_epoch_end()
            return dataset[index % len(dataset)]

        def on_epoch_end(self) -> None:
            dataset.on_epoch_end()

    return Cycled()


def train_variant(config: ModelConfig, train_cfg: TrainConfig, manifest: Any, pieces: list[str]) -> Any:
    """A model of ``config`` trained on ``pieces`` of the training split."""
    import keras

    from pianotx.loader import ChunkDataset
    from pianotx.model import build_model
    from pianotx.train import fit, release_memory

    release_memory()
    keras.utils.set_random_seed(train_cfg.seed)
    onsets = {"onsets": config.onset_head, "onset_width": train_cfg.onset_width}
    chunks = ChunkDataset(manifest, "train", train_cfg.batch_size, seed=train_cfg.seed, pieces=pieces, **onsets)
    train = cycled(chunks, train_cfg.steps_per_epoch)
    val = ChunkDataset(manifest, "validation", train_cfg.batch_size, shuffle=False, **onsets)
    model = build_model(config, train_cfg, manifest.features.n_bins, input_stats=manifest.feature_stats)
    fit(model, train, val, train_cfg, [], verbose=0)
    return model


def scores(
    model: Any, manifest: Any, note_eval_pieces: int, validation: list[str] | None = None
) -> dict[str, dict[str, float]]:
    """Test-split mean scores (%) with decoding tuned on the validation pieces (those
    named in ``validation``, if given), and the decoding rows' variants."""
    import numpy as np

    from pianotx.decoding import DecodingConfig
    from pianotx.evaluate import evaluate_split, split_rolls, tune_decoding
    from pianotx.windows import predict_rolls

    def predict(x: np.ndarray) -> dict[str, np.ndarray]:
        return predict_rolls(model.predict_on_batch, x, context=2 * manifest.chunk_frames)

    features = manifest.features
    pieces = [
        (r, ref) for _, r, ref in split_rolls(predict, manifest, "validation", note_eval_pieces, features, validation)
    ]
    tuned, _ = tune_decoding(pieces, features.frame_rate, DecodingConfig())
    out = {}
    for name, decoding in (
        ("tuned", tuned),
        ("untuned", DecodingConfig()),
        ("no-latency", dataclasses.replace(tuned, latency=0.0)),
    ):
        _, mean = evaluate_split(predict, manifest, "test", decoding)
        out[name] = {k: 100 * mean[k] for k in ("note_f1", "note_with_offset_f1", "frame_f1")}
    out["tuned"] |= {"threshold": tuned.threshold, "onset_threshold": tuned.onset_threshold}
    return out


def row(name: str, s: dict[str, float], pieces: int, minutes: float) -> str:
    return (
        f"{name:<44} {s['note_f1']:>6.1f} {s['note_with_offset_f1']:>8.1f} {s['frame_f1']:>6.1f} "
        f"{pieces:>7} {minutes:>6.1f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="a dataset built from an augmented render")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--steps", type=int, default=48, help="training batches per epoch")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--learning-rate", type=float, default=2.5e-3)
    parser.add_argument("--note-eval-pieces", type=int, default=24, help="validation pieces decoding is tuned on")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, of {', '.join(VARIANTS)}")
    parser.add_argument("--json", type=Path, help="also write every score here")
    args = parser.parse_args()
    names = [v for v in args.variants.split(",") if v]
    unknown = sorted(set(names) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variant(s) {', '.join(unknown)}; expected some of {', '.join(VARIANTS)}")

    from pianotx.store import load_manifest

    manifest = load_manifest(args.data)
    train_cfg = TrainConfig(
        epochs=args.epochs, steps_per_epoch=args.steps, batch_size=args.batch_size,
        learning_rate=args.learning_rate, early_stopping_patience=args.epochs,
    )  # fmt: skip
    print(
        f"data {args.data}; {args.epochs} epochs x {args.steps} batches of {args.batch_size}, "
        f"Adam {args.learning_rate}; test: {len(manifest.pieces('test'))} pieces",
        flush=True,
    )
    head = f"{'variant (test split, F1 %)':<44} {'note':>6} {'note+off':>8} {'frame':>6} {'pieces':>7} {'min':>6}"
    lines, results = [head], {}
    for name in names:
        config, keep = VARIANTS[name]
        pieces = split_pieces(manifest, "train", keep)
        start = time.perf_counter()
        model = train_variant(config, train_cfg, manifest, pieces)
        unseen = split_pieces(manifest, "validation", on_validation_piano) if name == "validation-piano" else None
        s = scores(model, manifest, args.note_eval_pieces, unseen)
        minutes = (time.perf_counter() - start) / 60
        results[name] = s | {"train_pieces": len(pieces), "minutes": minutes}
        label = f"{name}, tuned on {VALIDATION_PIANO}" if unseen else name
        new = [row(label, s["tuned"], len(pieces), minutes)]
        if name == "all":
            new.append(row("all, untuned decoding", s["untuned"], len(pieces), 0.0))
            new.append(row("all, no latency correction", s["no-latency"], len(pieces), 0.0))
        if unseen:
            heard = split_pieces(manifest, "validation", keep)
            results[f"{name}, tuned on heard pianos"] = scores(model, manifest, args.note_eval_pieces, heard)
            new.append(
                row(
                    f"{name}, tuned on heard pianos",
                    results[f"{name}, tuned on heard pianos"]["tuned"],
                    len(pieces),
                    0.0,
                )
            )
        print("\n".join(new), flush=True)
        lines += new
        if args.json:
            args.json.write_text(json.dumps(results, indent=1))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
