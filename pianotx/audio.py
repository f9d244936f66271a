"""Loading audio as mono float32 at a fixed sample rate.

The samples are those of ``librosa.load(path, sr=sample_rate, mono=True)`` (librosa
0.10-0.11: libsndfile's float32 decoding, the mean of the channels, soxr "HQ"
resampling, the result padded or cut to ``ceil(n * sample_rate / native_rate)``
samples), read and resampled in blocks: a long file needs memory for its output only,
not for its decoded original as well, and librosa (with numba) is not imported.

One exception: a file that stores its samples as floats can hold any value (a float WAV
at x8 gain, or at x1e30), and one whose peak lies above full scale
(:data:`FULL_SCALE_LIMIT`, 1.0) is scaled to a peak of 1.0 before mixing and resampling,
with one warning line naming the file: the features, the alignment of a dataset and a
transcription then see the music at a level a recording can have, and all of them see
the same samples. The peak is found in a first pass over the file (float files only:
integer formats cannot exceed full scale, and compressed ones decode to within it, up to
a decoder's small overshoot).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from pianotx.errors import PianotxError
from pianotx.quiet import quiet_native_stderr

# What libsndfile decodes itself, then what is decoded through ffmpeg when it is installed
# (libsndfile reads no AAC / MP4 audio).
SNDFILE_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3", ".opus", ".oga", ".aiff", ".aif")
FFMPEG_EXTENSIONS = (".m4a", ".aac", ".mp4")
AUDIO_EXTENSIONS = SNDFILE_EXTENSIONS + FFMPEG_EXTENSIONS
BLOCK_FRAMES = 1 << 16  # frames decoded at a time (1.5 s at 44.1 kHz)
QUALITY = "soxr_hq"  # librosa.load's default resampler
FULL_SCALE_LIMIT = 1.0  # peak above which a float file is scaled to a peak of 1
FLOAT_SUBTYPES = ("FLOAT", "DOUBLE")  # soundfile subtypes whose samples may exceed full scale
T = TypeVar("T")
Warn = Callable[[str], None]
_warned: set[str] = set()  # files the default warning has named in this process


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


def warn_once(line: str) -> None:
    """The default warning of the loaders: ``warning: LINE`` on stderr, once a process."""
    if line not in _warned:
        _warned.add(line)
        print(f"warning: {line}", file=sys.stderr)


def load_audio(path: str | Path, sample_rate: int, warn: Warn | None = None) -> np.ndarray:
    """Read ``path`` as mono float32 samples at ``sample_rate`` Hz.

    Args:
        path: the audio file.
        sample_rate: the rate of the result, Hz.
        warn: gets the one warning line of a float file above full scale, scaled
            down (see the module docstring); default :func:`warn_once`.

    Returns:
        (n_samples,) float32, within [-1, 1] for all but compressed formats (whose
        decoders may overshoot a little); n_samples = ceil(n * sample_rate / rate) for
        a file of n frames at ``rate`` Hz (n when the rates are equal).

    Raises:
        AudioError: missing, unsupported or undecodable file; empty audio; non-finite
            samples.
    """
    samples = read_audio(path, sample_rate, _collect, warn)
    if samples.size == 0:
        raise AudioError("audio is empty")
    return samples


def read_audio(path: str | Path, sample_rate: int, consume: Callable[[AudioBlocks], T], warn: Warn | None = None) -> T:
    """``consume`` the blocks of ``path`` (mono, resampled to ``sample_rate``, a float file
    above full scale scaled down), with the checks, the warning and the one-line
    errors of :func:`load_audio`.

    Raises:
        AudioError: as :func:`load_audio` (an empty file is ``consume``'s to refuse).
    """
    import soundfile

    path = Path(path)
    if not path.is_file():
        raise AudioError("no such file")
    if path.suffix.lower() not in AUDIO_EXTENSIONS:
        raise AudioError(f"unsupported format {path.suffix or '(none)'}; expected {', '.join(AUDIO_EXTENSIONS)}")
    if path.suffix.lower() in FFMPEG_EXTENSIONS:
        return _through_ffmpeg(path, sample_rate, consume, warn)
    check_decodable(path)
    try:
        with quiet_native_stderr(), soundfile.SoundFile(str(path)) as audio:
            scale = full_scale(audio, path, warn or warn_once)
            return consume(AudioBlocks(audio, sample_rate, scale))
    except AudioError:
        raise
    except Exception as exc:  # libsndfile and soxr raise many types on bad files
        detail = str(exc).strip() or "no decoder recognises the file"
        raise AudioError(f"cannot decode audio ({type(exc).__name__}: {detail})") from exc


def _through_ffmpeg(path: Path, sample_rate: int, consume: Callable[[AudioBlocks], T], warn: Warn | None) -> T:
    """:func:`read_audio` of a format libsndfile does not read (AAC in MP4): ffmpeg
    decodes it to a temporary float WAV at its own rate and channels, read as any WAV.

    Raises:
        AudioError: no ffmpeg on ``PATH``, or ffmpeg cannot decode the file.
    """
    import shutil
    import subprocess
    import tempfile

    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise AudioError(
            f"{path.suffix.lower()} audio is decoded with ffmpeg, which is not installed (apt-get install ffmpeg)"
        )
    with tempfile.TemporaryDirectory(prefix="pianotx-decode-") as tmp:
        wav = Path(tmp) / "decoded.wav"
        command = [ffmpeg, "-nostdin", "-v", "error", "-i", str(path), "-vn", "-c:a", "pcm_f32le", str(wav)]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0 or not wav.is_file():
            detail = (done.stderr.strip().splitlines() or ["no audio stream"])[-1]
            raise AudioError(f"cannot decode audio (ffmpeg: {detail})")
        return read_audio(wav, sample_rate, consume, warn)


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
        return _collect(AudioBlocks(audio, sample_rate, full_scale(audio, path, warn_once)))


def full_scale(audio: Any, path: Path, warn: Warn) -> float:
    """The factor that brings an open sound file within full scale: 1.0, except for a
    float file whose peak exceeds :data:`FULL_SCALE_LIMIT` (1 / its peak, and one line
    through ``warn``). The file is left at its first frame.

    Raises:
        AudioError: non-finite samples.
    """
    if audio.subtype not in FLOAT_SUBTYPES:
        return 1.0
    peak = 0.0
    while True:
        block = audio.read(BLOCK_FRAMES, dtype="float64", always_2d=True)
        if len(block):
            if not np.all(np.isfinite(block)):
                raise AudioError("audio contains non-finite samples")
            peak = max(peak, float(np.abs(block).max()))
        if len(block) < BLOCK_FRAMES:
            break
    audio.seek(0)
    if peak <= FULL_SCALE_LIMIT:
        return 1.0
    warn(f"{path}: samples reach {peak:.3g}, above full scale (1.0); scaled to a peak of 1.0")
    return 1.0 / peak


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
        scale: the factor every sample is multiplied by as it is read (1.0: none; see
            :func:`full_scale`).
    """

    def __init__(self, audio: Any, sample_rate: int, scale: float = 1.0) -> None:
        self.audio, self.sample_rate, self.scale = audio, sample_rate, scale
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
            block = to_mono(self._read())
            if not np.all(np.isfinite(block)):
                raise AudioError("audio contains non-finite samples")
            n_in += len(block)
            last = len(block) < BLOCK_FRAMES
            yield block if stream is None else stream.resample_chunk(block, last=last)
            if last:
                break
        self.length = n_in if stream is None else int(np.ceil(n_in * self.ratio))

    def _read(self) -> np.ndarray:
        """The next (frames, channels) float32 block, scaled (in float64, so that samples
        beyond float32's range are scaled before they are rounded)."""
        if self.scale == 1.0:
            return self.audio.read(BLOCK_FRAMES, dtype="float32", always_2d=True)
        block = self.audio.read(BLOCK_FRAMES, dtype="float64", always_2d=True)
        return (block * self.scale).astype(np.float32)


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
