"""Peak memory of `pianotx transcribe` by the audio's length: 5 min, 30 min and 3 h.

Writes a CD-format file of each length (44.1 kHz, stereo, 16-bit WAV: a generated
15-second piano-like excerpt, notes and chords of decaying harmonics, repeated), then
transcribes it with the bundled model in a fresh child process (`pianotx transcribe`,
as a user runs it) and reads that child's peak resident memory from ``os.wait4``. Each
length runs through two paths:

- ``stream``: pianotx as it is: the file decoded, its features computed, the model run
  and its output decoded block by block (:meth:`pianotx.transcribe.Transcriber.file_notes`);
  memory should not grow with the length.
- ``whole``: the earlier path, for comparison: the whole file's features
  (:func:`pianotx.features.file_features`), then the model over them, then the decoding
  of the whole probability rolls (:meth:`~pianotx.transcribe.Transcriber.notes`).

It prints a line per run and a table: length, path, peak RSS, seconds (the
transcription alone, then the child's wall time with start-up and model loading) and
the real-time factor (transcription seconds / audio seconds), then for each path the
growth of the peak in MB per audio minute from each length to the next. (The first few
batches of windows raise TensorFlow's working memory to a plateau, reached by about
20 minutes of audio: the streaming path's peak grows from 5 to 30 minutes, not after.)

    python benchmarks/transcribe_memory.py [--minutes 5 30 180] [--paths stream whole]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

RATE = 44100
EXCERPT_SECONDS = 15
PATHS = ("stream", "whole")


def excerpt(seed: int = 0) -> np.ndarray:
    """(EXCERPT_SECONDS * RATE, 2) float32: random notes and chords, decaying harmonics."""
    rng = np.random.default_rng(seed)
    out = np.zeros((EXCERPT_SECONDS * RATE, 2), np.float32)
    t0 = 0.1
    while t0 < EXCERPT_SECONDS - 1.0:
        duration = float(rng.choice([0.25, 0.5, 1.0]))
        n = int(duration * RATE)
        t = np.arange(n) / RATE
        for pitch in rng.choice(np.arange(36, 96), size=int(rng.integers(1, 4)), replace=False):
            f0 = 440.0 * 2 ** ((pitch - 69) / 12)
            tone = sum(np.sin(2 * np.pi * f0 * h * t) / h for h in range(1, 5) if f0 * h < RATE / 2)
            start = int(t0 * RATE)
            pan = rng.uniform(0.3, 0.7)
            note = (0.15 * np.exp(-2.0 * t) * tone).astype(np.float32)
            out[start : start + n, 0] += pan * note
            out[start : start + n, 1] += (1 - pan) * note
        t0 += duration
    return out


def write_audio(path: Path, seconds: float) -> None:
    """``seconds`` of the excerpt repeated, written piece by piece (little memory)."""
    import soundfile

    piece = excerpt()
    total = int(round(seconds * RATE))
    with soundfile.SoundFile(str(path), "w", RATE, 2, subtype="PCM_16") as f:
        for start in range(0, total, len(piece)):
            f.write(piece[: min(len(piece), total - start)])


def child(path: str, audio: str, out_dir: str) -> None:
    """Run `pianotx transcribe AUDIO -o OUT_DIR --model BUNDLED` in this process, the
    file's notes found by ``path`` (see the module docstring)."""
    import pianotx.transcribe
    from pianotx.cli import app

    if path == "whole":
        from pianotx.features import file_features

        def whole_file(self: Any, audio: Path, progress: Any = None) -> tuple[Any, int]:  # the earlier two steps
            features, n_samples = file_features(audio, self.features)
            return self.notes(features), n_samples

        pianotx.transcribe.Transcriber.file_notes = whole_file  # type: ignore[method-assign,assignment]
    app(["transcribe", audio, "-o", out_dir, "--model", str(pianotx.transcribe.BUNDLED_MODEL)])


@dataclass(frozen=True)
class Run:
    """One transcription in a child process."""

    minutes: float
    path: str
    peak_mb: float  # the child's peak resident memory
    seconds: float  # the transcription, as `pianotx transcribe` reports it
    wall: float  # the child's whole run: start-up, model loading, transcription
    notes: int

    @property
    def realtime_factor(self) -> float:
        """Transcription seconds per audio second."""
        return self.seconds / (self.minutes * 60)


def measure(path: str, audio: Path, out_dir: Path, minutes: float) -> Run:
    """Transcribe ``audio`` through ``path`` in a fresh child process.

    Raises:
        RuntimeError: the child failed (its output in the message).
    """
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, __file__, "--child", path, str(audio), str(out_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output = proc.stdout.read() if proc.stdout else ""
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    done = re.search(r": (\d+) notes?, [\d.]+ s of audio in ([\d.]+) s$", output.strip(), re.MULTILINE)
    if os.waitstatus_to_exitcode(status) != 0 or done is None:
        raise RuntimeError(f"{path} transcription of {audio.name} failed:\n{output}")
    return Run(minutes, path, usage.ru_maxrss / 1024, float(done.group(2)), wall, int(done.group(1)))


def run_lengths(minutes: list[float], paths: list[str], folder: Path, log: Callable[[str], None] = print) -> list[Run]:
    """Write each length's audio in ``folder``, transcribe it through each path, delete it."""
    runs = []
    for length in minutes:
        audio = folder / f"piece-{length:g}min.wav"
        write_audio(audio, length * 60)
        log(f"{audio.name}: {length:g} min, 44.1 kHz stereo 16-bit, {audio.stat().st_size / 1e6:.0f} MB")
        for path in paths:
            run = measure(path, audio, folder / path, length)
            log(f"  {path}: {run.notes} notes, peak {run.peak_mb:.0f} MB, {run.seconds:.1f} s ({run.wall:.1f} s wall)")
            runs.append(run)
        audio.unlink()
    return runs


def table(runs: list[Run]) -> str:
    """The runs as a Markdown table, then each path's growth per audio minute."""
    lines = [
        "| audio | path | peak RSS | transcription | wall | realtime factor |",
        "|---|---|---|---|---|---|",
    ]
    for r in runs:
        lines.append(
            f"| {r.minutes:g} min | {r.path} | {r.peak_mb:.0f} MB | {r.seconds:.1f} s | {r.wall:.1f} s "
            f"| {r.realtime_factor:.3f} |"
        )
    for path in dict.fromkeys(r.path for r in runs):
        mine = sorted((r for r in runs if r.path == path), key=lambda r: r.minutes)
        steps = [
            f"{(b.peak_mb - a.peak_mb) / (b.minutes - a.minutes):+.2f} from {a.minutes:g} to {b.minutes:g} min"
            for a, b in zip(mine, mine[1:])
            if b.minutes > a.minutes
        ]
        if steps:
            lines.append(f"{path}: MB per audio minute {', '.join(steps)}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, nargs="+", default=[5, 30, 180], help="audio lengths")
    parser.add_argument("--paths", nargs="+", choices=PATHS, default=list(PATHS))
    parser.add_argument("--child", nargs=3, metavar=("PATH", "AUDIO", "OUT_DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(*args.child)
        return
    with tempfile.TemporaryDirectory(prefix="pianotx-memory-") as tmp:
        runs = run_lengths(args.minutes, args.paths, Path(tmp))
    print(table(runs))


if __name__ == "__main__":
    main()
