"""The feature function: librosa's CQT numbers exactly, streamed in chunks, in bounded memory."""

from __future__ import annotations

import os
import subprocess
import sys
import tracemalloc

import numpy as np
import pytest
from conftest import melody, synth

from pianotx import features
from pianotx.config import FeatureConfig
from pianotx.features import compute_features, magnitude_to_features

FC = FeatureConfig()


def librosa_features(samples: np.ndarray, config: FeatureConfig) -> np.ndarray:
    """The features as first defined: ``librosa.cqt`` of the whole signal."""
    import librosa

    n_frames = config.n_frames(len(samples))
    cqt = librosa.cqt(
        samples,
        sr=config.sample_rate,
        hop_length=config.hop_length,
        fmin=config.fmin,
        n_bins=config.n_bins,
        bins_per_octave=config.bins_per_octave,
    )
    return magnitude_to_features(np.abs(cqt).T[:n_frames], config)


def noise(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 0.1, n).astype(np.float32)


@pytest.mark.filterwarnings("ignore:n_fft=")  # librosa warns on inputs shorter than a filter
@pytest.mark.parametrize(
    "samples",
    [synth(melody(1, seconds=12)), noise(16000 * 5 + 77), noise(1600), noise(100), np.full(1, 0.1, np.float32)],
    ids=["melody", "noise", "0.1s", "100-samples", "one-sample"],
)
def test_default_features_equal_librosa_bit_for_bit(samples):
    expected = librosa_features(samples, FC)
    got = compute_features(samples, FC)
    assert got.dtype == np.float32 and got.shape == (1 + len(samples) // 512, 84)
    np.testing.assert_array_equal(got, expected)


@pytest.mark.filterwarnings("ignore:n_fft=")
@pytest.mark.parametrize(
    "config",
    [
        FeatureConfig(sample_rate=22050, hop_length=256, n_bins=88, fmin=27.5),  # 8 octaves
        FeatureConfig(sample_rate=44100, hop_length=512, n_bins=60, bins_per_octave=24, fmin=55.0),  # early /32
        FeatureConfig(sample_rate=16000, hop_length=320, n_bins=40, fmin=65.0),  # partial octave, hop 5 * 64
    ],
    ids=["22k-88", "44k-24bpo", "partial-octave"],
)
def test_other_configs_equal_librosa_bit_for_bit(config):
    samples = synth(melody(2, seconds=6), sample_rate=config.sample_rate)
    np.testing.assert_array_equal(compute_features(samples, config), librosa_features(samples, config))


@pytest.mark.parametrize("chunk", [333, 1000, 4096, 65536])
def test_a_60_second_piece_streamed_in_chunks_equals_the_whole_signal_transform(monkeypatch, chunk):
    samples = synth(melody(5, seconds=60), seconds=60.0)
    samples += noise(len(samples), seed=1) * 0.01  # no exact zeros anywhere
    monkeypatch.setattr(features, "CHUNK_SAMPLES", len(samples) + 1)
    whole = compute_features(samples, FC)  # one chunk: the whole signal at once
    monkeypatch.setattr(features, "CHUNK_SAMPLES", chunk)
    streamed = compute_features(samples, FC)
    assert np.abs(streamed - whole).max() == 0.0


def test_silence_is_zero_and_values_stay_in_range():
    assert not compute_features(np.zeros(16000, np.float32), FC).any()
    assert compute_features(np.zeros(0, np.float32), FC).shape == (1, 84)
    full_scale = np.sin(2 * np.pi * 440 * np.arange(16000) / 16000).astype(np.float32)
    values = compute_features(full_scale, FC)
    assert values.min() >= 0.0 and 1.0 < values.max() < 1.5  # full scale is ~1 (1.27 for a sine)


def test_working_memory_does_not_grow_with_the_input():
    samples = noise(16000 * 300)  # 5 minutes
    out_bytes = (1 + len(samples) // 512) * 84 * 4
    compute_features(samples[:16000], FC)  # filter banks built outside the measurement
    tracemalloc.start()
    compute_features(samples, FC)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < out_bytes + 6e6  # the result and a chunk's work (librosa.cqt of the whole signal: +30 MB)


def test_computing_features_imports_neither_librosa_nor_numba(tmp_path):
    code = (
        "import sys, numpy as np; from pianotx.config import FeatureConfig; "
        "from pianotx.features import compute_features; "
        "compute_features(np.ones(16000, np.float32), FeatureConfig()); "
        "print(sorted(m for m in ('librosa', 'numba', 'scipy.signal', 'scipy.fft') if m in sys.modules))"
    )
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path)}
    cold = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    warm = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert cold.stdout.strip() == "['scipy.fft']"  # the filter bases are built, then cached
    assert warm.stdout.strip() == "[]"


def test_filter_bases_come_from_the_cache_folder_once_built(tmp_path, monkeypatch):
    samples = synth(melody(3, seconds=5))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    features._plan.cache_clear()
    built = compute_features(samples, FC)
    assert len(list((tmp_path / "cache" / "pianotx" / "features").glob("cqt-*.npz"))) == 1
    features._plan.cache_clear()
    monkeypatch.setattr(features, "_filter_fft", None)  # loading must not rebuild them
    np.testing.assert_array_equal(compute_features(samples, FC), built)
    features._plan.cache_clear()


def test_an_unusable_cache_is_ignored(tmp_path, monkeypatch):
    samples = synth(melody(3, seconds=5))
    expected = compute_features(samples, FC)
    (tmp_path / "file").write_text("a file where the cache folder would be")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "file"))
    features._plan.cache_clear()
    np.testing.assert_array_equal(compute_features(samples, FC), expected)
    folder = tmp_path / "cache" / "pianotx" / "features"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    features._plan.cache_clear()
    compute_features(samples, FC)
    for path in folder.glob("cqt-*.npz"):
        path.write_bytes(b"not a zip archive")
    features._plan.cache_clear()
    np.testing.assert_array_equal(compute_features(samples, FC), expected)
    features._plan.cache_clear()


@pytest.mark.parametrize(
    ("rate", "channels", "n", "fmt", "chunk", "block"),
    [
        (44100, 2, 44100 * 4 + 5, "wav", 1 << 17, 1 << 16),  # resampled stereo, default sizes
        (16000, 1, 48017, "wav", 4096, 3000),  # no resampling, many small pushes
        (48000, 2, 144001, "ogg", 5000, 777),  # compressed, chunk and block not aligned
        (22050, 1, 2 * 4096, "flac", 4096, 4096),  # ends on a chunk boundary
    ],
)
def test_file_features_stream_the_file_and_equal_the_whole_signal_path(
    tmp_path, monkeypatch, rate, channels, n, fmt, chunk, block
):
    import soundfile as sf

    from pianotx import audio
    from pianotx.audio import load_audio
    from pianotx.features import file_features

    monkeypatch.setattr(features, "CHUNK_SAMPLES", chunk)
    monkeypatch.setattr(audio, "BLOCK_FRAMES", block)
    path = tmp_path / f"x.{fmt}"
    sf.write(path, (0.3 * np.random.default_rng(n).standard_normal((n, channels))).astype(np.float32), rate)
    config = FeatureConfig()
    streamed, n_samples = file_features(path, config)
    samples = load_audio(path, config.sample_rate)
    assert n_samples == len(samples) == int(np.ceil(n * config.sample_rate / rate))
    assert np.array_equal(streamed, compute_features(samples, config))


def test_file_features_reread_a_file_whose_header_misstates_its_length(tmp_path, monkeypatch):
    import soundfile as sf

    from pianotx import audio
    from pianotx.features import file_features

    path = tmp_path / "x.wav"
    sf.write(path, synth(melody(1, seconds=3)), 16000)
    right = file_features(path, FeatureConfig())
    announced = audio.AudioBlocks.__init__

    def wrong_header(self, *args):
        announced(self, *args)
        self.expected -= 100

    monkeypatch.setattr(audio.AudioBlocks, "__init__", wrong_header)
    again, n_samples = file_features(path, FeatureConfig())
    assert n_samples == right[1] == 52000 and np.array_equal(again, right[0])  # 3 s and the last decay


def test_file_features_of_silence_and_of_nothing(tmp_path):
    import soundfile as sf

    from pianotx.audio import AudioError
    from pianotx.features import file_features

    sf.write(tmp_path / "quiet.wav", np.zeros(16000, np.float32), 16000)
    quiet, n_samples = file_features(tmp_path / "quiet.wav", FeatureConfig())
    assert n_samples == 16000 and quiet.shape == (32, 84) and not quiet.any()
    sf.write(tmp_path / "empty.wav", np.zeros(0, np.float32), 16000)
    with pytest.raises(AudioError, match="^audio is empty$"):
        file_features(tmp_path / "empty.wav", FeatureConfig())
