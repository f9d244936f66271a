"""Is there a systematic onset offset? Matched notes' onset errors on a split, and what
shifting every note by their median does to the scores.

Notes are matched as mir_eval matches them (onset within 50 ms, same pitch); the
error of a match is estimated minus reference onset. A shift is worth making only if
it moves note F1 on the validation split; the test split shows whether that holds on
a piano the model never heard.

    python benchmarks/onset_offset.py [--model pianotx/bundled/piano.keras] [--data data/default]
"""

from __future__ import annotations

import argparse
import dataclasses
import warnings
from pathlib import Path

import numpy as np


def onset_errors(ref, est) -> np.ndarray:  # type: ignore[no-untyped-def]
    """Seconds, estimated minus reference onset, of each match mir_eval makes."""
    import mir_eval

    from pianotx.evaluate import ONSET_TOLERANCE, PITCH_TOLERANCE

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pairs = mir_eval.transcription.match_notes(
            ref.intervals,
            mir_eval.util.midi_to_hz(ref.pitches.astype(np.float64)),
            est.intervals,
            mir_eval.util.midi_to_hz(est.pitches.astype(np.float64)),
            onset_tolerance=ONSET_TOLERANCE,
            pitch_tolerance=PITCH_TOLERANCE,
            offset_ratio=None,
        )
    return np.array([est.intervals[j, 0] - ref.intervals[i, 0] for i, j in pairs])


def shifted(notes, seconds: float):  # type: ignore[no-untyped-def]
    """``notes`` moved by ``seconds`` (clipped at 0)."""
    return dataclasses.replace(notes, intervals=np.maximum(notes.intervals + seconds, 0.0))


def decoded(transcriber, manifest, split: str) -> list:  # type: ignore[no-untyped-def]
    """(reference, estimated notes) of every piece of a split."""
    from pianotx.decoding import decode
    from pianotx.evaluate import split_rolls

    rate = transcriber.features.frame_rate
    pieces = []
    for _, rolls, ref in split_rolls(transcriber.probabilities, manifest, split, 0, transcriber.features):
        pieces.append((ref, decode(rolls["frames"], rate, transcriber.decoding, onset_probs=rolls.get("onsets"))))
    return pieces


def median_error(pieces: list, split: str) -> float:  # type: ignore[type-arg]
    """Print a split's onset errors; their median (s)."""
    errors = np.concatenate([onset_errors(ref, est) for ref, est in pieces]) * 1000.0
    print(
        f"{split}: {len(errors)} matched onsets, error median {np.median(errors):+.1f} ms, mean "
        f"{errors.mean():+.1f} ms, quartiles {np.percentile(errors, 25):+.1f} / {np.percentile(errors, 75):+.1f} ms"
    )
    return float(np.median(errors)) / 1000.0


def scores(pieces: list, split: str, shift: float) -> None:  # type: ignore[type-arg]
    from pianotx.evaluate import evaluate_piece, mean_scores

    keys = ("note_f1", "note_offset_f1", "frame_f1")
    for label, move in (("as decoded", 0.0), (f"moved {-1000 * shift:+.1f} ms", -shift)):
        mean = mean_scores([evaluate_piece(ref, shifted(est, move) if move else est) for ref, est in pieces])
        print(f"  {split}, {label}: " + ", ".join(f"{k} {100 * mean[k]:.1f}" for k in keys))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="pianotx/bundled/piano.keras")
    parser.add_argument("--data", type=Path, default=Path("data/default"))
    args = parser.parse_args()
    from pianotx.store import load_manifest
    from pianotx.transcribe import load_transcriber

    transcriber = load_transcriber(args.model)
    manifest = load_manifest(args.data)
    validation, test = decoded(transcriber, manifest, "validation"), decoded(transcriber, manifest, "test")
    median = median_error(validation, "validation")
    median_error(test, "test")
    scores(validation, "validation", median)
    scores(test, "test", median)
    print(f"median onset error on the validation split: {1000 * median:+.1f} ms")


if __name__ == "__main__":
    main()
