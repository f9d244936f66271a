"""benchmarks/degradations.py: the degradations and the table (rendering and transcribing
are the benchmark's)."""

from __future__ import annotations

import math
import shutil

import numpy as np
import pytest
from conftest import load_benchmark

SR = 16000


@pytest.fixture(scope="module")
def degradations():
    return load_benchmark("degradations")


def tone(seconds: float = 2.0, sample_rate: int = SR, extra: int = 0) -> np.ndarray:
    """Three short 440 Hz bursts (Hann-windowed) in silence: easy to align."""
    x = np.zeros(int(seconds * sample_rate) + extra)
    burst = np.sin(2 * np.pi * 440 * np.arange(2000) / sample_rate) * np.hanning(2000) * 0.5
    for start in (0.3, 0.9, 1.4):
        i = int(start * sample_rate)
        x[i : i + len(burst)] += burst
    return x


def lag(y: np.ndarray, x: np.ndarray) -> int:
    """Samples by which ``y`` is late against ``x`` (peak of their cross-correlation)."""
    from scipy.signal import correlate

    return int(np.argmax(correlate(y, x, "full", method="fft"))) - (len(x) - 1)


def test_rms_dbfs_of_a_square_a_sine_and_silence(degradations):
    assert degradations.rms_dbfs(np.ones(100)) == 0.0
    sine = np.sin(2 * np.pi * np.arange(16000) / 160)
    assert degradations.rms_dbfs(sine) == pytest.approx(-10 * math.log10(2), abs=1e-9)
    assert degradations.rms_dbfs(np.zeros(10)) == -math.inf


def test_the_quiet_level_is_exactly_20_db_lower_in_rms(degradations):
    x = tone()
    y = degradations.degrade("quiet-20dB", x, SR, 0, None)
    assert degradations.rms_dbfs(y) - degradations.rms_dbfs(x) == pytest.approx(-20.0, abs=1e-9)
    np.testing.assert_allclose(y, x / 10.0, rtol=1e-12)


def test_the_noise_floor_is_within_half_a_db_of_its_level_and_seeded(degradations):
    noise = degradations.noise_floor(10 * SR, -65.0, [0, 1])
    assert abs(degradations.rms_dbfs(noise) + 65.0) < 0.5
    np.testing.assert_array_equal(noise, degradations.noise_floor(10 * SR, -65.0, [0, 1]))
    assert not np.array_equal(noise, degradations.noise_floor(10 * SR, -65.0, [0, 2]))
    silence = np.zeros(10 * SR)
    np.testing.assert_array_equal(degradations.add_noise_floor(silence, -65.0, [0, 1]), noise)


def test_quiet_with_noise_is_the_quiet_signal_plus_the_floor(degradations):
    x = tone()
    y = degradations.degrade("quiet-20dB-noise", x, SR, 7, None)
    np.testing.assert_allclose(y - x / 10.0, degradations.noise_floor(len(x), -65.0, 7), atol=1e-15)


def test_clean_is_unchanged_and_loud_peaks_are_scaled_down(degradations):
    x = tone()
    np.testing.assert_array_equal(degradations.degrade("clean", x, SR, 0, None), x)
    loud = degradations.degrade("clean", 4 * x, SR, 0, None)
    assert np.max(np.abs(loud)) == pytest.approx(degradations.PEAK)
    with pytest.raises(ValueError, match="unknown condition 'tape'"):
        degradations.degrade("tape", x, SR, 0, None)


def test_reverberate_keeps_length_and_rms_and_a_pure_delay_only_delays(degradations):
    x = tone()
    y = degradations.reverberate(x, np.array([0.0, 0.0, 0.5]))
    assert len(y) == len(x)
    assert degradations.rms_dbfs(y) == pytest.approx(degradations.rms_dbfs(x), abs=1e-9)
    np.testing.assert_allclose(y[2:], x[:-2], atol=1e-12)


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs ffmpeg (apt-get install ffmpeg)")
@pytest.mark.parametrize("condition", ["mp3-64", "mp3-128", "ogg-64", "ogg-128"])
def test_the_codec_round_trip_keeps_length_rate_and_alignment(degradations, condition):
    rate = 44100
    x = tone(sample_rate=rate, extra=123)  # a length no codec frame divides
    y = degradations.degrade(condition, x, rate, 0, None)
    assert len(y) == len(x)
    assert lag(y, x) == 0
    assert degradations.rms_dbfs(y) == pytest.approx(degradations.rms_dbfs(x), abs=0.5)
    assert not np.array_equal(y, x)  # the codec did change the samples


def test_the_room_response_is_causal_with_the_direct_path_at_distance_over_343(degradations):
    pytest.importorskip("pyroomacoustics")
    response = degradations.room_response(SR)
    distance = float(np.linalg.norm(np.subtract(degradations.ROOM["mic"], degradations.ROOM["source"])))
    assert distance == pytest.approx(4.0)
    delay = round(distance / 343.0 * SR)
    assert delay == 187
    # the first arrival (the floor's comes 26 samples later) peaks at the direct path's delay
    assert int(np.argmax(np.abs(response[: delay + 20]))) == delay
    np.testing.assert_array_equal(response[: delay - 40], 0.0)  # nothing before it (40: its filter's lead)
    assert np.any(response[delay - 40 : delay] != 0)


def test_the_room_condition_keeps_the_level_and_delays_the_sound(degradations):
    pytest.importorskip("pyroomacoustics")
    x = np.zeros(2 * SR)
    x[1000] = 0.5  # a click
    y = degradations.degrade("room-4m", x, SR, 0, degradations.room_response(SR))
    assert len(y) == len(x)
    assert degradations.rms_dbfs(y) == pytest.approx(degradations.rms_dbfs(x), abs=1e-9)
    assert np.max(np.abs(y[: 1000 + 187 - 40])) < 1e-9  # silent until the sound arrives
    assert int(np.argmax(np.abs(y[: 1000 + 187 + 20]))) == 1000 + 187  # 4 m / 343 m/s later
    with pytest.raises(ValueError, match="needs the room"):
        degradations.degrade("room-4m", x, SR, 0, None)


def test_chosen_conditions_keep_their_order_and_always_clean(degradations):
    assert degradations.chosen_conditions("ogg-64, mp3-64") == ["clean", "mp3-64", "ogg-64"]
    assert degradations.chosen_conditions(",".join(degradations.CONDITIONS)) == list(degradations.CONDITIONS)
    with pytest.raises(ValueError, match="unknown condition flac"):
        degradations.chosen_conditions("clean,flac")


def test_condition_table_shows_each_systems_f1_and_its_cost_against_clean(degradations):
    def scored(system, note, offset, frame):
        return {"system": system, "mean": {"note_f1": note, "note_with_offset_f1": offset, "frame_f1": frame}}

    results = {
        "clean": [scored("Basic Pitch", 0.893, 0.587, 0.84), scored("pianotx", 0.861, 0.598, 0.797)],
        "mp3-64": [scored("Basic Pitch", 0.88, 0.587, 0.85), scored("pianotx", 0.8, 0.5, 0.7)],
    }
    assert degradations.condition_table(results) == (
        "| condition | Basic Pitch note | Basic Pitch note+offset | Basic Pitch frame "
        "| pianotx note | pianotx note+offset | pianotx frame |\n"
        "|---|---:|---:|---:|---:|---:|---:|\n"
        "| clean | 89.3 | 58.7 | 84.0 | 86.1 | 59.8 | 79.7 |\n"
        "| mp3-64 | 88.0 (-1.3) | 58.7 (+0.0) | 85.0 (+1.0) | 80.0 (-6.1) | 50.0 (-9.8) | 70.0 (-9.7) |"
    )
