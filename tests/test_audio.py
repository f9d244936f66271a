"""Audio loading: block-wise decoding and resampling give librosa.load's samples exactly."""

from __future__ import annotations

import math
import shutil
import subprocess
import sys
import tracemalloc
import warnings

import numpy as np
import pytest
import soundfile as sf

from pianotx import audio
from pianotx.audio import AudioError, load_audio


def librosa_load(path, sample_rate: int) -> np.ndarray:
    """The samples as first defined: ``librosa.load`` of the whole file."""
    import librosa

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return librosa.load(str(path), sr=sample_rate, mono=True)[0]


def signal(n: int, channels: int, seed: int = 0) -> np.ndarray:
    """(n, channels) float32: a chirp plus noise, different in each channel."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / 44100
    chirp = 0.3 * np.sin(2 * np.pi * (100 + 2000 * t) * t)
    return np.stack([chirp + rng.normal(0, 0.05, n) for _ in range(channels)], axis=1).astype(np.float32)


@pytest.mark.parametrize("rate", [44100, 48000, 22050, 8000, 16000])
@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize("n", [1, 2, 999, 1000, 1001, 30011])
def test_block_wise_resampling_equals_whole_file_resampling(tmp_path, monkeypatch, rate, channels, n):
    path = tmp_path / "x.wav"
    sf.write(path, signal(n, channels), rate, subtype="PCM_16")
    monkeypatch.setattr(audio, "BLOCK_FRAMES", 1000)  # blocks end inside and at the file's end
    got = load_audio(path, 16000)
    assert got.dtype == np.float32
    assert len(got) == math.ceil(n * 16000 / rate)
    np.testing.assert_array_equal(got, librosa_load(path, 16000))


@pytest.mark.parametrize(
    ("fmt", "subtype"), [("FLAC", "PCM_24"), ("OGG", "VORBIS"), ("MP3", "MPEG_LAYER_III"), ("WAV", "FLOAT")]
)
def test_other_formats_equal_librosa_load(tmp_path, monkeypatch, fmt, subtype):
    path = tmp_path / f"x.{fmt.lower()}"
    sf.write(path, signal(44100 * 3 + 17, 2), 44100, format=fmt, subtype=subtype)
    monkeypatch.setattr(audio, "BLOCK_FRAMES", 4096)
    np.testing.assert_array_equal(load_audio(path, 16000), librosa_load(path, 16000))


def test_three_channels_are_averaged_as_librosa_does(tmp_path):
    path = tmp_path / "x.wav"
    sf.write(path, signal(5000, 3), 16000, subtype="FLOAT")
    got = load_audio(path, 16000)
    np.testing.assert_array_equal(got, librosa_load(path, 16000))
    np.testing.assert_allclose(got, signal(5000, 3).mean(axis=1), atol=1e-7)


def test_bad_files_raise_one_line_errors(tmp_path):
    nan = signal(2000, 1)
    nan[1500] = np.nan
    sf.write(tmp_path / "nan.wav", nan, 44100, subtype="FLOAT")
    sf.write(tmp_path / "empty.wav", np.zeros((0, 1), np.float32), 44100)
    (tmp_path / "text.wav").write_text("not audio")
    (tmp_path / "notes.txt").write_text("hello")
    expected = {
        "nan.wav": "audio contains non-finite samples",
        "empty.wav": "audio is empty",
        "text.wav": "cannot decode audio (no decoder recognises the file)",
        "notes.txt": "unsupported format .txt; expected .wav, .flac, .ogg, .mp3, .opus, .oga, "
        ".aiff, .aif, .m4a, .aac, .mp4",
        "missing.wav": "no such file",
    }
    for name, message in expected.items():
        with pytest.raises(AudioError) as caught:
            load_audio(tmp_path / name, 16000)
        assert str(caught.value) == message


def test_memory_is_the_output_not_the_decoded_file(tmp_path):
    path = tmp_path / "long.wav"
    piece = signal(44100 * 10, 2)
    with sf.SoundFile(str(path), "w", 44100, 2, subtype="PCM_16") as f:
        for _ in range(12):  # 2 minutes
            f.write(piece)
    tracemalloc.start()
    samples = load_audio(path, 16000)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert len(samples) == 16000 * 120
    assert peak < samples.nbytes + 4e6  # whole-file decoding: + 42 MB of float32 stereo at 44.1 kHz


def test_loading_imports_neither_librosa_nor_numba(tmp_path):
    sf.write(tmp_path / "x.wav", signal(44100, 2), 44100)
    code = (
        f"import sys; from pianotx.audio import load_audio; load_audio({str(tmp_path / 'x.wav')!r}, 16000); "
        "print(sorted(m for m in ('librosa', 'numba', 'scipy.signal') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_output_buffer_outgrows_a_wrong_header_and_is_cut_or_padded_to_the_final_length():
    buffer = audio._Buffer(3)  # the header said 3 samples
    buffer.append(np.arange(4, dtype=np.float32))
    buffer.append(np.arange(4, 6, dtype=np.float32))
    np.testing.assert_array_equal(buffer.result(8), [0, 1, 2, 3, 4, 5, 0, 0])
    short = audio._Buffer(10)
    short.append(np.ones(4, np.float32))
    np.testing.assert_array_equal(short.result(3), [1, 1, 1])
    assert len(audio._Buffer(1 << 62).data) == 0  # an absurd header: grown as samples come


@pytest.mark.parametrize("gain", [8.0, 1e30])
def test_a_float_file_above_full_scale_is_scaled_to_a_peak_of_one_with_one_warning(tmp_path, monkeypatch, gain):
    monkeypatch.setattr(audio, "BLOCK_FRAMES", 4096)  # the peak is found across blocks
    quiet = signal(44100 * 2, 2)
    sf.write(tmp_path / "x1.wav", quiet, 44100, subtype="FLOAT")
    loud = (quiet.astype(np.float64) * gain).astype(np.float32)
    sf.write(tmp_path / "loud.wav", loud, 44100, subtype="FLOAT")
    lines: list[str] = []
    got = load_audio(tmp_path / "loud.wav", 16000, warn=lines.append)
    peak = float(np.abs(loud).max())
    assert lines == [
        f"{tmp_path / 'loud.wav'}: samples reach {peak:.3g}, above full scale (1.0); scaled to a peak of 1.0"
    ]
    expected = load_audio(tmp_path / "x1.wav", 16000) * np.float32(gain / peak)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert np.all(np.isfinite(got)) and np.abs(got).max() < 1.1


def test_the_default_warning_names_the_file_once(tmp_path, capsys):
    from pianotx.config import FeatureConfig
    from pianotx.features import compute_features, file_features

    loud = signal(16000, 1) * np.float32(1e30)
    sf.write(tmp_path / "loud.wav", loud, 16000, subtype="FLOAT")
    samples = load_audio(tmp_path / "loud.wav", 16000)
    features, n = file_features(tmp_path / "loud.wav", FeatureConfig())  # as transcription reads it
    np.testing.assert_array_equal(features, compute_features(samples, FeatureConfig()))
    assert n == len(samples) == 16000
    peak = float(np.abs(loud).max())
    assert capsys.readouterr().err.splitlines() == [
        f"warning: {tmp_path / 'loud.wav'}: samples reach {peak:.3g}, above full scale (1.0); scaled to a peak of 1.0"
    ]


def test_files_within_full_scale_are_read_as_they_are(tmp_path):
    lines: list[str] = []
    full = np.array([[1.0], [-1.0], [0.5]], np.float32)
    sf.write(tmp_path / "float.wav", full, 16000, subtype="FLOAT")
    sf.write(tmp_path / "pcm.wav", full, 16000, subtype="PCM_16")
    assert load_audio(tmp_path / "float.wav", 16000, warn=lines.append).tolist() == [1.0, -1.0, 0.5]
    assert load_audio(tmp_path / "pcm.wav", 16000, warn=lines.append).tolist() == [32767 / 32768, -1.0, 0.5]
    assert lines == []


def test_aiff_and_opus_are_read_as_the_same_music(tmp_path):
    piece = signal(44100 * 2, 1)[:, 0]
    sf.write(tmp_path / "x.wav", piece, 44100, subtype="PCM_16")
    sf.write(tmp_path / "x.aiff", piece, 44100, subtype="PCM_16")
    np.testing.assert_array_equal(load_audio(tmp_path / "x.aiff", 16000), load_audio(tmp_path / "x.wav", 16000))
    tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(48000 * 2) / 48000)).astype(np.float32)
    sf.write(tmp_path / "x.opus", tone, 48000, format="OGG", subtype="OPUS")
    samples = load_audio(tmp_path / "x.opus", 16000)
    assert abs(len(samples) - 32000) < 800
    spectrum = np.abs(np.fft.rfft(samples[4000:28000]))
    assert abs(np.argmax(spectrum) * 16000 / 24000 - 440) < 2


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed")
def test_m4a_is_decoded_through_ffmpeg(tmp_path):
    piece = (0.3 * np.sin(2 * np.pi * 440 * np.arange(44100 * 2) / 44100)).astype(np.float32)
    sf.write(tmp_path / "x.wav", piece, 44100)
    encode = ["ffmpeg", "-v", "error", "-i", str(tmp_path / "x.wav"), "-c:a", "aac", str(tmp_path / "x.m4a")]
    subprocess.run(encode, check=True)
    samples = load_audio(tmp_path / "x.m4a", 16000)
    assert abs(len(samples) - 32000) < 1600  # AAC's priming frames trimmed or kept: within 0.1 s
    spectrum = np.abs(np.fft.rfft(samples[4000:28000]))
    assert abs(np.argmax(spectrum) * 16000 / 24000 - 440) < 2  # the A4 is there


def test_m4a_without_ffmpeg_is_one_line(tmp_path, monkeypatch):
    (tmp_path / "x.m4a").write_bytes(b"\0" * 100)
    monkeypatch.setattr(shutil, "which", lambda _name: None)
    with pytest.raises(AudioError) as caught:
        load_audio(tmp_path / "x.m4a", 16000)
    assert str(caught.value) == ".m4a audio is decoded with ffmpeg, which is not installed (apt-get install ffmpeg)"


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed")
def test_an_m4a_ffmpeg_cannot_read_is_one_line(tmp_path):
    (tmp_path / "x.m4a").write_text("not audio")
    with pytest.raises(AudioError) as caught:
        load_audio(tmp_path / "x.m4a", 16000)
    assert str(caught.value).startswith("cannot decode audio (ffmpeg: ")
