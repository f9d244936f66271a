"""Seeded acoustic augmentation of rendered audio, recorded so that it can be redone.

A rendering from a sampled piano is dry, close and noiseless; recordings are not. Each
augmented rendering passes through a chain of effects, each applied with a probability
and random parameters drawn from a :class:`AugmentConfig`:

1. ``reverb``: a simulated shoebox room (size, absorption, source and microphone
   positions), see :func:`room_ir`;
2. ``eq``: a low shelf, a high shelf and 1-2 peaks (as Onsets and Frames: peaks at
   32-4096 Hz, -10..+5 dB), as causal biquads, see :func:`biquad`;
3. ``compress``: a mild feed-forward compressor with an RMS detector;
4. ``gain``: a level change in dB;
5. ``noise``: white or pink noise at a signal-to-noise ratio.

Finally, a peak above :data:`PEAK` is scaled down to it (never clipped).

:func:`augment` draws the parameters and returns the processed audio with a *record*, a
plain JSON-able dict of exactly what was applied::

    {"version": 1, "steps": [
        {"kind": "reverb", "room": [7.2, 5.1, 3.0], "source": [2.1, 1.8, 1.2],
         "mic": [3.0, 3.2, 1.6], "absorption": 0.31, "tilt": 0.12, "order": 3,
         "seed": 1234},
        {"kind": "eq", "bands": [{"type": "peak", "freq": 440.0, "gain_db": -6.0, "q": 2.0}]},
        {"kind": "compress", "threshold_db": -18.0, "ratio": 2.0, "time_ms": 30.0},
        {"kind": "gain", "gain_db": -3.0},
        {"kind": "noise", "color": "pink", "snr_db": 35.0, "seed": 99}]}

:func:`apply_record` redoes it from the record alone (random signals come from the
recorded seeds), so a manifest entry holding the record is enough to reproduce a piece.
The record holds only inputs: derived values (the room's RT60, the final peak scale)
are recomputed.

Timing is preserved, so the audio stays aligned with its MIDI: every effect is causal
with zero latency (the room's direct path is at sample 0; the EQ's biquads respond from
the input sample on; the compressor and gain only scale samples), so no sound starts
earlier or later than in the rendering; a narrow EQ boost or a room only adds sound
after it. The output has the input's length (the reverberant tail beyond the end is
cut, as the rendering's own tail is).

Not included: pitch shifting (Onsets and Frames used +-0.1 semitone). Resampling changes
the duration (0.6% for 0.1 semitone: 0.26 s over 45 s), so it would move the labels; a
time-preserving shift (phase vocoder) smears onsets over its window, tens of ms, and
costs more than this whole chain. Detuning belongs in the renderer (a pitch bend or a
tuning in the synthesiser), where it is exact.

Everything here is numpy and scipy: a room simulator such as pyroomacoustics computes
the image sources to high order (0.07-0.16 s per room on one core, before convolving)
with frequency-independent walls, where :func:`room_ir` takes ~5 ms (median) and
decays each octave band at its own rate; and a record must not depend on another
package's version to be redone.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

RECORD_VERSION = 1
PEAK = 0.99  # output peaks above this are scaled down to it (as write_wav does)
SPEED_OF_SOUND = 343.0  # m/s
BANDS_HZ = (125.0, 250.0, 500.0, 1000.0, 2000.0, 4000.0, 8000.0)  # reverb tail octave bands
MAX_IR_SECONDS = 4.0  # room responses are cut here (reached only by near-bare walls)
WALL_MARGIN = 0.5  # m: source and microphone stay this far from every wall
LOW_SHELF_HZ = (60.0, 250.0)
HIGH_SHELF_HZ = (2000.0, 6000.0)
SHELF_Q = 1.0 / math.sqrt(2.0)  # RBJ shelf slope S = 1
PINK_FLOOR_HZ = 20.0  # pink noise is flat below this (no DC build-up)
KINDS = ("reverb", "eq", "compress", "gain", "noise")  # the order effects are applied in

Step = dict[str, Any]


@dataclass(frozen=True)
class AugmentConfig:
    """How renderings are augmented. Plain fields, so ``config.from_dict`` builds it.

    Each effect has a probability (``reverb``, ``eq``, ...: 0 never, 1 always) and
    ranges ``(low, high)`` its parameters are drawn from, uniformly unless noted.

    Attributes:
        enabled: False returns every input unchanged (and an empty record).
        variants: augmented renderings wanted per piece (used by the corpus renderer).
        keep_dry: also keep the unprocessed rendering (used by the corpus renderer).
        reverb: probability of a room.
        room_size: floor length and width, m (each drawn alone).
        room_height: m.
        absorption: mean absorption coefficient of the walls at 1 kHz; with the room's
            size it sets the RT60 (Sabine): 0.15 gives ~0.5 s in a 3 x 3 x 2.5 m room
            and ~1.9 s in a 20 x 15 x 6 m hall; 0.6 gives 0.1 s and 0.5 s.
        reverb_tilt: RT60 at band ``f`` is the 1 kHz value times ``(f / 1000) ** -tilt``
            (walls absorb more at high frequencies).
        distance: source to microphone, m (less where the room is too small); with the
            room it sets the direct-to-reverberant ratio.
        eq: probability of an EQ.
        eq_peaks: peaks per EQ, drawn from 1..eq_peaks (0: shelves only).
        eq_freq: peak centre frequency, Hz (log-uniform).
        eq_gain_db: peak gain, dB.
        eq_q: peak quality factor.
        shelf_gain_db: gain of the low shelf (corner 60-250 Hz) and of the high shelf
            (corner 2-6 kHz), dB, each drawn alone.
        compress: probability of compression.
        compress_threshold_db: threshold, dB relative to the loudest detector level.
        compress_ratio: compression ratio above the threshold.
        compress_ms: time constant of the RMS level detector, ms.
        gain: probability of a level change.
        gain_db: level change, dB (a peak pushed over :data:`PEAK` is scaled back).
        noise: probability of added noise.
        noise_snr_db: signal-to-noise ratio, dB (mean power over the whole clip).
        pink: probability that the noise is pink (otherwise white).
    """

    enabled: bool = True
    variants: int = 1
    keep_dry: bool = True
    reverb: float = 0.7
    room_size: tuple[float, float] = (3.0, 20.0)
    room_height: tuple[float, float] = (2.5, 6.0)
    absorption: tuple[float, float] = (0.15, 0.6)
    reverb_tilt: tuple[float, float] = (0.0, 0.3)
    distance: tuple[float, float] = (0.5, 3.0)
    eq: float = 0.8
    eq_peaks: int = 2
    eq_freq: tuple[float, float] = (32.0, 4096.0)
    eq_gain_db: tuple[float, float] = (-10.0, 5.0)
    eq_q: tuple[float, float] = (1.0, 3.0)
    shelf_gain_db: tuple[float, float] = (-6.0, 6.0)
    compress: float = 0.3
    compress_threshold_db: tuple[float, float] = (-24.0, -12.0)
    compress_ratio: tuple[float, float] = (1.5, 3.0)
    compress_ms: tuple[float, float] = (10.0, 50.0)
    gain: float = 0.8
    gain_db: tuple[float, float] = (-12.0, 3.0)
    noise: float = 0.5
    noise_snr_db: tuple[float, float] = (20.0, 50.0)
    pink: float = 0.5

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(f.default, tuple):
                _set(self, f.name, _range(f.name, value))
            elif isinstance(f.default, float):
                _set(self, f.name, _probability(f.name, value))
        for name in ("variants", "eq_peaks"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value) or value < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
            _set(self, name, int(value))
        _check_positive(self)


PRESETS: dict[str, dict[str, Any]] = {
    "off": {"enabled": False},
    "light": {
        "reverb": 0.5, "absorption": (0.3, 0.6), "distance": (0.5, 1.5), "eq": 0.6, "eq_gain_db": (-6.0, 3.0),
        "shelf_gain_db": (-3.0, 3.0), "compress": 0.2, "gain_db": (-6.0, 0.0), "noise": 0.3,
        "noise_snr_db": (35.0, 60.0),
    },
    "default": {},
    "strong": {
        "reverb": 0.9, "absorption": (0.1, 0.5), "distance": (1.0, 5.0), "eq": 1.0, "eq_gain_db": (-12.0, 6.0),
        "shelf_gain_db": (-9.0, 6.0), "compress": 0.5, "compress_ratio": (2.0, 4.0), "noise": 0.8,
        "noise_snr_db": (10.0, 35.0),
    },
}  # fmt: skip
"""Named strengths: :class:`AugmentConfig` fields that differ from the defaults."""


def preset(name: str) -> AugmentConfig:
    """The :class:`AugmentConfig` of a :data:`PRESETS` name (ValueError naming the choices)."""
    if name not in PRESETS:
        raise ValueError(f"unknown augmentation preset {name!r}; expected one of {', '.join(PRESETS)}")
    return AugmentConfig(**PRESETS[name])


def _set(config: AugmentConfig, name: str, value: Any) -> None:
    object.__setattr__(config, name, value)


def _range(name: str, value: Any) -> tuple[float, float]:
    """``value`` as a (low, high) pair of floats; ValueError naming ``name`` otherwise."""
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a pair [low, high], got {value!r}") from None
    if not (math.isfinite(low) and math.isfinite(high)) or low > high:
        raise ValueError(f"{name} must be finite with low <= high, got {value!r}")
    return low, high


def _probability(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], got {value!r}")
    return float(value)


def _check_positive(c: AugmentConfig) -> None:
    """Ranges whose values must be positive (sizes, frequencies, ratios, times)."""
    for name in ("room_size", "room_height", "distance", "eq_freq", "eq_q", "compress_ms"):
        if getattr(c, name)[0] <= 0:
            raise ValueError(f"{name} must be > 0, got {getattr(c, name)!r}")
    if c.room_size[0] <= 2 * WALL_MARGIN or c.room_height[0] <= 2 * WALL_MARGIN:
        raise ValueError(f"room_size and room_height must exceed {2 * WALL_MARGIN} m")
    if not (0 < c.absorption[0] and c.absorption[1] < 1):
        raise ValueError(f"absorption must lie in (0, 1), got {c.absorption!r}")
    if c.compress_ratio[0] < 1:
        raise ValueError(f"compress_ratio must be >= 1, got {c.compress_ratio!r}")


# ---------------------------------------------------------------- entry points


def variant_rng(seed: int, name: str, variant: int) -> np.random.Generator:
    """The generator for augmented rendering ``variant`` of the piece called ``name``.

    Seeded by the run's seed, the name and the variant number (not the piece's
    position), and independent of :func:`pianotx.render.common.piece_rng`'s stream.
    """
    return np.random.default_rng([seed, zlib.crc32(name.encode()), variant, 0xA06])


def augment(
    audio: np.ndarray, sample_rate: int, rng: np.random.Generator, config: AugmentConfig
) -> tuple[np.ndarray, dict[str, Any]]:
    """Draw an augmentation from ``config`` with ``rng`` and apply it.

    Args:
        audio: (n,) mono samples, float.
        sample_rate: Hz.
        rng: the source of every random choice (see :func:`variant_rng`).
        config: what may be applied, how likely and how strongly.

    Returns:
        (n,) float32 audio (peak <= :data:`PEAK` when anything was applied; the input
        itself when nothing was), and the record of what was applied (module docstring).
    """
    record = draw_record(rng, config)
    return apply_record(audio, sample_rate, record), record


def draw_record(rng: np.random.Generator, config: AugmentConfig) -> dict[str, Any]:
    """The record of one augmentation drawn from ``config``; nothing is applied."""
    steps: list[Step] = []
    if config.enabled:
        for kind in KINDS:
            if rng.random() < getattr(config, kind):
                steps.append({"kind": kind, **_DRAW[kind](rng, config)})
    return {"version": RECORD_VERSION, "steps": steps}


def apply_record(audio: np.ndarray, sample_rate: int, record: dict[str, Any]) -> np.ndarray:
    """Apply the augmentation described by ``record`` (from :func:`augment`) to ``audio``.

    Args:
        audio: (n,) mono samples, float.
        sample_rate: Hz.
        record: a record as :func:`augment` returns it (or read back from JSON).

    Returns:
        (n,) float32; ``audio`` itself (as float32) when the record has no steps.

    Raises:
        ValueError: ``audio`` is not one-dimensional, or the record is malformed (an
            unknown version or kind, a missing or wrong parameter).
    """
    x = np.asarray(audio, dtype=np.float32)
    if x.ndim != 1:
        raise ValueError(f"augmentation needs mono audio of shape (n,), got shape {x.shape}")
    steps = _record_steps(record)
    if not steps or not x.size:
        return x
    y = x.astype(np.float64)
    for step in steps:
        y = _apply_step(y, sample_rate, step)
    return limit_peak(y).astype(np.float32)


def _record_steps(record: dict[str, Any]) -> list[Step]:
    if not isinstance(record, dict) or record.get("version") != RECORD_VERSION:
        raise ValueError(f"augmentation record: expected version {RECORD_VERSION}, got {record!r:.80}")
    steps = record.get("steps")
    if not isinstance(steps, list) or not all(isinstance(s, dict) for s in steps):
        raise ValueError("augmentation record: 'steps' must be a list of objects")
    return steps


def _apply_step(y: np.ndarray, sample_rate: int, step: Step) -> np.ndarray:
    kind = step.get("kind")
    if kind not in _APPLY:
        raise ValueError(f"augmentation record: unknown kind {kind!r}; expected one of {', '.join(KINDS)}")
    try:
        return _APPLY[kind](y, sample_rate, step)
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"augmentation record: bad {kind} step {step!r:.120}: {exc}") from None


def limit_peak(y: np.ndarray, peak: float = PEAK) -> np.ndarray:
    """``y`` scaled down so that its largest magnitude is ``peak`` (unchanged if below)."""
    top = float(np.max(np.abs(y))) if y.size else 0.0
    return y * (peak / top) if top > peak else y


# ---------------------------------------------------------------- drawing parameters


def _uniform(rng: np.random.Generator, bounds: tuple[float, float], digits: int = 4) -> float:
    return round(float(rng.uniform(*bounds)), digits)


def _log_uniform(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    low, high = np.log(bounds)
    return round(float(np.exp(rng.uniform(low, high))), 2)


def _seed(rng: np.random.Generator) -> int:
    return int(rng.integers(2**31))


def draw_reverb(rng: np.random.Generator, c: AugmentConfig) -> Step:
    """A room: size, wall absorption, source and microphone positions, tail seed."""
    room = np.array([_uniform(rng, c.room_size, 2), _uniform(rng, c.room_size, 2), _uniform(rng, c.room_height, 2)])
    source = rng.uniform(WALL_MARGIN, room - WALL_MARGIN)
    mic = place_mic(source, room, rng.standard_normal(3), _uniform(rng, c.distance))
    return {
        "room": room.tolist(), "source": np.round(source, 3).tolist(), "mic": np.round(mic, 3).tolist(),
        "absorption": _uniform(rng, c.absorption), "tilt": _uniform(rng, c.reverb_tilt),
        "order": 3, "seed": _seed(rng),
    }  # fmt: skip


def place_mic(source: np.ndarray, room: np.ndarray, offset: np.ndarray, distance: float) -> np.ndarray:
    """The microphone ``distance`` m from ``source`` in the direction of ``offset`` (3,),
    kept :data:`WALL_MARGIN` from the walls: a component that would leave the room is
    turned round, and what still does not fit is cut at the margin (so the distance may
    be shorter, never zero)."""
    low, high = WALL_MARGIN, room - WALL_MARGIN
    step = offset / np.linalg.norm(offset) * distance
    target = source + step
    step = np.where((target < low) | (target > high), -step, step)
    return np.clip(source + step, low, high)


def draw_eq(rng: np.random.Generator, c: AugmentConfig) -> Step:
    """Low shelf, high shelf, then 1..eq_peaks peaks."""
    bands = [
        {"type": "low_shelf", "freq": _log_uniform(rng, LOW_SHELF_HZ), "gain_db": _uniform(rng, c.shelf_gain_db, 2),
         "q": SHELF_Q},
        {"type": "high_shelf", "freq": _log_uniform(rng, HIGH_SHELF_HZ), "gain_db": _uniform(rng, c.shelf_gain_db, 2),
         "q": SHELF_Q},
    ]  # fmt: skip
    peaks = int(rng.integers(1, c.eq_peaks + 1)) if c.eq_peaks else 0
    for _ in range(peaks):
        bands.append({"type": "peak", "freq": _log_uniform(rng, c.eq_freq), "gain_db": _uniform(rng, c.eq_gain_db, 2),
                      "q": _uniform(rng, c.eq_q, 3)})  # fmt: skip
    return {"bands": bands}


def draw_compress(rng: np.random.Generator, c: AugmentConfig) -> Step:
    return {
        "threshold_db": _uniform(rng, c.compress_threshold_db, 2),
        "ratio": _uniform(rng, c.compress_ratio, 3),
        "time_ms": _uniform(rng, c.compress_ms, 2),
    }


def draw_gain(rng: np.random.Generator, c: AugmentConfig) -> Step:
    return {"gain_db": _uniform(rng, c.gain_db, 2)}


def draw_noise(rng: np.random.Generator, c: AugmentConfig) -> Step:
    color = "pink" if rng.random() < c.pink else "white"
    return {"color": color, "snr_db": _uniform(rng, c.noise_snr_db, 2), "seed": _seed(rng)}


# ---------------------------------------------------------------- reverb


def _surface(room: np.ndarray) -> float:
    lx, ly, lz = room
    return float(2.0 * (lx * ly + lx * lz + ly * lz))


def sabine_rt60(room: np.ndarray, absorption: float) -> float:
    """Reverberation time, s, of a shoebox room (Sabine: 0.161 V / (S a)).

    Args:
        room: (3,) length, width, height, m.
        absorption: mean absorption coefficient of the walls, in (0, 1).
    """
    return 0.161 * float(np.prod(room)) / (_surface(room) * absorption)


def reverberant_ratio(room: np.ndarray, absorption: float, distance: float) -> float:
    """Reverberant-to-direct energy ratio ``(d / r_c) ** 2`` of diffuse-field theory:
    ``r_c = sqrt(R / (16 pi))`` is the critical distance, ``R = S a / (1 - a)`` the room
    constant, ``d`` the source-microphone distance, m."""
    critical_sq = _surface(room) * absorption / (1.0 - absorption) / (16.0 * math.pi)
    return distance**2 / critical_sq


def image_sources(room: np.ndarray, source: np.ndarray, order: int) -> tuple[np.ndarray, np.ndarray]:
    """Mirror images of ``source`` in the walls of a shoebox room (Allen and Berkley).

    Along each axis of length L the images lie at ``2 k L + s`` (an even number of
    reflections, ``|2k|``) and ``2 k L - s`` (``|2k - 1|``).

    Args:
        room: (3,) room dimensions, m.
        source: (3,) source position inside the room, m.
        order: largest total number of reflections kept.

    Returns:
        (m, 3) image positions, m, and (m,) int reflection counts, the direct path
        (count 0) included.
    """
    k = np.arange(-order, order + 1)
    axis_pos, axis_count = [], []
    for length, s in zip(room, source):
        axis_pos.append(np.concatenate([2 * k * length + s, 2 * k * length - s]))
        axis_count.append(np.concatenate([np.abs(2 * k), np.abs(2 * k - 1)]))
    grids = np.meshgrid(*axis_pos, indexing="ij")
    counts = np.sum(np.meshgrid(*axis_count, indexing="ij"), axis=0)
    keep = counts <= order
    return np.stack([g[keep] for g in grids], axis=1), counts[keep]


def early_reflections(
    room: np.ndarray, source: np.ndarray, mic: np.ndarray, absorption: float, order: int, sample_rate: int
) -> tuple[np.ndarray, np.ndarray]:
    """Delays (samples after the direct path) and gains (direct path = 1) of the image
    sources up to ``order`` reflections: gain ``d / r * sqrt(1 - a) ** reflections``
    for an image at distance ``r`` when the direct path is ``d``.

    Returns:
        (m,) int delays >= 0 and (m,) float gains, the direct path (0, 1.0) first.
    """
    images, counts = image_sources(room, source, order)
    dist = np.linalg.norm(images - mic, axis=1)
    direct = float(np.linalg.norm(source - mic))
    delays = np.round((dist - direct) / SPEED_OF_SOUND * sample_rate).astype(np.int64)
    gains = direct / dist * np.sqrt(1.0 - absorption) ** counts
    first = np.argsort(counts, kind="stable")
    return delays[first], gains[first]


def band_weights(freqs: np.ndarray, centres: tuple[float, ...] = BANDS_HZ) -> np.ndarray:
    """Crossover weights of octave bands: (len(centres), len(freqs)), summing to 1 at
    every frequency (linear on a log-frequency axis between adjacent centres)."""
    logf = np.log2(np.maximum(freqs, 1.0))
    logc = np.log2(centres)
    return np.stack([np.interp(logf, logc, np.eye(len(centres))[b]) for b in range(len(centres))])


def late_tail(rt60s: np.ndarray, start: float, mixing: float, length: int, sample_rate: int, seed: int) -> np.ndarray:
    """Diffuse reverberation: Gaussian noise split into octave bands (:data:`BANDS_HZ`),
    each decaying by 60 dB over its own RT60, faded in linearly from ``start`` over
    ``mixing`` seconds; unit total energy.

    Args:
        rt60s: (len(BANDS_HZ),) reverberation time per band, s.
        start, mixing: seconds after the direct path.
        length: samples.
        sample_rate: Hz.
        seed: seeds the noise.

    Returns:
        (length,) float64, zero before ``start``.
    """
    spectrum = np.fft.rfft(np.random.default_rng(seed).standard_normal(length))
    weights = band_weights(np.fft.rfftfreq(length, 1.0 / sample_rate))
    t = np.arange(length) / sample_rate
    tail = np.zeros(length)
    for weight, rt60 in zip(weights, rt60s):
        tail += np.fft.irfft(spectrum * weight, length) * 10.0 ** (-3.0 * t / rt60)
    tail *= np.clip((t - start) / mixing, 0.0, 1.0)
    energy = float(np.sum(tail**2))
    return tail / math.sqrt(energy) if energy > 0 else tail


def room_ir(step: Step, sample_rate: int) -> np.ndarray:
    """Impulse response of the room a reverb step describes, direct path at sample 0.

    A hybrid of the two usual simulations, in numpy: exact image sources (up to
    ``order`` reflections, frequency-independent walls) for the early reflections, and
    a statistical late tail (:func:`late_tail`) with the room's Sabine RT60 per octave
    band, starting at the first reflection and fully diffuse after Polack's mixing time
    (sqrt(V) ms), with energy :func:`reverberant_ratio` times the direct sound's. The
    response is as long as the longest band's RT60 (at most :data:`MAX_IR_SECONDS`).

    Args:
        step: a ``reverb`` record step (module docstring).
        sample_rate: Hz.

    Returns:
        (length,) float64; sample 0 is 1.0 (the direct path, delay removed).
    """
    room, source, mic = (np.asarray(step[k], dtype=np.float64) for k in ("room", "source", "mic"))
    a = float(step["absorption"])
    rt60s = sabine_rt60(room, a) * (np.asarray(BANDS_HZ) / 1000.0) ** -float(step["tilt"])
    length = max(int(math.ceil(min(rt60s.max(), MAX_IR_SECONDS) * sample_rate)), 1)
    delays, gains = early_reflections(room, source, mic, a, int(step["order"]), sample_rate)
    start = float(delays[1:].min()) / sample_rate if len(delays) > 1 else 0.0
    mixing = math.sqrt(float(np.prod(room))) / 1000.0
    tail = late_tail(rt60s, start, mixing, length, sample_rate, int(step["seed"]))
    ir = tail * math.sqrt(reverberant_ratio(room, a, float(np.linalg.norm(source - mic))))
    inside = delays < length
    np.add.at(ir, delays[inside], gains[inside])
    return ir


def apply_reverb(y: np.ndarray, sample_rate: int, step: Step) -> np.ndarray:
    """``y`` convolved with :func:`room_ir`, cut to ``y``'s length (no added latency)."""
    from scipy.signal import oaconvolve

    return oaconvolve(y, room_ir(step, sample_rate))[: len(y)]


# ---------------------------------------------------------------- EQ


def biquad(kind: str, freq: float, gain_db: float, q: float, sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
    """RBJ Audio EQ Cookbook biquad: ``(b, a)``, each (3,), ``a[0] = 1``, for ``kind`` one of
    ``peak`` (``gain_db`` at ``freq``), ``low_shelf`` / ``high_shelf`` (``gain_db``
    below / above ``freq``, half of it at ``freq``)."""
    amp = 10.0 ** (gain_db / 40.0)
    w0 = 2.0 * math.pi * freq / sample_rate
    cos, alpha = math.cos(w0), math.sin(w0) / (2.0 * q)
    if kind == "peak":
        b = np.array([1 + alpha * amp, -2 * cos, 1 - alpha * amp])
        a = np.array([1 + alpha / amp, -2 * cos, 1 - alpha / amp])
        return b / a[0], a / a[0]
    if kind not in ("low_shelf", "high_shelf"):
        raise ValueError(f"unknown EQ band type {kind!r}; expected peak, low_shelf or high_shelf")
    sign = 1.0 if kind == "low_shelf" else -1.0
    root = 2.0 * math.sqrt(amp) * alpha
    b = amp * np.array([(amp + 1) - sign * (amp - 1) * cos + root, sign * 2 * ((amp - 1) - sign * (amp + 1) * cos),
                        (amp + 1) - sign * (amp - 1) * cos - root])  # fmt: skip
    a = np.array([(amp + 1) + sign * (amp - 1) * cos + root, -sign * 2 * ((amp - 1) + sign * (amp + 1) * cos),
                  (amp + 1) + sign * (amp - 1) * cos - root])  # fmt: skip
    return b / a[0], a / a[0]


def _power_response(coeffs: np.ndarray, cos1: np.ndarray, cos2: np.ndarray) -> np.ndarray:
    """|c0 + c1 z^-1 + c2 z^-2|^2 on the unit circle, from cos(w) and cos(2w)."""
    c0, c1, c2 = coeffs
    return c0 * c0 + c1 * c1 + c2 * c2 + 2.0 * (c0 * c1 + c1 * c2) * cos1 + 2.0 * c0 * c2 * cos2


def eq_gain(bands: list[dict[str, Any]], freqs: np.ndarray, sample_rate: int) -> np.ndarray:
    """Magnitude response (linear) of a chain of :func:`biquad` bands at ``freqs`` (Hz)."""
    w = 2.0 * np.pi * np.asarray(freqs, dtype=np.float64) / sample_rate
    cos1, cos2 = np.cos(w), np.cos(2.0 * w)
    power = np.ones_like(w)
    for band in bands:
        b, a = biquad(band["type"], float(band["freq"]), float(band["gain_db"]), float(band["q"]), sample_rate)
        power *= _power_response(b, cos1, cos2) / _power_response(a, cos1, cos2)
    return np.sqrt(power)


def apply_eq(y: np.ndarray, sample_rate: int, step: Step) -> np.ndarray:
    """``y`` through the step's :func:`biquad` bands in turn (causal, minimum phase, as
    analogue EQs: the response starts at the input sample, so no sound comes early)."""
    from scipy.signal import sosfilt

    sos = [np.concatenate(biquad(band["type"], float(band["freq"]), float(band["gain_db"]), float(band["q"]),
                                 sample_rate)) for band in step["bands"]]  # fmt: skip
    return sosfilt(np.array(sos).reshape(-1, 6), y) if sos else y


# ---------------------------------------------------------------- dynamics, level, noise


def apply_compress(y: np.ndarray, sample_rate: int, step: Step) -> np.ndarray:
    """Feed-forward compression: the level is an RMS detector (one-pole smoothing of
    ``y**2`` with time constant ``time_ms``); above ``threshold_db`` (relative to the
    detector's maximum) it is reduced by ``1 - 1 / ratio`` dB per dB. Only gains <= 1
    multiply the samples, so nothing moves in time."""
    from scipy.signal import lfilter

    pole = math.exp(-1000.0 / (float(step["time_ms"]) * sample_rate))
    level = lfilter([1.0 - pole], [1.0, -pole], y * y)
    level_db = 10.0 * np.log10(np.maximum(level, 1e-20))
    over = level_db - (level_db.max() + float(step["threshold_db"]))
    reduction_db = np.maximum(over, 0.0) * (1.0 - 1.0 / float(step["ratio"]))
    return y * 10.0 ** (-reduction_db / 20.0)


def apply_gain(y: np.ndarray, sample_rate: int, step: Step) -> np.ndarray:
    return y * 10.0 ** (float(step["gain_db"]) / 20.0)


def make_noise(color: str, length: int, sample_rate: int, seed: int) -> np.ndarray:
    """Unit-power noise: ``white`` (flat) or ``pink`` (power falling 3 dB per octave
    above :data:`PINK_FLOOR_HZ`, flat below it).

    Returns:
        (length,) float64 with mean square 1 (zeros for length 0).
    """
    rng = np.random.default_rng(seed)
    if color == "white":
        noise = rng.standard_normal(length)
    elif color == "pink":
        spectrum = np.fft.rfft(rng.standard_normal(length))
        freqs = np.fft.rfftfreq(length, 1.0 / sample_rate)
        noise = np.fft.irfft(spectrum / np.sqrt(np.maximum(freqs, PINK_FLOOR_HZ)), length)
    else:
        raise ValueError(f"unknown noise color {color!r}; expected white or pink")
    power = float(np.mean(noise**2)) if length else 0.0
    return noise / math.sqrt(power) if power > 0 else noise


def apply_noise(y: np.ndarray, sample_rate: int, step: Step) -> np.ndarray:
    """``y`` plus noise whose power is ``snr_db`` below ``y``'s mean power."""
    power = float(np.mean(y * y))
    noise = make_noise(step["color"], len(y), sample_rate, int(step["seed"]))
    return y + noise * math.sqrt(power * 10.0 ** (-float(step["snr_db"]) / 10.0))


_DRAW: dict[str, Callable[[np.random.Generator, AugmentConfig], Step]] = {
    "reverb": draw_reverb, "eq": draw_eq, "compress": draw_compress, "gain": draw_gain, "noise": draw_noise,
}  # fmt: skip
_APPLY: dict[str, Callable[[np.ndarray, int, Step], np.ndarray]] = {
    "reverb": apply_reverb, "eq": apply_eq, "compress": apply_compress, "gain": apply_gain, "noise": apply_noise,
}  # fmt: skip
