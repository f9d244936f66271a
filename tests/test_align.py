import numpy as np
import pytest
from conftest import melody, synth

from pianotx.align import estimate_offset, lagged_correlations, onset_targets, peak_strength
from pianotx.config import AlignConfig, FeatureConfig
from pianotx.features import compute_features
from pianotx.midi import Notes

FC = FeatureConfig()


@pytest.mark.parametrize("lag_frames", [0, 7, 16, -5])
def test_audio_shifted_by_known_frames_is_realigned_exactly(lag_frames):
    notes = melody(3, seconds=10)
    delay = lag_frames / FC.frame_rate
    if delay < 0:  # audio early: drop its first |delay| seconds of notes' rendering
        audio = synth(notes.shifted(delay))
    else:
        audio = synth(notes, delay=delay)
    result = estimate_offset(compute_features(audio, FC), notes, FC, AlignConfig())
    assert result.offset_frames == lag_frames
    assert result.confidence > AlignConfig().min_confidence


@pytest.mark.parametrize("lag_frames", [0, 12])
def test_the_seeds_energy_method_is_available(lag_frames):
    notes = melody(4, seconds=10)
    audio = synth(notes, delay=lag_frames / FC.frame_rate)
    result = estimate_offset(compute_features(audio, FC), notes, FC, AlignConfig(method="energy"))
    assert result.offset_frames == lag_frames


def test_half_second_late_audio_is_16_frames_late():
    notes = melody(5, seconds=10)
    result = estimate_offset(compute_features(synth(notes, delay=0.5), FC), notes, FC, AlignConfig())
    assert result.offset_frames == round(0.5 * FC.frame_rate) == 16


def test_noise_gets_low_confidence():
    notes = melody(1, seconds=10)
    noise = np.random.default_rng(0).normal(0, 0.1, 16000 * 10).astype(np.float32)
    result = estimate_offset(compute_features(noise, FC), notes, FC, AlignConfig())
    assert result.confidence < AlignConfig().min_confidence


def test_other_music_gets_low_confidence():
    audio = synth(melody(11, seconds=10))
    result = estimate_offset(compute_features(audio, FC), melody(12, seconds=10), FC, AlignConfig())
    assert result.confidence < AlignConfig().min_confidence


def test_onset_targets_put_keys_on_their_bins_with_the_octave_partial():
    # C4 (MIDI 60, key 39) starting at frame 2: bin 39 gets 1 at frame 2 and 0.5 either side,
    # bin 51 (an octave up) half of that
    target = onset_targets(Notes.from_lists([(2 / 31.25, 0.5)], [60]), 5, FC)
    assert target.shape == (5, 84)
    assert target[:, 39].tolist() == [0.0, 0.5, 1.0, 0.5, 0.0]
    assert target[:, 51].tolist() == [0.0, 0.25, 0.5, 0.25, 0.0]
    assert target.sum() == pytest.approx(3.0)


def test_peak_strength_of_a_clear_and_a_flat_curve():
    flat = np.zeros(11)
    assert peak_strength(flat, 5) == 0.0
    curve = np.array([0.0, 0.1, 0.0, 0.5, 0.5, 1.0, 0.5, 0.5, 0.1, 0.0, 0.1])
    # others (indices 3..7 guarded): [0, .1, 0, .1, 0, .1] -> mean .05, std .05
    assert peak_strength(curve, 5) == pytest.approx(19.0)


def test_lagged_correlation_of_a_pulse_train():
    energy = np.zeros(40)
    energy[[10, 20, 30]] = 1.0
    activity = np.zeros(43)
    activity[[7, 17, 27]] = 1.0  # the MIDI is 3 frames earlier than the audio
    corr = lagged_correlations(energy, activity, max_lag=5)
    assert int(np.argmax(corr)) - 5 == 3
    assert corr[3 + 5] == pytest.approx(1.0)


def test_a_pair_that_cannot_be_a_recording_of_its_midi_is_refused():
    from pianotx.align import implausible_pair

    fr = FC.frame_rate
    chord = Notes.from_lists([(1.0, 2.0)] * 21 + [(0.0, 8.0)], list(range(40, 61)) + [30])
    assert implausible_pair(chord, 8.5, fr) == (
        "midi",
        "21 notes start together at 1.00 s, more than the 20 a pianist plays at once",
    )
    twenty = Notes.from_lists([(1.0, 2.0)] * 20 + [(0.0, 8.0)], list(range(40, 60)) + [30])
    assert implausible_pair(twenty, 8.5, fr) is None  # two hands can strike twenty keys
    notes = melody(1, seconds=8)
    end = notes.end_time
    assert implausible_pair(notes, end + 1.0, fr) is None
    assert implausible_pair(notes, end - 0.9, fr) is None  # a release cut short
    assert implausible_pair(notes, 5.0, fr) == ("audio", f"audio (5.0 s) is much shorter than its MIDI ({end:.1f} s)")
    assert implausible_pair(notes, 1.5 * end + 1.9, fr) is None  # a long tail of silence or applause
    assert implausible_pair(notes, 30.0, fr) == ("midi", f"MIDI ({end:.1f} s) is much shorter than its audio (30.0 s)")


def test_a_midi_of_one_note_beside_unrelated_music_is_not_trusted():
    features = compute_features(synth(melody(100, seconds=10)), FC)
    one = Notes.from_lists([(1.0, 1.5)], [60])
    result = estimate_offset(features, one, FC, AlignConfig())
    max_lag = round(AlignConfig().max_lag_seconds * FC.frame_rate)
    targets = onset_targets(one, len(features) + max_lag, FC)
    corr = lagged_correlations(np.maximum(np.diff(features, axis=0, prepend=features[:1]), 0), targets, max_lag)
    strength = peak_strength(corr, int(np.argmax(corr)))
    assert strength > AlignConfig().min_confidence  # the peak alone would let the pair in
    assert result.onsets == 1 and result.confidence == pytest.approx(strength / 8)
    assert result.confidence < AlignConfig().min_confidence


def test_confidence_is_scaled_by_the_onsets_up_to_eight():
    from pianotx.align import onset_count

    chord_and_run = Notes.from_lists(
        [(0.5, 1.0)] * 3 + [(1.0 + i / 10, 2.0) for i in range(4)], [60, 64, 67, 70, 72, 74, 76]
    )
    assert onset_count(chord_and_run, FC.frame_rate) == 5  # the chord counts once
    notes = melody(3, seconds=10)
    result = estimate_offset(compute_features(synth(notes), FC), notes, FC, AlignConfig())
    assert result.onsets == onset_count(notes, FC.frame_rate) >= 8  # enough: the peak strength as it is
