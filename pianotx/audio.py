"""Loading audio as mono float32 at a fixed sample rate."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from pianotx.errors import PianotxError
from pianotx.quiet import quiet_native_stderr

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3")


class AudioError(PianotxError, ValueError):
    """An audio file cannot be read."""


def check_decodable(path: Path) -> None:
    """Refuse a file no decoder recognises, quietly (the decoders' own chatter hidden).

    Raises:
        AudioError: "cannot decode audio (no decoder recognises the file)".
    """
    import soundfile

    with quiet_native_stderr():
        try:
            soundfile.info(str(path))
        except Exception as exc:  # libsndfile raises its own error types
            raise AudioError("cannot decode audio (no decoder recognises the file)") from exc


def load_audio(path: str | Path, sample_rate: int) -> np.ndarray:
    """Read ``path`` as mono float32 samples at ``sample_rate`` Hz.

    Returns:
        (n_samples,) float32 in [-1, 1].

    Raises:
        AudioError: missing, unsupported or undecodable file.
    """
    import librosa

    path = Path(path)
    if not path.is_file():
        raise AudioError("no such file")
    if path.suffix.lower() not in AUDIO_EXTENSIONS:
        raise AudioError(f"unsupported format {path.suffix or '(none)'}; expected {', '.join(AUDIO_EXTENSIONS)}")
    check_decodable(path)
    try:
        with warnings.catch_warnings(), quiet_native_stderr():
            warnings.simplefilter("ignore")  # librosa warns before falling back to audioread
            samples, _ = librosa.load(str(path), sr=sample_rate, mono=True)
    except Exception as exc:  # soundfile/audioread raise many types on bad files
        detail = str(exc).strip() or "no decoder recognises the file"
        raise AudioError(f"cannot decode audio ({type(exc).__name__}: {detail})") from exc
    if samples.size == 0:
        raise AudioError("audio is empty")
    if not np.all(np.isfinite(samples)):
        raise AudioError("audio contains non-finite samples")
    return samples.astype(np.float32, copy=False)
