"""Loading audio as mono float32 at a fixed sample rate.

The samples are those of ``librosa.load(path, sr=sample_rate, mono=True)`` (librosa
0.10-0.11: libsndfile's float32 decoding, the mean of the channels, soxr "HQ"
resampling, the result padded or cut to ``ceil(n * sample_rate / native_rate)``
samples), read and resampled in blocks: a long file needs memory for its output only,
not for its decoded original as well, and librosa (with numba) is not imported.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from pianotx.errors import PianotxError
from pianotx.quiet import quiet_native_stderr

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3")
BLOCK_FRAMES = 1 << 16  # frames decoded at a time (1.5 s at 44.1 kHz)
QUALITY = "soxr_hq"  # librosa.load's default resampler
T = TypeVar("T")


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
        (n_samples,) float32 in [-1, 1]; n_samples = ceil(n * sample_rate / rate) for a
        file of n frames at ``rate`` Hz (n when the rates are equal).

    Raises:
        AudioError: missing, unsupported or undecodable file; empty audio; non-finite
            samples.
    """
    samples = read_audio(path, sample_rate, _collect)
    if samples.size == 0:
        raise AudioError("audio is empty")
    return samples


def read_audio(path: str | Path, sample_rate: int, consume: Callable[[AudioBlocks], T]) -> T:
    """``consume`` the blocks of ``path`` (mono, resampled to ``sample_rate``), with the
    checks and the one-line errors of :func:`load_audio`.

    Raises:
        AudioError: as :func:`load_audio` (an empty file is ``consume``'s to refuse).
    """
    import soundfile

    path = Path(path)
    if not path.is_file():
        raise AudioError("no such file")
    if path.suffix.lower() not in AUDIO_EXTENSIONS:
        raise AudioError(f"unsupported format {path.suffix or '(none)'}; expected {', '.join(AUDIO_EXTENSIONS)}")
    check_decodable(path)
    try:
        with quiet_native_stderr(), soundfile.SoundFile(str(path)) as audio:
            return consume(AudioBlocks(audio, sample_rate))
    except AudioError:
        raise
    except Exception as exc:  # libsndfile and soxr raise many types on bad files
        detail = str(exc).strip() or "no decoder recognises the file"
        raise AudioError(f"cannot decode audio ({type(exc).__name__}: {detail})") from exc


def read_resampled(path: Path, sample_rate: int) -> np.ndarray:
    """Decode ``path`` block by block, mixed to mono and resampled to ``sample_rate``.

    Returns:
        (n_samples,) float32, as :func:`load_audio`.

    Raises:
        AudioError: non-finite samples.
        soundfile.LibsndfileError, RuntimeError: the file cannot be decoded.
    """
    import soundfile

    with soundfile.SoundFile(str(path)) as audio:
        return _collect(AudioBlocks(audio, sample_rate))


def _collect(blocks: AudioBlocks) -> np.ndarray:
    out = _Buffer(blocks.expected)
    for block in blocks:
        out.append(block)
    assert blocks.length is not None  # every block was read
    return out.result(blocks.length)


class AudioBlocks:
    """An open sound file's samples, block by block: mixed to mono, resampled.

    Attributes:
        expected: the length of the result the file's header announces,
            ``ceil(frames * sample_rate / rate)``.
        length: the length of the result: known once every block was read (then
            ``ceil(n * sample_rate / rate)`` for the n frames decoded; the blocks'
            total may differ by a few samples, to be padded or cut to it).
    """

    def __init__(self, audio: Any, sample_rate: int) -> None:
        self.audio, self.sample_rate = audio, sample_rate
        self.ratio = float(sample_rate) / audio.samplerate
        self.expected = int(np.ceil(max(audio.frames, 0) * self.ratio))
        self.length: int | None = None

    def __iter__(self) -> Iterator[np.ndarray]:
        import soxr

        stream = None
        if self.audio.samplerate != self.sample_rate:
            stream = soxr.ResampleStream(self.audio.samplerate, self.sample_rate, 1, dtype="float32", quality=QUALITY)
        n_in = 0
        while True:
            block = to_mono(self.audio.read(BLOCK_FRAMES, dtype="float32", always_2d=True))
            if not np.all(np.isfinite(block)):
                raise AudioError("audio contains non-finite samples")
            n_in += len(block)
            last = len(block) < BLOCK_FRAMES
            yield block if stream is None else stream.resample_chunk(block, last=last)
            if last:
                break
        self.length = n_in if stream is None else int(np.ceil(n_in * self.ratio))


def to_mono(block: np.ndarray) -> np.ndarray:
    """(frames, channels) -> (frames,) float32: the channel mean, computed as librosa's
    ``to_mono`` does on the transposed array (so the sums round the same way)."""
    if block.shape[1] == 1:
        return np.ascontiguousarray(block[:, 0])
    return np.mean(block.T, axis=0)


class _Buffer:
    """A float32 array filled block by block, allocated once when the size is known."""

    def __init__(self, expected: int) -> None:
        try:
            self.data = np.empty(max(expected, 0), np.float32)
        except (MemoryError, ValueError):  # a header claiming an absurd length
            self.data = np.empty(0, np.float32)
        self.size = 0

    def append(self, block: np.ndarray) -> None:
        end = self.size + len(block)
        if end > len(self.data):  # more than the header said (rare: some compressed files)
            grown = np.empty(max(end, 2 * len(self.data)), np.float32)
            grown[: self.size] = self.data[: self.size]
            self.data = grown
        self.data[self.size : end] = block
        self.size = end

    def result(self, length: int) -> np.ndarray:
        """The samples, cut or zero-padded to ``length`` (as ``librosa.util.fix_length``)."""
        if length > self.size:
            self.append(np.zeros(length - self.size, np.float32))
        return self.data[:length] if length == len(self.data) else self.data[:length].copy()
