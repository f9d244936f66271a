"""Is there a systematic onset offset? Matched notes' onset errors on the validation and
test splits, and what moving every note by the validation median does to the scores.

Notes are matched as mir_eval matches them (onset within 50 ms, same pitch); the error
of a match is estimated minus reference onset. Decoding uses the model's thresholds with
no latency; the median on validation is what a search's threshold tuning stores as the
model's ``latency`` (:func:`pianotx.evaluate.measure_latency`). The test split (a piano
no training data uses) shows whether the correction holds there.

    python benchmarks/onset_offset.py [--model pianotx/bundled/piano.keras] [--data data/default]
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

KEYS = ("note_f1", "note_with_offset_f1", "frame_f1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="pianotx/bundled/piano.keras")
    parser.add_argument("--data", type=Path, default=Path("data/default"))
    args = parser.parse_args()
    from pianotx.decoding import decode
    from pianotx.evaluate import evaluate_piece, mean_scores, measure_latency, onset_errors, split_rolls
    from pianotx.store import load_manifest
    from pianotx.transcribe import load_transcriber

    transcriber = load_transcriber(args.model)
    manifest = load_manifest(args.data)
    rate = transcriber.features.frame_rate
    plain = dataclasses.replace(transcriber.decoding, latency=0.0)
    splits: dict[str, list[Any]] = {}
    for split in ("validation", "test"):
        rolls = split_rolls(transcriber.probabilities, manifest, split, 0, transcriber.features)
        splits[split] = [(r, ref) for _, r, ref in rolls]
    latency = measure_latency(splits["validation"], rate, plain)
    for split, pieces in splits.items():
        errors = np.concatenate(
            [onset_errors(ref, decode(r["frames"], rate, plain, r.get("onsets"))) for r, ref in pieces]
        )
        ms = 1000.0 * errors
        print(
            f"{split}: {len(ms)} matched onsets, error median {np.median(ms):+.1f} ms, mean {ms.mean():+.1f} ms, "
            f"quartiles {np.percentile(ms, 25):+.1f} / {np.percentile(ms, 75):+.1f} ms"
        )
        for label, config in (
            ("latency 0", plain),
            (f"latency {1000 * latency:.1f} ms", dataclasses.replace(plain, latency=latency)),
        ):
            mean = mean_scores(
                [evaluate_piece(ref, decode(r["frames"], rate, config, r.get("onsets"))) for r, ref in pieces]
            )
            print(f"  {label}: " + ", ".join(f"{k} {100 * mean[k]:.1f}" for k in KEYS))
    print(f"median onset error on the validation split (the latency a search stores): {1000 * latency:+.1f} ms")


if __name__ == "__main__":
    main()
