"""Loading audio as mono float32 at a fixed sample rate."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pianotx.errors import PianotxError

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3")


class AudioError(PianotxError, ValueError):
    """An audio file cannot be read."""


def load_audio(path: str | Path, sample_rate: int) -> np.ndarray:
    """Read ``path`` as mono float32 samples at ``sample_rate`` Hz.

    Returns:
        (n_samples,) float32 in [-1, 1].

    Raises:
        AudioError: missing, unsupported or undecodable file.
    """
    import warnings

    import librosa

    path = Path(path)
    if not path.is_file():
        raise AudioError("no such file")
    if path.suffix.lower() not in AUDIO_EXTENSIONS:
        raise AudioError(f"unsupported format {path.suffix or '(none)'}; expected {', '.join(AUDIO_EXTENSIONS)}")
    try:
        with warnings.catch_warnings():  # librosa warns before falling back to audioread
            warnings.simplefilter("ignore")
            samples, _ = librosa.load(str(path), sr=sample_rate, mono=True)
    except Exception as exc:  # soundfile/audioread raise many types on bad files
        detail = str(exc).strip() or "no decoder recognises the file"
        raise AudioError(f"cannot decode audio ({type(exc).__name__}: {detail})") from exc
    if samples.size == 0:
        raise AudioError("audio is empty")
    if not np.all(np.isfinite(samples)):
        raise AudioError("audio contains non-finite samples")
    return samples.astype(np.float32, copy=False)
