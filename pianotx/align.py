"""Constant audio-vs-MIDI offset by 1-D cross-correlation (the seed's method).

Per-frame summed CQT energy is correlated with the per-frame number of sounding notes,
for every lag within a bound; the lag with the highest Pearson correlation is the
offset, and that correlation is its confidence. Noise, or audio of other music, gives a
low peak; a faithful recording of the MIDI gives a high one.

Sign: a positive offset means the audio is *late*: a note at MIDI time t sounds at
t + offset, so labels are shifted later by the offset.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pianotx.config import AlignConfig
from pianotx.features import frame_energy
from pianotx.labels import active_counts
from pianotx.midi import Notes


@dataclass(frozen=True)
class Alignment:
    offset_frames: int  # audio lateness in frames (positive: audio later than MIDI)
    confidence: float  # Pearson correlation at the best lag, in [-1, 1]


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    x = x - x.mean()
    y = y - y.mean()
    denom = np.sqrt((x * x).sum() * (y * y).sum())
    return float((x * y).sum() / denom) if denom > 0 else 0.0


def lagged_correlations(energy: np.ndarray, activity: np.ndarray, max_lag: int) -> np.ndarray:
    """Pearson correlation of ``energy[t]`` with ``activity[t - lag]`` for each lag.

    Args:
        energy: (n,) per-frame audio energy.
        activity: (m,) per-frame active-note counts, m >= n + max_lag so negative lags
            (audio early) still see the MIDI ahead.
        max_lag: lags -max_lag..max_lag are tried.

    Returns:
        (2 * max_lag + 1,) correlations; index ``lag + max_lag``. Lags that would leave
        fewer than 2 overlapping frames score 0.
    """
    n = len(energy)
    padded = np.concatenate([np.zeros(max_lag), activity, np.zeros(max(0, n + max_lag - len(activity)))])
    out = np.zeros(2 * max_lag + 1)
    for i, lag in enumerate(range(-max_lag, max_lag + 1)):
        lo = max(lag, 0)  # frames of audio before the MIDI starts have no counterpart
        if n - lo < 2:
            continue
        # activity[t - lag] lives at padded[t - lag + max_lag]
        out[i] = _pearson(energy[lo:], padded[lo - lag + max_lag : n - lag + max_lag])
    return out


def estimate_offset(features: np.ndarray, notes: Notes, frame_rate: float, config: AlignConfig) -> Alignment:
    """Find the constant offset between audio features and MIDI notes.

    Args:
        features: (n_frames, n_bins) features of the audio.
        notes: the MIDI's notes, in MIDI time.
        frame_rate: frames per second of ``features``.
        config: lag bound (seconds).
    """
    max_lag = max(1, int(round(config.max_lag_seconds * frame_rate)))
    energy = frame_energy(features)
    activity = active_counts(notes, len(energy) + max_lag, frame_rate)
    corr = lagged_correlations(energy, activity, max_lag)
    best = int(np.argmax(corr))
    return Alignment(offset_frames=best - max_lag, confidence=float(corr[best]))
