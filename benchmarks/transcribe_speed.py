"""Transcription speed: model-load time, then the real-time factor of ten files in one call.

Renders ten one-minute pieces (FluidSynth, default corpus), loads the model once, and
transcribes them all. The real-time factor is processing seconds / audio seconds; the
first file also pays librosa's one-off compilation, so the factor is reported with and
without it.

    python benchmarks/transcribe_speed.py [--model URI-or-.keras] [--files 10] [--seconds 60]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="default: as `pianotx transcribe` (registered, else bundled)")
    parser.add_argument("--files", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args()

    from pianotx.render.corpus import RenderOptions, render_corpus
    from pianotx.transcribe import load_transcriber, transcribe_file

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        options = RenderOptions(pieces=args.files, seconds=args.seconds, generated=0, pianos=("FluidR3_GM",))
        render_corpus(root / "audio", options)
        files = sorted((root / "audio").glob("*.wav"))[: args.files]
        start = time.perf_counter()
        transcriber = load_transcriber(args.model)
        load_seconds = time.perf_counter() - start
        results = [transcribe_file(transcriber, f, root / "midi") for f in files]
    for r in results:
        print(
            f"{r.audio.name}: {r.notes} notes, {r.audio_seconds:.1f} s audio, {r.seconds:.3f} s "
            f"(x{r.seconds / r.audio_seconds:.4f})"
        )
    audio = sum(r.audio_seconds for r in results)
    rest = results[1:]
    print(f"model: {transcriber.source}")
    print(f"model load (TensorFlow import included): {load_seconds:.2f} s")
    print(f"real-time factor, all {len(results)} files: {sum(r.seconds for r in results) / audio:.4f}")
    print(
        f"median per-file real-time factor after the first: "
        f"{statistics.median(r.seconds / r.audio_seconds for r in rest):.4f}"
    )
    rest_factor = sum(r.seconds for r in rest) / sum(r.audio_seconds for r in rest)
    print(f"real-time factor after the first file: {rest_factor:.4f}")


if __name__ == "__main__":
    main()
