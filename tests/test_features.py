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


@pytest.mark.parametrize("chunk", [1000, 65536, 1 << 17])
def test_feature_blocks_tile_the_frames_in_order_and_equal_compute_features(monkeypatch, chunk):
    samples = synth(melody(4, seconds=20), seconds=20.0)
    expected = compute_features(samples, FC)
    monkeypatch.setattr(features, "CHUNK_SAMPLES", chunk)
    blocks = list(features.feature_blocks(samples, FC))
    starts = [start for start, _ in blocks]
    assert starts == [0] + np.cumsum([len(rows) for _, rows in blocks])[:-1].tolist()
    assert sum(len(rows) for _, rows in blocks) == len(expected) == 626
    np.testing.assert_array_equal(np.concatenate([rows for _, rows in blocks]), expected)
    # a block is what one push finished: about a chunk's frames, never the whole piece
    assert max(len(rows) for _, rows in blocks) < 2 * chunk // 512 + 200


def test_feature_blocks_of_silence_before_sound_and_of_silence_only():
    tone = synth(melody(2, seconds=4), seconds=4.0)
    samples = np.concatenate([np.zeros(16000 * 30, np.float32), tone])  # 30 s of silence first
    got = np.concatenate([rows for _, rows in features.feature_blocks(samples, FC)])
    np.testing.assert_array_equal(got, compute_features(samples, FC))
    assert not got[:900].any() and got[-100:].any()
    silent = list(features.feature_blocks(np.zeros(16000 * 10, np.float32), FC))
    assert sum(len(rows) for _, rows in silent) == 313 and not any(rows.any() for _, rows in silent)
    assert [(start, rows.shape) for start, rows in features.feature_blocks(np.zeros(0, np.float32), FC)] == [
        (0, (1, 84))
    ]


def test_stream_file_features_hands_blocks_to_its_consumer_while_the_file_is_read(tmp_path, monkeypatch):
    import soundfile as sf

    monkeypatch.setattr(features, "CHUNK_SAMPLES", 16000)
    path = tmp_path / "x.wav"
    sf.write(path, synth(melody(3, seconds=10), seconds=10.0), 16000)
    seen: list[tuple[str, float]] = []

    def consume(n_frames, blocks):
        out = []
        for start, rows in blocks:
            seen.append(("block", start))
            out.append(rows)
        return n_frames, np.concatenate(out)

    (n_frames, got), n_samples = features.stream_file_features(
        path, FC, consume, lambda f: seen.append(("progress", f))
    )
    assert (n_frames, n_samples) == (313, 160000)
    np.testing.assert_array_equal(got, features.file_features(path, FC)[0])
    # progress after each push but the last, each push's finished frames right after it: the
    # lowest octave's long filters hold the first frames back until 7 s were pushed
    progress = [("progress", k / 10) for k in range(1, 10)]
    assert seen == [*progress[:7], ("block", 0), *progress[7:], ("block", 88)]


def test_stream_file_features_keeps_the_consumers_errors_and_words_the_decoders(tmp_path, monkeypatch):
    import soundfile as sf

    from pianotx.audio import AudioError

    path = tmp_path / "x.wav"
    sf.write(path, synth(melody(3, seconds=3)), 16000)

    def fails(n_frames, blocks):
        next(blocks)
        raise KeyError("the model's own")

    with pytest.raises(KeyError, match="the model's own"):  # not "cannot decode audio"
        features.stream_file_features(path, FC, fails)

    def broken(self):
        raise RuntimeError("bad frame")

    from pianotx import audio

    monkeypatch.setattr(audio.AudioBlocks, "_read", broken)
    with pytest.raises(AudioError, match=r"^cannot decode audio \(RuntimeError: bad frame\)$"):
        features.stream_file_features(path, FC, lambda n, blocks: list(blocks))


def test_stream_file_features_consumes_again_when_the_header_misstates_the_length(tmp_path, monkeypatch):
    import soundfile as sf

    from pianotx import audio

    path = tmp_path / "x.wav"
    sf.write(path, synth(melody(1, seconds=3)), 16000)
    right = features.file_features(path, FC)[0]
    announced = audio.AudioBlocks.__init__

    def wrong_header(self, *args):
        announced(self, *args)
        self.expected += 700

    monkeypatch.setattr(audio.AudioBlocks, "__init__", wrong_header)
    calls: list[int] = []

    def consume(n_frames, blocks):
        calls.append(n_frames)
        return np.concatenate([rows for _, rows in blocks])

    got, n_samples = features.stream_file_features(path, FC, consume)
    assert calls == [103, 102] and n_samples == 52000  # the announced frames, then the real ones
    np.testing.assert_array_equal(got, right)


def test_the_consumer_runs_with_stderr_while_decoding_has_it_silenced(tmp_path):
    code = (
        "import os, numpy as np, soundfile as sf; from pianotx.config import FeatureConfig; "
        "from pianotx import audio, features; features.CHUNK_SAMPLES = 16000\n"
        f"sf.write({str(tmp_path / 'x.wav')!r}, np.full(16000 * 12, 0.1, np.float32), 16000)\n"
        "read = audio.AudioBlocks._read\n"
        "def chatty(self):\n"
        "    os.write(2, b'decoder chatter\\n')\n"  # what libmpg123 does, below Python
        "    return read(self)\n"
        "audio.AudioBlocks._read = chatty\n"
        "def consume(n, blocks):\n"
        "    for start, rows in blocks: os.write(2, b'block %d\\n' % start)\n"
        "    os.write(2, b'after\\n')\n"
        f"features.stream_file_features({str(tmp_path / 'x.wav')!r}, FeatureConfig(), consume)\n"
        "os.write(2, b'done\\n')"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stderr.splitlines() == ["block 0", "block 88", "block 192", "after", "done"]
