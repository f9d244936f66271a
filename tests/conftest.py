"""Shared fixtures: tiny generated audio and MIDI, no downloads."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import soundfile as sf

from pianotx.midi import Notes, write_midi

SR = 16000


def synth(notes: Notes, sample_rate: int = SR, seconds: float | None = None, delay: float = 0.0) -> np.ndarray:
    """Additive piano-like tones (4 harmonics, exponential decay) for ``notes``.

    Args:
        delay: the audio starts this many seconds late against the notes.
    Returns:
        (n_samples,) float32.
    """
    total = seconds if seconds is not None else notes.end_time + delay + 0.5
    out = np.zeros(int(total * sample_rate), np.float32)
    for (start, end), pitch, vel in zip(notes.intervals, notes.pitches, notes.velocities):
        a, b = int((start + delay) * sample_rate), min(int((end + delay) * sample_rate), len(out))
        if a >= b:
            continue
        t = np.arange(b - a) / sample_rate
        f0 = 440.0 * 2 ** ((pitch - 69) / 12)
        tone = sum(np.sin(2 * np.pi * f0 * h * t) / h for h in range(1, 5) if f0 * h < sample_rate / 2)
        out[a:b] += (vel / 127) * 0.2 * np.exp(-1.5 * t) * tone
    return out


def melody(seed: int, seconds: float = 8.0) -> Notes:
    """A seeded random sequence of notes and chords over ``seconds``."""
    rng = np.random.default_rng(seed)
    iv, p = [], []
    t = 0.2
    while t < seconds - 0.6:
        dur = float(rng.choice([0.25, 0.5, 0.75]))
        for pitch in rng.choice(np.arange(40, 90), size=int(rng.integers(1, 4)), replace=False):
            iv.append((t, t + dur))
            p.append(int(pitch))
        t += dur + float(rng.choice([0.0, 0.1, 0.3]))
    return Notes.from_lists(iv, p, rng.integers(50, 110, len(p)))


def write_pair(folder: Path, name: str, notes: Notes, delay: float = 0.0, noise: bool = False) -> None:
    """``name.wav`` (16 kHz) rendered from ``notes`` (``delay`` s late) and ``name.mid``."""
    folder.mkdir(parents=True, exist_ok=True)
    audio = synth(notes, delay=delay)
    if noise:
        audio = np.random.default_rng(0).normal(0, 0.1, len(audio)).astype(np.float32)
    sf.write(folder / f"{name}.wav", audio, SR)
    write_midi(notes, folder / f"{name}.mid")


@pytest.fixture(autouse=True)
def private_mlflow_store(tmp_path, monkeypatch):
    """Every test gets its own MLflow store: none reads or writes the repository's mlruns/."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow-store.db'}")


@pytest.fixture
def pairs_dir(tmp_path: Path) -> Path:
    """Ten 8-second pairs, aligned."""
    folder = tmp_path / "pairs"
    for i in range(10):
        write_pair(folder, f"piece{i:02d}", melody(i))
    return folder


def load_benchmark(name: str) -> ModuleType:
    """The script ``benchmarks/NAME.py`` as a module (its functions tested directly)."""
    spec = importlib.util.spec_from_file_location(
        name, Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while decorating
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    return module
