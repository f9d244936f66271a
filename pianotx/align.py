"""Constant audio-vs-MIDI offset by cross-correlation over a bounded lag.

Two signals are compared frame by frame at every lag in ``[-max_lag, max_lag]``, and
the lag with the highest Pearson correlation is the offset:

- ``method="onsets"`` (default): pitch-wise onset strength. Each CQT bin's positive
  frame-to-frame increase is correlated with the MIDI's onset roll drawn on the same
  bins (bin k is MIDI 21 + k at 12 bins per octave; each onset also counts half in the
  bin an octave up, its strongest partial), smoothed over +-1 frame.
- ``method="energy"``: the seed's method, per-frame summed CQT energy against per-frame
  counts of sounding notes.

Why onsets are the default, measured on the default rendered corpus (52 pieces, each
also shifted by +16 and -9 frames): the energy method found the exact offset in 33% of
cases and was more than 3 frames off in 22 of 156 (up to 2 s: chorales keep an almost
constant number of voices, so the count curve is flat and periodic); pitch-wise onsets
were exact in 98% and never more than 1 frame off.

Confidence is the peak's strength: how many standard deviations the best correlation
stands above the correlations at the other lags (excluding +-2 frames around the
peak), scaled by the evidence behind it: a MIDI whose notes start at fewer than
:data:`FULL_EVIDENCE_ONSETS` distinct frames has its strength scaled by their count over
that number. With few onsets the curve is that of a handful of frames, and chance alone
makes a tall peak: against unrelated audio a one-onset MIDI reached a strength of 17,
a two-onset one 8.6 and a four-onset one 6.4 (synthetic tones; 2.1, 2.2 and 3.2 once
scaled), while true pairs of four onsets scored 13..27 (6.6..14). On the default corpus
(every piece has hundreds of onsets) real pairs scored 4.7..10, audio of noise
2.0..3.5 and audio of other music 1.9..4.2.

Sign: a positive offset means the audio is *late*: a note at MIDI time t sounds at
t + offset, so labels are shifted later by the offset.

Before any offset is sought, :func:`implausible_pair` refuses a pair that cannot be a
recording of its MIDI: more than :data:`MAX_SIMULTANEOUS_ONSETS` notes starting in one
frame (a pianist has ten fingers; a MIDI of 10,000 notes struck at once matched the one
loud onset of unrelated audio with a confidence of 38), audio much shorter than the MIDI,
or a MIDI that covers only part of its audio.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pianotx.config import AlignConfig, FeatureConfig
from pianotx.labels import notes_to_rolls
from pianotx.midi import Notes

MAX_SIMULTANEOUS_ONSETS = 20  # notes starting in one frame; more is no piano performance
AUDIO_SHORTER_SLACK = 1.0  # seconds the MIDI may outlast its audio (a release cut short)
# The audio may outlast its MIDI by up to half the MIDI's length and 2 s (reverberation,
# silence, applause); longer, most of it would be labelled silence while music plays.
AUDIO_LONGER_RATIO, AUDIO_LONGER_SLACK = 1.5, 2.0
FULL_EVIDENCE_ONSETS = 8  # distinct onset frames below which the confidence is scaled down


@dataclass(frozen=True)
class Alignment:
    offset_frames: int  # audio lateness in frames (positive: audio later than MIDI)
    confidence: float  # peak strength (z-score of the best lag's correlation) scaled by the evidence
    correlation: float  # Pearson correlation at the best lag
    onsets: int = 0  # distinct frames at which the MIDI's notes start (the evidence)


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    x = x - x.mean()
    y = y - y.mean()
    denom = np.sqrt((x * x).sum() * (y * y).sum())
    return float((x * y).sum() / denom) if denom > 0 else 0.0


def lagged_correlations(audio: np.ndarray, midi: np.ndarray, max_lag: int) -> np.ndarray:
    """Pearson correlation of ``audio[t]`` with ``midi[t - lag]`` for each lag.

    Args:
        audio: (n,) or (n, d) per-frame audio signal.
        midi: (m,) or (m, d) per-frame MIDI signal, m >= n + max_lag so negative lags
            (audio early) still see the MIDI ahead; shorter is zero-padded.
        max_lag: lags -max_lag..max_lag are tried.

    Returns:
        (2 * max_lag + 1,) correlations; index ``lag + max_lag``. Lags that would leave
        fewer than 2 overlapping frames score 0.
    """
    n = len(audio)
    tail = max(0, n + max_lag - len(midi))
    pad = [(max_lag, tail)] + [(0, 0)] * (midi.ndim - 1)
    padded = np.pad(np.asarray(midi, np.float64), pad)
    out = np.zeros(2 * max_lag + 1)
    for i, lag in enumerate(range(-max_lag, max_lag + 1)):
        lo = max(lag, 0)  # frames of audio before the MIDI starts have no counterpart
        if n - lo < 2:
            continue
        # midi[t - lag] lives at padded[t - lag + max_lag]
        out[i] = _pearson(audio[lo:].ravel(), padded[lo - lag + max_lag : n - lag + max_lag].ravel())
    return out


def peak_strength(correlations: np.ndarray, best: int, guard: int = 2) -> float:
    """(peak - mean of the other lags) / their standard deviation; 0 if undefined."""
    others = np.ones(len(correlations), bool)
    others[max(0, best - guard) : best + guard + 1] = False
    rest = correlations[others]
    if len(rest) < 2 or rest.std() == 0:
        return 0.0
    return float((correlations[best] - rest.mean()) / rest.std())


def onset_strength(features: np.ndarray) -> np.ndarray:
    """(n, bins) positive frame-to-frame increase of each feature bin."""
    return np.maximum(np.diff(features, axis=0, prepend=features[:1]), 0.0)


def onset_targets(notes: Notes, n_frames: int, features: FeatureConfig) -> np.ndarray:
    """(n_frames, n_bins) the MIDI's onsets on the CQT's bins, smoothed +-1 frame."""
    _, onsets = notes_to_rolls(notes, n_frames, features.frame_rate)
    bins = np.arange(onsets.shape[1]) * features.bins_per_octave // 12
    keep = bins < features.n_bins
    target = np.zeros((n_frames, features.n_bins))
    np.add.at(target.T, bins[keep], onsets.T[keep].astype(np.float64))
    octave = features.bins_per_octave
    target[:, octave:] += 0.5 * target[:, :-octave].copy()
    smoothed = target.copy()
    smoothed[1:] += 0.5 * target[:-1]
    smoothed[:-1] += 0.5 * target[1:]
    return smoothed


def implausible_pair(notes: Notes, audio_seconds: float, frame_rate: float) -> tuple[str, str] | None:
    """Why audio of ``audio_seconds`` cannot be a recording of ``notes``, or None.

    Returns:
        (which file is at fault, "midi" or "audio"; the one-line reason), for: more
        than :data:`MAX_SIMULTANEOUS_ONSETS` onsets in one frame, audio shorter than the
        MIDI's last note-off by more than :data:`AUDIO_SHORTER_SLACK`, or audio longer
        than ``AUDIO_LONGER_RATIO`` times the MIDI plus ``AUDIO_LONGER_SLACK``.
    """
    if len(notes):
        onset_frames = np.round(notes.intervals[:, 0] * frame_rate).astype(np.int64)
        frames, counts = np.unique(onset_frames, return_counts=True)
        most = int(np.argmax(counts))
        if counts[most] > MAX_SIMULTANEOUS_ONSETS:
            at = float(notes.intervals[onset_frames == frames[most], 0].min())
            return "midi", (
                f"{counts[most]} notes start together at {at:.2f} s, more than the "
                f"{MAX_SIMULTANEOUS_ONSETS} a pianist plays at once"
            )
    end = notes.end_time
    if audio_seconds + AUDIO_SHORTER_SLACK < end:
        return "audio", f"audio ({audio_seconds:.1f} s) is much shorter than its MIDI ({end:.1f} s)"
    if audio_seconds > AUDIO_LONGER_RATIO * end + AUDIO_LONGER_SLACK:
        return "midi", f"MIDI ({end:.1f} s) is much shorter than its audio ({audio_seconds:.1f} s)"
    return None


def estimate_offset(
    features: np.ndarray, notes: Notes, feature_config: FeatureConfig, config: AlignConfig
) -> Alignment:
    """Find the constant offset between audio features and MIDI notes.

    Args:
        features: (n_frames, n_bins) features of the audio.
        notes: the MIDI's notes, in MIDI time.
        feature_config: how ``features`` were computed (frame rate, bins).
        config: method and lag bound.
    """
    fr = feature_config.frame_rate
    max_lag = max(3, int(round(config.max_lag_seconds * fr)))
    n = len(features)
    if config.method == "energy":
        frames, _ = notes_to_rolls(notes, n + max_lag, fr)
        corr = lagged_correlations(
            features.sum(axis=1, dtype=np.float64), frames.sum(axis=1, dtype=np.float64), max_lag
        )
    else:
        corr = lagged_correlations(onset_strength(features), onset_targets(notes, n + max_lag, feature_config), max_lag)
    best = int(np.argmax(corr))
    onsets = onset_count(notes, fr)
    evidence = min(1.0, onsets / FULL_EVIDENCE_ONSETS)
    return Alignment(best - max_lag, peak_strength(corr, best) * evidence, float(corr[best]), onsets)


def onset_count(notes: Notes, frame_rate: float) -> int:
    """How many distinct frames the notes start at (a chord counts once)."""
    return len(np.unique(np.round(notes.intervals[:, 0] * frame_rate).astype(np.int64)))
