import numpy as np
import pytest

from conftest import melody, synth
from pianotx.align import estimate_offset, lagged_correlations
from pianotx.config import AlignConfig, FeatureConfig
from pianotx.features import compute_features

FC = FeatureConfig()


@pytest.mark.parametrize("lag_frames", [0, 7, 16, -5])
def test_audio_shifted_by_known_frames_is_realigned_exactly(lag_frames):
    notes = melody(3, seconds=10)
    delay = lag_frames / FC.frame_rate
    if delay < 0:  # audio early: drop its first |delay| seconds of notes' rendering
        audio = synth(notes.shifted(delay))
    else:
        audio = synth(notes, delay=delay)
    result = estimate_offset(compute_features(audio, FC), notes, FC.frame_rate, AlignConfig())
    assert result.offset_frames == lag_frames
    assert result.confidence > 0.5


def test_half_second_late_audio_is_16_frames_late():
    notes = melody(5, seconds=10)
    result = estimate_offset(compute_features(synth(notes, delay=0.5), FC), notes, FC.frame_rate, AlignConfig())
    assert result.offset_frames == round(0.5 * FC.frame_rate) == 16


def test_noise_gets_low_confidence():
    notes = melody(1, seconds=10)
    noise = np.random.default_rng(0).normal(0, 0.1, 16000 * 10).astype(np.float32)
    result = estimate_offset(compute_features(noise, FC), notes, FC.frame_rate, AlignConfig())
    assert result.confidence < AlignConfig().min_confidence


def test_lagged_correlation_of_a_pulse_train():
    energy = np.zeros(40)
    energy[[10, 20, 30]] = 1.0
    activity = np.zeros(43)
    activity[[7, 17, 27]] = 1.0  # the MIDI is 3 frames earlier than the audio
    corr = lagged_correlations(energy, activity, max_lag=5)
    assert int(np.argmax(corr)) - 5 == 3
    assert corr[3 + 5] == pytest.approx(1.0)
