"""THE feature function: audio samples -> constant-Q log-magnitude frames.

Used by the dataset builder and by transcription alike, with the :class:`FeatureConfig`
a model carries, so training and inference features cannot drift apart.
"""

from __future__ import annotations

import numpy as np

from pianotx.config import FeatureConfig


def compute_features(samples: np.ndarray, config: FeatureConfig) -> np.ndarray:
    """Constant-Q log magnitude of mono audio.

    Args:
        samples: (n_samples,) float32 at ``config.sample_rate``.
        config: feature settings.

    Returns:
        (n_frames, n_bins) float32, n_frames = 1 + n_samples // hop_length; each value is
        (clip(dB, -top_db) + top_db) / top_db, so 0 is silence and full scale is ~1.
    """
    import librosa

    samples = np.asarray(samples, dtype=np.float32)
    n_frames = config.n_frames(len(samples))
    if not np.any(samples):
        return np.zeros((n_frames, config.n_bins), np.float32)
    cqt = librosa.cqt(
        samples,
        sr=config.sample_rate,
        hop_length=config.hop_length,
        fmin=config.fmin,
        n_bins=config.n_bins,
        bins_per_octave=config.bins_per_octave,
    )
    return magnitude_to_features(np.abs(cqt).T[:n_frames], config)


def magnitude_to_features(magnitude: np.ndarray, config: FeatureConfig) -> np.ndarray:
    """Map CQT magnitudes (frames, bins) to the [0, ~1] log scale described above."""
    floor = 10.0 ** (-config.top_db / 20.0)
    db = 20.0 * np.log10(np.maximum(magnitude, floor))
    return ((db + config.top_db) / config.top_db).astype(np.float32)
