"""What the decoding rules are worth: one model's probabilities decoded with settings
tuned on the validation pieces under each rule set, scored on the test split.

Rule sets, each tuned as a search trial tunes (best mean note F1 over ``--pieces``
validation pieces spread over the split, then the latency measured):

- earlier: one onset threshold both cuts a sounding key in two (a repeated note) and
  decides whether a run of frames was started by an onset; onset-less runs are notes
  from 0 or 0.5 s; thresholds from the full grid that ``tune_decoding`` searched then.
- current, one onset threshold: today's ``tune_decoding`` with ``onsetless_threshold``
  held at ``None`` (the wider grid alone: onset threshold 0.95, onset-less runs from 1
  or 2 s).
- current: today's ``tune_decoding``, the onset-less rule's threshold tuned apart.

The model's probabilities are computed once per piece; only decoding differs.

    python benchmarks/decoding_rules.py [--model pianotx/bundled/piano.keras] [--data data/bins36]
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np

KEYS = ("note_f1", "note_with_offset_f1", "frame_f1")
EARLIER_FRAME = (0.3, 0.4, 0.5, 0.6, 0.7)
EARLIER_ONSET = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
EARLIER_ONSETLESS = (0.0, 0.5)


def earlier_tuning(pieces: list[Any], rate: float, base: Any) -> Any:
    """The full grid of the earlier rules; the best mean note F1, latency measured."""
    from pianotx.evaluate import _note_f1, measure_latency

    best, best_f1 = base, -1.0
    for t, o, d in itertools.product(EARLIER_FRAME, EARLIER_ONSET, EARLIER_ONSETLESS):
        config = dataclasses.replace(base, threshold=t, onset_threshold=o, onsetless_min_duration=d)
        f1 = float(np.mean([_note_f1(r, ref, rate, config) for r, ref in pieces]))
        if f1 > best_f1:
            best, best_f1 = config, f1
    return dataclasses.replace(best, latency=measure_latency(pieces, rate, best))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="pianotx/bundled/piano.keras")
    parser.add_argument("--data", type=Path, default=Path("data/bins36"))
    parser.add_argument("--pieces", type=int, default=24, help="validation pieces to tune on (0: all)")
    args = parser.parse_args()
    from pianotx import evaluate
    from pianotx.config import DecodingConfig
    from pianotx.decoding import decode
    from pianotx.store import load_manifest
    from pianotx.transcribe import load_transcriber

    transcriber = load_transcriber(args.model)
    manifest = load_manifest(args.data)
    rate = transcriber.features.frame_rate

    def rolls(split: str, limit: int) -> list[Any]:
        got = evaluate.split_rolls(transcriber.probabilities, manifest, split, limit, transcriber.features)
        return [(r, ref) for _, r, ref in got]

    validation, test = rolls("validation", args.pieces), rolls("test", 0)
    base = DecodingConfig()
    with mock.patch.object(evaluate, "ONSETLESS_THRESHOLDS", (None,)):
        one_threshold, _ = evaluate.tune_decoding(validation, rate, base)
    current, _ = evaluate.tune_decoding(validation, rate, base)
    rows = [
        ("earlier rules", earlier_tuning(validation, rate, base)),
        ("current, one onset threshold", one_threshold),
        ("current rules", current),
    ]
    print(f"{len(validation)} validation pieces to tune on, {len(test)} test pieces; F1 %")
    print(f"{'rules':30s} {'val note':>8s} {'note':>6s} {'n+off':>6s} {'frame':>6s}  settings")
    results = {}
    for label, config in rows:
        val_note = np.mean([evaluate._note_f1(r, ref, rate, config) for r, ref in validation])
        scores = evaluate.mean_scores(
            [evaluate.evaluate_piece(ref, decode(r["frames"], rate, config, r.get("onsets"))) for r, ref in test]
        )
        results[label] = scores
        settings = (
            f"frame {config.threshold}, onset {config.onset_threshold}, onset-less runs from "
            f"{config.onsetless_min_duration} s at onset {config.onsetless_threshold}, "
            f"latency {1000 * config.latency:.1f} ms"
        )
        figures = " ".join(f"{100 * scores[k]:6.1f}" for k in KEYS)
        print(f"{label:30s} {100 * val_note:8.1f} {figures}  {settings}")
    gain = 100 * (results["current rules"]["note_f1"] - results["earlier rules"]["note_f1"])
    print(f"test note F1, current rules minus earlier rules: {gain:+.1f}")


if __name__ == "__main__":
    main()
