"""Peak memory of `pianotx transcribe` on long audio: 15 s, 5 min and 30 min of 44.1 kHz.

Writes CD-format files (44.1 kHz, stereo, 16-bit WAV: a generated 15-second piano-like
excerpt repeated), then transcribes each in a fresh child process with the bundled
model and reads the child's peak resident memory from ``os.wait4``. Each length runs
twice: ``new`` (pianotx as it is: audio decoded and resampled in blocks, the CQT
streamed) and ``old`` (the earlier path, kept here for comparison: ``librosa.load`` of
the whole file, ``librosa.cqt`` of the whole signal, Keras imported with all its
optional packages). The last line is a table.

    python benchmarks/transcribe_memory.py [--lengths 15 300 1800] [--paths new old]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from pianotx.config import FeatureConfig

RATE = 44100
EXCERPT_SECONDS = 15


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


def write_audio(path: Path, seconds: int) -> None:
    """``seconds`` of the excerpt repeated, written piece by piece (little memory)."""
    import soundfile

    piece = excerpt()
    with soundfile.SoundFile(str(path), "w", RATE, 2, subtype="PCM_16") as f:
        for start in range(0, seconds * RATE, len(piece)):
            f.write(piece[: min(len(piece), seconds * RATE - start)])


def old_load_audio(path: str | Path, sample_rate: int) -> np.ndarray:
    """The earlier ``pianotx.audio.load_audio``: ``librosa.load`` of the whole file."""
    import librosa

    from pianotx.audio import AudioError, check_decodable
    from pianotx.quiet import quiet_native_stderr

    check_decodable(Path(path))
    with warnings.catch_warnings(), quiet_native_stderr():
        warnings.simplefilter("ignore")
        samples, _ = librosa.load(str(path), sr=sample_rate, mono=True)
    if samples.size == 0:
        raise AudioError("audio is empty")
    return samples.astype(np.float32, copy=False)


def old_compute_features(samples: np.ndarray, config: FeatureConfig) -> np.ndarray:
    """The earlier ``pianotx.features.compute_features``: ``librosa.cqt`` of the whole signal."""
    import librosa

    from pianotx.features import magnitude_to_features

    samples = np.asarray(samples, dtype=np.float32)
    n_frames = config.n_frames(len(samples))
    if not np.any(samples):
        return np.zeros((n_frames, config.n_bins), np.float32)
    cqt = librosa.cqt(
        samples,
        sr=config.sample_rate,
        hop_length=config.hop_length,
        fmin=config.fmin,
        n_bins=config.n_bins,
        bins_per_octave=config.bins_per_octave,
    )
    return magnitude_to_features(np.abs(cqt).T[:n_frames], config)


def old_import_keras_quietly() -> None:
    """The earlier Keras import: every optional package Keras looks for comes along."""
    from pianotx.quiet import quiet_native_stderr

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with quiet_native_stderr():
        import keras  # noqa: F401


def child(path: str, audio: str, out_dir: str) -> None:
    """Run `pianotx transcribe AUDIO -o OUT_DIR --model BUNDLED` in this process."""
    import pianotx.quiet
    import pianotx.transcribe
    from pianotx.cli import app

    if path == "old":
        pianotx.transcribe.load_audio = old_load_audio
        pianotx.transcribe.compute_features = old_compute_features
        pianotx.quiet.import_keras_quietly = old_import_keras_quietly
    args = ["transcribe", audio, "-o", out_dir, "--model", str(pianotx.transcribe.BUNDLED_MODEL)]
    app(args)


def measure(path: str, audio: Path, out_dir: Path) -> tuple[float, float]:
    """Peak RSS (MB) and wall seconds of one transcription in a fresh child process."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, __file__, "--child", path, str(audio), str(out_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output = proc.stdout.read() if proc.stdout else ""
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{path} transcription of {audio.name} failed:\n{output}")
    print(f"  {path}: {output.strip().splitlines()[-1]}")
    return usage.ru_maxrss / 1024, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[15, 300, 1800], help="seconds of audio")
    parser.add_argument("--paths", nargs="+", choices=["new", "old"], default=["new", "old"])
    parser.add_argument("--child", nargs=3, metavar=("PATH", "AUDIO", "OUT_DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seconds in args.lengths:
            audio = Path(tmp) / f"piece-{seconds}s.wav"
            write_audio(audio, seconds)
            print(f"{audio.name}: {seconds} s, 44.1 kHz stereo 16-bit, {audio.stat().st_size / 1e6:.0f} MB")
            results = {path: measure(path, audio, Path(tmp) / path) for path in args.paths}
            rows.append((seconds, results))
            audio.unlink()
    header = "audio | " + " | ".join(f"{p} peak RSS, wall" for p in args.paths)
    cells = [
        f"{s / 60:g} min | " + " | ".join(f"{r[p][0]:.0f} MB, {r[p][1]:.1f} s" for p in args.paths) for s, r in rows
    ]
    print(f"table: {header} || " + " || ".join(cells))


if __name__ == "__main__":
    main()
