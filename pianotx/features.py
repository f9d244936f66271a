"""THE feature function: audio samples -> constant-Q log-magnitude frames.

Used by the dataset builder and by transcription alike, with the :class:`FeatureConfig`
a model carries, so training and inference features cannot drift apart.

The constant-Q transform is ``librosa.cqt`` (librosa 0.10-0.11 with its defaults:
Hann-windowed wavelets, L1-normalised, sparsified at quantile 0.01, one octave at a
time with soxr "HQ" halving between octaves, scaled by ``1 / sqrt(filter length)``),
computed here with numpy, scipy.sparse and soxr alone (and scipy.fft to build the
filters, which are then kept in pianotx's cache folder): the same operations on the
same values, so the numbers are librosa's bit for bit (tests/test_features.py checks
it) without importing librosa, numba and scipy.signal (~1.5 s per process).

It runs as a stream: the input is pushed through the resampling cascade in chunks
(soxr's streaming resampler gives the same samples as resampling the whole signal at
once), and each octave's frames are computed as soon as their samples are there. So
working memory is a few chunks whatever the input's length, and the frames equal those
of one whole-signal transform exactly.

The finished frames come out in order, block by block: :func:`feature_blocks` (of
samples in memory) and :func:`stream_file_features` (of an audio file, never holding
it) hand them to their consumer as they are ready, so transcription can run the model
on them without the whole piece's features ever existing at once;
:func:`compute_features` and :func:`file_features` gather them into one array.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import zipfile
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from pianotx.audio import AudioError
from pianotx.config import FeatureConfig
from pianotx.locations import cache_dir

HANN_BANDWIDTH = 1.50018310546875  # librosa.filters.WINDOW_BANDWIDTHS["hann"], in FFT bins
SPARSITY = 0.01  # fraction of each filter's L1 mass dropped (librosa's default)
QUALITY = "soxr_hq"  # librosa's resampler for the octave cascade
CHUNK_SAMPLES = 1 << 17  # input samples pushed through the cascade at a time
FFT_BYTES = 1 << 20  # float64 frame data per FFT call
BASES_FORMAT = 1  # part of the filter-basis cache key: raise it when their construction changes


T = TypeVar("T")

# What :func:`feature_blocks` and :func:`stream_file_features` hand out: ``(start, rows)``,
# rows ``[start, start + len(rows))`` of the (n_frames, n_bins) float32 features. The
# blocks come in order and tile ``[0, n_frames)``; each is a fresh array the consumer may
# keep.
FeatureBlocks = Iterator[tuple[int, np.ndarray]]


def compute_features(samples: np.ndarray, config: FeatureConfig) -> np.ndarray:
    """Constant-Q log magnitude of mono audio.

    Args:
        samples: (n_samples,) float32 at ``config.sample_rate``.
        config: feature settings.

    Returns:
        (n_frames, n_bins) float32, n_frames = 1 + n_samples // hop_length; each value is
        (clip(dB, -top_db) + top_db) / top_db, so 0 is silence and full scale is ~1.
    """
    samples = np.asarray(samples, dtype=np.float32)
    return _gather(config.n_frames(len(samples)), config, feature_blocks(samples, config))


def feature_blocks(samples: np.ndarray, config: FeatureConfig) -> FeatureBlocks:
    """:func:`compute_features` of ``samples``, handed out as its frames are finished:
    ``(start, rows)`` blocks in order (see :data:`FeatureBlocks`), together equal to
    ``compute_features(samples, config)`` to the bit.

    The samples are pushed through the transform :data:`CHUNK_SAMPLES` at a time; a
    block holds the frames each push finished (the lowest octave's long filters keep a
    frame unfinished until samples well after it have arrived).
    """
    samples = np.asarray(samples, dtype=np.float32)
    feed = _Feed(config, len(samples))
    for start in range(0, len(samples), CHUNK_SAMPLES):
        yield from feed.push(samples[start : start + CHUNK_SAMPLES], final=start + CHUNK_SAMPLES >= len(samples))
    yield from feed.close()


def file_features(
    path: str | Path, config: FeatureConfig, progress: Callable[[float], None] | None = None
) -> tuple[np.ndarray, int]:
    """``compute_features(load_audio(path, config.sample_rate), config)``, equal to the
    bit, without ever holding the file's samples: each decoded, resampled block goes
    straight through the transform, so a long file costs little more memory than its
    features.

    The transform is sized from the length the file's header announces; a file whose
    decoded length differs (rare: some compressed files) is read again whole.

    Args:
        path: the audio file.
        config: the features to compute.
        progress: called as blocks are transformed, with the fraction of the file done.

    Returns:
        (features, n_samples at ``config.sample_rate``).

    Raises:
        AudioError: as :func:`pianotx.audio.load_audio`.
    """
    return stream_file_features(path, config, lambda n, blocks: _gather(n, config, blocks), progress)


def stream_file_features(
    path: str | Path,
    config: FeatureConfig,
    consume: Callable[[int, FeatureBlocks], T],
    progress: Callable[[float], None] | None = None,
) -> tuple[T, int]:
    """Hand the features of an audio file to ``consume`` as they are computed, holding
    neither the file's samples nor its features: :func:`file_features` without the array.

    ``consume(n_frames, blocks)`` is called with the number of frames the file's header
    announces and the :data:`FeatureBlocks` of the file, read and transformed as it
    iterates them (the file stays open until it returns). Let the exceptions the
    iteration raises propagate: a file that cannot be decoded raises
    :class:`~pianotx.audio.AudioError` out of this function, as does one whose decoded
    length differs from its header's (rare: some compressed files), after which the file
    is read again whole and ``consume`` called a second time, on its exact frames.
    Whatever ``consume`` raises itself comes out of this function unchanged.

    While ``consume`` runs between blocks, stderr is the process's own: only the
    decoding itself has native decoders' chatter silenced (see
    :func:`pianotx.quiet.quiet_native_stderr`).

    Args:
        path: the audio file.
        config: the features to compute.
        consume: takes ``(n_frames, blocks)``; what it returns is returned.
        progress: called as blocks are transformed, with the fraction of the file's
            samples pushed through the transform (not called for the last push, nor
            when the file is read again whole).

    Returns:
        (what ``consume`` returned, n_samples at ``config.sample_rate``).

    Raises:
        AudioError: as :func:`pianotx.audio.load_audio`.
    """
    from pianotx.audio import load_audio, read_audio

    own_stderr = _dup_stderr()

    def run(blocks: Any) -> tuple[T, int]:
        rows = _file_blocks(blocks, config, progress, own_stderr)
        try:
            return consume(config.n_frames(blocks.expected), rows), blocks.expected
        except _Decoding as failure:  # the decoder's own error: read_audio words it
            raise failure.error from failure.error.__cause__
        except (_LengthChanged, _Raised):
            raise
        except Exception as exc:  # consume's own: carried out of read_audio untouched
            raise _Raised(exc) from exc
        finally:
            rows.close()  # its stderr switching ends while read_audio's silencing holds

    raised: Exception | None = None
    try:
        return read_audio(path, config.sample_rate, run)
    except _LengthChanged:  # the header's length was wrong
        pass
    except _Raised as carried:
        raised = carried.error
    finally:
        if own_stderr is not None:
            os.close(own_stderr)
    if raised is not None:
        raise raised
    samples = load_audio(path, config.sample_rate)
    return consume(config.n_frames(len(samples)), feature_blocks(samples, config)), len(samples)


def _gather(n_frames: int, config: FeatureConfig, blocks: FeatureBlocks) -> np.ndarray:
    """The (n_frames, n_bins) float32 array of ``blocks``."""
    out = np.zeros((n_frames, config.n_bins), np.float32)
    for start, rows in blocks:
        out[start : start + len(rows)] = rows
    return out


def _file_blocks(
    blocks: Any, config: FeatureConfig, progress: Callable[[float], None] | None, own_stderr: int | None
) -> Generator[tuple[int, np.ndarray]]:
    """The :data:`FeatureBlocks` of :class:`pianotx.audio.AudioBlocks` as they are
    decoded. The transform sees exactly the samples :func:`compute_features` would: cut
    or zero-padded to the announced length; at the end, :class:`_LengthChanged` if the
    decoded length differs. Errors of the decoding and the transform come out wrapped
    in :class:`_Decoding`; the consumer runs (between blocks, and in ``progress``) with
    stderr set back to ``own_stderr``."""
    try:
        n = blocks.expected
        feed = _Feed(config, n) if n else None
        sent, held = 0, np.zeros(0, np.float32)
        for block in blocks:
            block = block[: max(n - sent - len(held), 0)]
            held = np.concatenate([held, block])
            while len(held) > CHUNK_SAMPLES:  # keep one chunk back: the last push is `final`
                ready = list(feed.push(held[:CHUNK_SAMPLES], final=False)) if feed is not None else []
                sent, held = sent + CHUNK_SAMPLES, held[CHUNK_SAMPLES:]
                with _stderr_to(own_stderr):
                    if progress is not None and n:
                        progress(min(sent / n, 1.0))
                    yield from ready
        if blocks.length != n:
            raise _LengthChanged("the decoded length differs from the header's")
        if feed is None:
            raise AudioError("audio is empty")
        last = np.concatenate([held, np.zeros(n - sent - len(held), np.float32)])
        ready = [*feed.push(last, final=True), *feed.close()]
    except (GeneratorExit, _LengthChanged):
        raise
    except Exception as exc:
        raise _Decoding(exc) from exc
    if own_stderr is not None:  # decoding is over: the consumer's remaining work is heard
        os.dup2(own_stderr, 2)  # (read_audio puts the same stderr back when it returns)
    yield from ready


def _dup_stderr() -> int | None:
    """A duplicate of the process's stderr now (None: it has none)."""
    try:
        return os.dup(2)
    except OSError:
        return None


@contextlib.contextmanager
def _stderr_to(fd: int | None) -> Iterator[None]:
    """File descriptor 2 pointed at ``fd`` for the duration (nothing when None), then
    back to what it was."""
    if fd is None:
        yield
        return
    current = os.dup(2)
    os.dup2(fd, 2)
    try:
        yield
    finally:
        os.dup2(current, 2)
        os.close(current)


class _Decoding(Exception):
    """Carries an error raised while a file was decoded or transformed, past the consumer."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


class _LengthChanged(AudioError):
    """The file decoded to another length than its header announced."""


class _Raised(AudioError):
    """Carries what the consumer raised out of ``read_audio`` (which would word any
    other error as a decoding failure)."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


class _Feed:
    """Input samples in, finished feature rows out, in order: the octave cascade and
    the rows it has only partly written.

    Silence gives zeros (the features of a signal of zeros are defined as exactly 0):
    until a nonzero sample arrives, finished rows are only counted; they are handed out
    as the features of silence (``magnitude_to_features`` of zero magnitudes) once one
    does, or as zeros at the end when none ever did.
    """

    def __init__(self, config: FeatureConfig, n_samples: int) -> None:
        self.config = config
        self.n_frames = config.n_frames(n_samples)
        self.cascade = _Cascade(config, n_samples, self.n_frames) if n_samples else None
        self.heard = False
        self.silent = 0  # finished rows not handed out yet, all of them silence
        self.handed = 0  # rows handed out

    def push(self, samples: np.ndarray, final: bool) -> FeatureBlocks:
        """Push the next samples (``final``: the last ones) and hand out what is finished."""
        self.heard = self.heard or bool(np.any(samples))
        if self.cascade is None:
            return
        self.cascade.push(samples, final)
        rows = self.cascade.take()
        if not len(rows):
            return
        if not self.heard:
            self.silent += len(rows)
            return
        if self.silent:
            zero = magnitude_to_features(np.zeros((1, self.config.n_bins)), self.config)
            yield from self._hand(np.repeat(zero, self.silent, axis=0))
            self.silent = 0
        yield from self._hand(rows)

    def close(self) -> FeatureBlocks:
        """After the last push: the rest (zeros, for an input that was all silence)."""
        rest = self.n_frames - self.handed
        if rest:
            yield from self._hand(np.zeros((rest, self.config.n_bins), np.float32))

    def _hand(self, rows: np.ndarray) -> FeatureBlocks:
        yield self.handed, rows
        self.handed += len(rows)


def magnitude_to_features(magnitude: np.ndarray, config: FeatureConfig) -> np.ndarray:
    """Map CQT magnitudes (frames, bins) to the [0, ~1] log scale described above."""
    floor = 10.0 ** (-config.top_db / 20.0)
    db = 20.0 * np.log10(np.maximum(magnitude, floor))
    return ((db + config.top_db) / config.top_db).astype(np.float32)


@dataclass(frozen=True)
class _Octave:
    basis: Any  # scipy.sparse.csr_matrix (filters, n_fft // 2 + 1) complex64
    n_fft: int
    hop: int  # at this octave's sample rate
    bins: slice  # this octave's rows of the (n_bins, n_frames) transform
    sqrt_lengths: np.ndarray  # (filters, 1) float64, the final scaling of its rows


@dataclass(frozen=True)
class _Plan:
    early_factor: int  # downsampling before the top octave (1: none)
    octaves: tuple[_Octave, ...]  # highest first, each at half the previous rate


@functools.lru_cache(maxsize=8)
def _plan(config: FeatureConfig) -> _Plan:
    """Filter banks and resampling schedule of ``librosa.vqt`` with ``gamma=0``."""
    bpo, n_bins = config.bins_per_octave, config.n_bins
    n_octaves = int(np.ceil(float(n_bins) / bpo))
    n_filters = min(bpo, n_bins)
    freqs = _frequencies(config)
    alpha = _relative_bandwidth(freqs)
    sr = float(config.sample_rate)
    _, cutoff = _wavelet_lengths(freqs, sr, alpha)
    if cutoff > sr / 2.0:
        raise ValueError(f"CQT filters reach {cutoff:.0f} Hz, above the Nyquist frequency {sr / 2.0:.0f} Hz")
    early = _early_downsample_count(sr / 2.0, cutoff, config.hop_length, n_octaves)
    sr /= 2**early
    sqrt_lengths = np.sqrt(_wavelet_lengths(freqs, sr, alpha)[0])[:, np.newaxis]
    specs, hops = [], []
    my_sr, hop = sr, config.hop_length // 2**early
    for i in range(n_octaves):
        if i > 0:  # FeatureConfig makes hop_length divisible by 2**(n_octaves - 1)
            my_sr, hop = my_sr / 2.0, hop // 2
        sl = slice(-n_filters, None) if i == 0 else slice(-n_filters * (i + 1), -n_filters * i)
        specs.append((freqs[sl], my_sr, alpha[sl], np.sqrt(sr / my_sr)))
        hops.append(hop)
    octaves = []
    for i, ((basis, n_fft), hop) in enumerate(zip(_bases(config, specs), hops)):
        bins = slice(max(n_bins - n_filters * (i + 1), 0), n_bins - n_filters * i)
        octaves.append(_Octave(basis, n_fft, hop, bins, sqrt_lengths[bins]))
    return _Plan(2**early, tuple(octaves))


def _bases(config: FeatureConfig, specs: list[tuple[np.ndarray, float, np.ndarray, float]]) -> list[tuple[Any, int]]:
    """Each octave's :func:`_filter_fft` of ``specs``, kept in pianotx's cache folder.

    Building them needs scipy.fft, whose import (~0.1-0.4 s, scipy.special included) is
    most of a short file's feature time; the cached arrays are the same numbers. A cache
    that cannot be read or written is ignored.
    """
    path = _bases_path(config)
    try:
        return _load_bases(path, len(specs))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        pass
    bases = [_filter_fft(*spec) for spec in specs]
    try:
        _save_bases(path, bases)
    except OSError:
        pass
    return bases


def _bases_path(config: FeatureConfig) -> Path:
    """The cache file for ``config``'s filter bases (numpy's and scipy's versions in its key)."""
    import scipy

    key = repr((BASES_FORMAT, config, np.__version__, scipy.__version__))
    return cache_dir() / "features" / f"cqt-{hashlib.sha256(key.encode()).hexdigest()[:16]}.npz"


def _load_bases(path: Path, n_octaves: int) -> list[tuple[Any, int]]:
    import scipy.sparse

    with np.load(path) as saved:
        return [
            (
                scipy.sparse.csr_matrix(
                    (saved[f"data{i}"], saved[f"indices{i}"], saved[f"indptr{i}"]), shape=tuple(saved[f"shape{i}"])
                ),
                int(saved[f"n_fft{i}"]),
            )
            for i in range(n_octaves)
        ]


def _save_bases(path: Path, bases: list[tuple[Any, int]]) -> None:
    from pianotx.files import atomic_path

    arrays: dict[str, np.ndarray] = {}
    for i, (basis, n_fft) in enumerate(bases):
        arrays |= {f"data{i}": basis.data, f"indices{i}": basis.indices, f"indptr{i}": basis.indptr}
        arrays |= {f"shape{i}": np.asarray(basis.shape), f"n_fft{i}": np.asarray(n_fft)}
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        np.savez(tmp, **arrays)  # type: ignore[arg-type]  # numpy stubs type only allow_pickle


def _frequencies(config: FeatureConfig) -> np.ndarray:
    """(n_bins,) float64 centre frequencies, as ``librosa.interval_frequencies``."""
    bpo = config.bins_per_octave
    ratios = 2.0 ** ((0.0 + np.arange(0, bpo, dtype=float)) / bpo)
    n_octaves = np.ceil(config.n_bins / bpo)
    all_ratios = np.multiply.outer(2.0 ** np.arange(n_octaves), ratios).flatten()[: config.n_bins]
    return np.sort(all_ratios) * (config.fmin * 2.0 ** (0.0 / bpo))


def _relative_bandwidth(freqs: np.ndarray) -> np.ndarray:
    """(n,) float64 relative bandwidth of each bin (librosa's ``_relative_bandwidth``)."""
    if len(freqs) <= 1:
        raise ValueError("a CQT needs 2 or more bins")
    bpo = np.empty_like(freqs)
    logf = np.log2(freqs)
    bpo[0] = 1 / (logf[1] - logf[0])
    bpo[-1] = 1 / (logf[-1] - logf[-2])
    bpo[1:-1] = 2 / (logf[2:] - logf[:-2])
    return (2.0 ** (2 / bpo) - 1) / (2.0 ** (2 / bpo) + 1)


def _wavelet_lengths(freqs: np.ndarray, sr: float, alpha: np.ndarray) -> tuple[np.ndarray, float]:
    """(n,) float64 filter lengths in samples, and the highest cut-off frequency in Hz."""
    q = 1.0 / alpha
    cutoff = float(max(freqs * (1 + 0.5 * HANN_BANDWIDTH / q) + 0.5 * 0))
    return q * sr / (freqs + 0 / alpha), cutoff


def _early_downsample_count(nyquist: float, cutoff: float, hop_length: int, n_octaves: int) -> int:
    """Halvings librosa applies before the top octave, when its filters allow."""
    by_band = max(0, int(np.ceil(np.log2(nyquist / cutoff)) - 1) - 1)
    twos = 0
    while hop_length > 0 and hop_length % 2 == 0:
        twos, hop_length = twos + 1, hop_length // 2
    return min(by_band, max(0, twos - n_octaves + 1))


def _hann(n: int) -> np.ndarray:
    """(n,) float64 periodic Hann window, computed as ``scipy.signal.get_window("hann", n)``."""
    if n <= 1:
        return np.ones(n, dtype=np.float64)
    fac = np.linspace(-np.pi, np.pi, n + 1, dtype=np.float64)
    w = np.zeros(n + 1, dtype=np.float64)
    for k, a in enumerate(np.asarray([0.5, 1.0 - 0.5], dtype=np.float64)):
        w += a * np.cos(k * fac)
    return w[:-1]


def _wavelets(freqs: np.ndarray, sr: float, alpha: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Time-domain filters, as ``librosa.filters.wavelet(norm=1, pad_fft=True)``.

    Returns:
        (n_filters, 2**k) complex64 centred filters, and (n_filters,) float64 lengths.
    """
    lengths, _ = _wavelet_lengths(freqs, sr, alpha)
    filters = []
    for length, freq in zip(lengths, freqs):
        angles = np.arange(-length // 2, length // 2, dtype=float) * 2 * np.pi * freq / sr
        sig = np.cos(angles) + 1j * np.sin(angles)
        sig *= _hann(len(sig))
        filters.append(sig / np.sum(np.abs(sig), axis=0, keepdims=True))
    size = int(2.0 ** (np.ceil(np.log2(max(lengths)))))
    padded = [np.pad(f, ((size - len(f)) // 2, size - len(f) - (size - len(f)) // 2)) for f in filters]
    return np.asarray(padded, dtype=np.complex64), lengths


def _filter_fft(freqs: np.ndarray, sr: float, alpha: np.ndarray, gain: float) -> tuple[Any, int]:
    """One octave's sparse frequency-domain basis (librosa's ``__vqt_filter_fft`` and
    ``sparsify_rows``, times ``gain``).

    Returns:
        (n_filters, n_fft // 2 + 1) complex64 ``scipy.sparse.csr_matrix``, and n_fft.
    """
    import scipy.fft
    import scipy.sparse

    basis, lengths = _wavelets(freqs, sr, alpha)
    n_fft = basis.shape[1]
    basis *= lengths[:, np.newaxis] / float(n_fft)
    fft_basis = scipy.fft.fft(basis, n=n_fft, axis=1)[:, : (n_fft // 2) + 1]
    mags = np.abs(fft_basis)
    mag_sort = np.sort(mags, axis=1)
    cumulative = np.cumsum(mag_sort / np.sum(mags, axis=1, keepdims=True), axis=1)
    threshold = mag_sort[np.arange(len(mags)), np.argmin(cumulative < SPARSITY, axis=1)]
    kept = np.where(mags >= threshold[:, np.newaxis], fft_basis, 0).astype(np.complex64)
    kept *= np.float64(gain)  # computed in complex128, as librosa scales its sparse matrix
    return scipy.sparse.csr_matrix(kept), n_fft


class _Stage:
    """One octave's signal, as it arrives: buffered samples and the frames read from them.

    The signal is the input downsampled to this octave's rate, ``n_samples`` long
    (librosa pads or trims each resampled signal to ``ceil(n / factor)``). Frame ``j`` is
    the FFT of samples ``[j * hop - n_fft // 2, j * hop + n_fft // 2)``, zeros outside
    the signal (a centred, zero-padded, rectangular-window STFT as ``librosa.stft``).
    """

    def __init__(self, octave: _Octave, n_samples: int, n_frames: int) -> None:
        self.octave = octave
        self.n_samples = n_samples
        self.n_frames = n_frames
        self.width = octave.bins.stop - octave.bins.start  # the lowest octave may be partial
        self.received = 0
        self.next_frame = 0
        self.buffer = np.zeros(octave.n_fft // 2, np.float32)  # the centring pad
        self.offset = -(octave.n_fft // 2)  # signal index of buffer[0]

    def accept(self, chunk: np.ndarray, final: bool) -> np.ndarray:
        """Append the next samples (those beyond ``n_samples`` dropped; at the end, zeros
        up to it). Returns what was appended: the next octave's input."""
        chunk = chunk[: self.n_samples - self.received]
        if final:
            chunk = np.concatenate([chunk, np.zeros(self.n_samples - self.received - len(chunk), np.float32)])
        self.buffer = np.concatenate([self.buffer, chunk])
        self.received += len(chunk)
        return chunk

    def frames(self, final: bool, out: _Rows, config: FeatureConfig) -> None:
        """Write the features of every frame whose samples are all there to ``out``."""
        half, hop = self.octave.n_fft // 2, self.octave.hop
        if final:
            self.buffer = np.concatenate([self.buffer, np.zeros(half, np.float32)])
            stop = self.n_frames
        else:
            stop = min(max((self.received - half) // hop + 1, self.next_frame), self.n_frames)
        if stop <= self.next_frame:
            return
        windows = np.lib.stride_tricks.sliding_window_view(self.buffer, 2 * half)
        step = max(1, FFT_BYTES // (16 * half))
        for first in range(self.next_frame, stop, step):
            last = min(first + step, stop)
            rows = windows[first * hop - half - self.offset : last * hop - half - self.offset : hop]
            out.rows(first, last)[:, self.octave.bins] = magnitude_to_features(self.magnitudes(rows), config)
        self.next_frame = stop
        drop = min(stop * hop - half - self.offset, len(self.buffer))  # hop > n_fft skips samples
        self.buffer, self.offset = self.buffer[drop:], self.offset + drop

    def magnitudes(self, rows: np.ndarray) -> np.ndarray:
        """(frames, n_fft) float32 windows -> (frames, width) float32 CQT magnitudes.

        numpy's double-precision FFT is scipy.fft's (librosa's FFT library) to the bit.
        """
        spectrum = np.fft.rfft(rows.astype(np.float64), axis=-1).T.astype(np.complex64)
        response = self.octave.basis.dot(spectrum)[-self.width :]
        response /= self.octave.sqrt_lengths
        return np.abs(response).T


class _Rows:
    """Feature rows being written, octave by octave: rows ``[base, base + len(data))``.

    Each octave finishes frames at its own pace (the lowest, with the longest filters,
    last), so only the rows between the slowest octave's next frame and the fastest's
    are held.
    """

    def __init__(self, n_bins: int) -> None:
        self.base = 0
        self.data = np.zeros((0, n_bins), np.float32)

    def rows(self, first: int, last: int) -> np.ndarray:
        """The rows ``[first, last)`` to write into (zeros where not written yet)."""
        if last - self.base > len(self.data):
            grown = np.zeros((max(last - self.base, 2 * len(self.data)), self.data.shape[1]), np.float32)
            grown[: len(self.data)] = self.data
            self.data = grown
        return self.data[first - self.base : last - self.base]

    def take(self, stop: int) -> np.ndarray:
        """Rows ``[base, stop)``, no longer held."""
        done = self.data[: stop - self.base].copy()
        self.data = self.data[stop - self.base :].copy()
        self.base = stop
        return done


class _Cascade:
    """The octave stages chained by streaming resamplers, writing features to rows that
    :meth:`take` hands out once every octave has written them."""

    def __init__(self, config: FeatureConfig, n_samples: int, n_frames: int) -> None:
        import soxr

        plan = _plan(config)
        self.config, self.out = config, _Rows(config.n_bins)
        self.early = None
        n = n_samples
        if plan.early_factor > 1:
            self.early = soxr.ResampleStream(plan.early_factor, 1, 1, dtype="float32", quality=QUALITY)
            n = int(np.ceil(n * (1.0 / plan.early_factor)))
        self.stages = []
        for i, octave in enumerate(plan.octaves):
            if i > 0:
                n = int(np.ceil(n * 0.5))
            self.stages.append(_Stage(octave, n, n_frames))
        self.halvers = [soxr.ResampleStream(2, 1, 1, dtype="float32", quality=QUALITY) for _ in plan.octaves[1:]]
        self.early_factor = plan.early_factor

    def push(self, samples: np.ndarray, final: bool) -> None:
        """Feed the next input samples through every octave (``final``: the last ones)."""
        chunk = samples
        if self.early is not None:
            chunk = _scaled(self.early.resample_chunk(chunk, last=final), self.early_factor)
        for i, stage in enumerate(self.stages):
            if i > 0:
                chunk = _scaled(self.halvers[i - 1].resample_chunk(chunk, last=final), 2)
            chunk = stage.accept(chunk, final)
            stage.frames(final, self.out, self.config)

    def take(self) -> np.ndarray:
        """The rows every octave has finished since the last call, in order."""
        return self.out.take(min(stage.next_frame for stage in self.stages))


def _scaled(y: np.ndarray, factor: int) -> np.ndarray:
    """Resampled samples scaled as ``librosa.resample(..., scale=True)`` does."""
    y /= np.sqrt(1.0 / factor)
    return y
