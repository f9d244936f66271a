"""Seeded augmentation: reproducible, exact levels, no latency, records that redo it."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy.signal import hilbert, welch

from pianotx.config import ConfigError, from_dict
from pianotx.render import augment as aug

SR = 16000
ALL_ON = aug.AugmentConfig(reverb=1.0, eq=1.0, compress=1.0, gain=1.0, noise=1.0)


def _only(kind: str, **ranges: object) -> aug.AugmentConfig:
    """A config that always applies ``kind`` and nothing else."""
    probabilities = {k: (1.0 if k == kind else 0.0) for k in aug.KINDS}
    return aug.AugmentConfig(**probabilities, **ranges)  # type: ignore[arg-type]


def _music(seconds: float = 2.0, seed: int = 0) -> np.ndarray:
    """Piano-like test audio: decaying harmonic tones at random onsets, float32."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    x = np.zeros_like(t)
    for onset in rng.uniform(0.1, seconds - 0.3, 6):
        f0 = 55.0 * 2 ** rng.uniform(0, 5)
        tone = sum(np.sin(2 * np.pi * f0 * h * (t - onset)) / h for h in (1, 2, 3, 4))
        x += np.where(t >= onset, tone * np.exp(-(t - onset) * 3.0), 0.0) * 0.1
    return x.astype(np.float32)


def _click(seconds: float = 1.5, at: float = 0.5) -> tuple[np.ndarray, int]:
    x = np.zeros(int(seconds * SR), np.float32)
    x[int(at * SR)] = 0.5
    return x, int(at * SR)


def _sine(freq: float, seconds: float = 2.0, amplitude: float = 0.2) -> np.ndarray:
    return (amplitude * np.sin(2 * np.pi * freq * np.arange(int(seconds * SR)) / SR)).astype(np.float32)


def _level_db(x: np.ndarray) -> float:
    return 10 * math.log10(float(np.mean(np.asarray(x, np.float64) ** 2)))


def _middle(x: np.ndarray) -> np.ndarray:
    return x[len(x) // 4 : 3 * len(x) // 4]


# ---------------------------------------------------------------- reproducibility


def test_same_seed_gives_identical_output_and_record() -> None:
    x = _music()
    y1, r1 = aug.augment(x, SR, np.random.default_rng(7), ALL_ON)
    y2, r2 = aug.augment(x, SR, np.random.default_rng(7), ALL_ON)
    assert r1 == r2
    assert np.array_equal(y1, y2)
    y3, r3 = aug.augment(x, SR, np.random.default_rng(8), ALL_ON)
    assert r3 != r1 and not np.allclose(y3, y1)


@pytest.mark.parametrize("seed", range(4))
def test_apply_record_reproduces_augment_after_json(seed: int) -> None:
    x = _music(seed=seed)
    y, record = aug.augment(x, SR, np.random.default_rng(seed), aug.AugmentConfig())
    again = aug.apply_record(x, SR, json.loads(json.dumps(record)))
    np.testing.assert_allclose(again, y, rtol=0, atol=1e-7)


@pytest.mark.parametrize("seed", range(6))
def test_records_are_plain_json(seed: int) -> None:
    _, record = aug.augment(_music(seconds=0.5), SR, np.random.default_rng(seed), ALL_ON)
    assert json.loads(json.dumps(record)) == record
    assert [s["kind"] for s in record["steps"]] == list(aug.KINDS)
    assert record["version"] == aug.RECORD_VERSION


def test_draws_follow_the_probabilities() -> None:
    config = aug.AugmentConfig(reverb=0.5, eq=0.0, compress=1.0, gain=0.0, noise=0.0)
    kinds = [[s["kind"] for s in aug.draw_record(np.random.default_rng(i), config)["steps"]] for i in range(200)]
    assert all(k in (["compress"], ["reverb", "compress"]) for k in kinds)
    assert 70 < sum("reverb" in k for k in kinds) < 130


def test_variant_rng_depends_on_seed_name_and_variant() -> None:
    first = aug.variant_rng(0, "bach__FluidR3", 1).random(3)
    assert np.array_equal(first, aug.variant_rng(0, "bach__FluidR3", 1).random(3))
    for other in (aug.variant_rng(1, "bach__FluidR3", 1), aug.variant_rng(0, "bach__Tim", 1),
                  aug.variant_rng(0, "bach__FluidR3", 2)):  # fmt: skip
        assert not np.array_equal(first, other.random(3))


def test_disabled_config_returns_the_input_unchanged() -> None:
    x = _music()
    y, record = aug.augment(x, SR, np.random.default_rng(0), aug.AugmentConfig(enabled=False))
    assert y is x
    assert record == {"version": aug.RECORD_VERSION, "steps": []}
    assert aug.apply_record(x, SR, record) is x


# ---------------------------------------------------------------- shape, level, timing


@pytest.mark.parametrize("seed", range(5))
def test_length_dtype_and_peak(seed: int) -> None:
    x = _music(seconds=1.3, seed=seed) * 100  # peaks far above full scale
    y, record = aug.augment(x, SR, np.random.default_rng(seed), ALL_ON)
    assert y.shape == x.shape and y.dtype == np.float32
    assert np.abs(y).max() == pytest.approx(aug.PEAK, abs=1e-6)


def test_peak_is_scaled_not_clipped() -> None:
    x = _sine(440.0, seconds=0.5, amplitude=0.5)
    y = aug.apply_record(x, SR, {"version": 1, "steps": [{"kind": "gain", "gain_db": 20.0}]})
    np.testing.assert_allclose(y, x * (aug.PEAK / np.abs(x).max()), atol=1e-6)


def test_gain_is_exact() -> None:
    x = _music()
    y = aug.apply_record(x, SR, {"version": 1, "steps": [{"kind": "gain", "gain_db": -6.0}]})
    np.testing.assert_allclose(y, x * 10 ** (-6 / 20), rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("config", [_only(k) for k in aug.KINDS] + [ALL_ON], ids=[*aug.KINDS, "all"])
@pytest.mark.parametrize("seed", range(3))
def test_click_stays_in_place(config: aug.AugmentConfig, seed: int) -> None:
    x, at = _click()
    y, _ = aug.augment(x, SR, np.random.default_rng(seed), config)
    envelope = np.abs(hilbert(y.astype(np.float64)))
    assert abs(int(np.argmax(envelope)) - at) <= SR // 1000


@pytest.mark.parametrize("seed", range(4))
def test_note_onsets_stay_in_place(seed: int) -> None:
    """The first sample above 10% of each isolated tone's peak moves by under 1 ms."""
    t = np.arange(3 * SR) / SR
    onsets = (0.4, 1.4, 2.4)
    x = sum(np.where(t >= o, np.sin(2 * np.pi * 220 * (t - o)) * np.exp(-(t - o) * 8), 0) for o in onsets)
    config = aug.AugmentConfig(reverb=1.0, eq=1.0, compress=1.0, gain=1.0, noise=0.0, eq_gain_db=(-10.0, 5.0))
    y, _ = aug.augment(0.5 * x.astype(np.float32), SR, np.random.default_rng(seed), config)
    for onset in onsets:
        a = int((onset - 0.2) * SR)
        segment = np.abs(y[a : a + int(0.4 * SR)])
        first = int(np.argmax(segment > 0.1 * segment.max())) + a
        assert abs(first / SR - onset) < 0.001


# ---------------------------------------------------------------- EQ


@pytest.mark.parametrize(("freq", "gain_db", "q"), [(100.0, -10.0, 2.0), (440.0, 5.0, 2.0), (3000.0, -6.0, 1.0)])
def test_eq_peak_gain_measured_with_a_sine(freq: float, gain_db: float, q: float) -> None:
    x = _sine(freq)
    band = {"type": "peak", "freq": freq, "gain_db": gain_db, "q": q}
    y = aug.apply_record(x, SR, {"version": 1, "steps": [{"kind": "eq", "bands": [band]}]})
    assert _level_db(_middle(y)) - _level_db(_middle(x)) == pytest.approx(gain_db, abs=0.5)
    assert 20 * math.log10(aug.eq_gain([band], np.array([freq]), SR)[0]) == pytest.approx(gain_db, abs=1e-6)
    assert aug.eq_gain([band], np.array([freq / 8]), SR)[0] == pytest.approx(1.0, abs=0.03)


@pytest.mark.parametrize(("kind", "corner", "probe"), [("low_shelf", 200.0, 30.0), ("high_shelf", 2000.0, 7000.0)])
def test_eq_shelves(kind: str, corner: float, probe: float) -> None:
    band = {"type": kind, "freq": corner, "gain_db": 6.0, "q": aug.SHELF_Q}
    gain = lambda f: 20 * math.log10(aug.eq_gain([band], np.array([f]), SR)[0])  # noqa: E731
    assert gain(corner) == pytest.approx(3.0, abs=1e-9)  # half the gain at the corner
    assert gain(0.0 if kind == "low_shelf" else SR / 2) == pytest.approx(6.0, abs=1e-9)
    x = _sine(probe)
    y = aug.apply_record(x, SR, {"version": 1, "steps": [{"kind": "eq", "bands": [band]}]})
    assert _level_db(_middle(y)) - _level_db(_middle(x)) == pytest.approx(6.0, abs=0.5)


@pytest.mark.parametrize("seed", range(3))
def test_nothing_sounds_before_the_input(seed: int) -> None:
    x, at = _click()
    config = aug.AugmentConfig(reverb=1.0, eq=1.0, compress=1.0, gain=1.0, noise=0.0)
    y, _ = aug.augment(x, SR, np.random.default_rng(seed), config)
    assert np.abs(y[:at]).max() < 1e-9 and int(np.argmax(np.abs(y))) == at


# ---------------------------------------------------------------- noise, compression


@pytest.mark.parametrize("color", ["white", "pink"])
@pytest.mark.parametrize("snr_db", [10.0, 35.0])
def test_noise_at_the_requested_snr(color: str, snr_db: float) -> None:
    x = _music()
    step = {"kind": "noise", "color": color, "snr_db": snr_db, "seed": 3}
    y = aug.apply_record(x, SR, {"version": 1, "steps": [step]})
    assert _level_db(x) - _level_db(y - x) == pytest.approx(snr_db, abs=0.5)


@pytest.mark.parametrize(("color", "slope"), [("white", 0.0), ("pink", -1.0)])
def test_noise_spectrum_slope(color: str, slope: float) -> None:
    noise = aug.make_noise(color, 10 * SR, SR, seed=1)
    assert np.mean(noise**2) == pytest.approx(1.0, abs=1e-9)
    freqs, psd = welch(noise, SR, nperseg=4096)
    band = (freqs >= 100) & (freqs <= 6000)
    fitted = np.polyfit(np.log10(freqs[band]), np.log10(psd[band]), 1)[0]
    assert fitted == pytest.approx(slope, abs=0.05)


def test_compressor_reduces_only_above_the_threshold() -> None:
    quiet, loud = _sine(440.0, 1.0, 0.01), _sine(440.0, 1.0, 0.5)
    x = np.concatenate([quiet, loud])
    step = {"kind": "compress", "threshold_db": -12.0, "ratio": 2.0, "time_ms": 20.0}
    y = aug.apply_record(x, SR, {"version": 1, "steps": [step]})
    np.testing.assert_allclose(y[: SR - 100], x[: SR - 100], rtol=1e-6)
    steady = slice(int(1.5 * SR), 2 * SR)
    assert _level_db(y[steady]) - _level_db(x[steady]) == pytest.approx(-6.0, abs=0.2)


# ---------------------------------------------------------------- rooms


def test_image_sources_of_a_known_room() -> None:
    room, source = np.array([4.0, 5.0, 3.0]), np.array([1.0, 2.0, 1.0])
    images, counts = aug.image_sources(room, source, 1)
    found = {tuple(p) for p in images[counts == 1].tolist()}
    assert found == {(-1, 2, 1), (7, 2, 1), (1, -2, 1), (1, 8, 1), (1, 2, -1), (1, 2, 5)}
    assert images[counts == 0].tolist() == [[1.0, 2.0, 1.0]]
    assert [int(np.sum(aug.image_sources(room, source, n)[1] <= n)) for n in (1, 2, 3)] == [7, 25, 63]


def test_floor_reflection_delay_and_gain() -> None:
    room, source, mic = np.array([10.0, 10.0, 4.0]), np.array([5.0, 3.0, 1.0]), np.array([5.0, 7.0, 1.0])
    delays, gains = aug.early_reflections(room, source, mic, 0.36, 1, SR)
    assert (delays[0], gains[0]) == (0, 1.0)
    floor = math.hypot(4.0, 2.0)  # image at z = -1
    i = int(np.argmin(np.abs(gains - 4.0 / floor * 0.8)))
    assert delays[i] == round((floor - 4.0) / aug.SPEED_OF_SOUND * SR)


def test_room_ir_direct_path_first_and_tail_energy() -> None:
    step = {"room": [8.0, 6.0, 3.0], "source": [2.0, 2.0, 1.2], "mic": [4.0, 3.0, 1.5],
            "absorption": 0.3, "tilt": 0.0, "order": 0, "seed": 5}  # fmt: skip
    ir = aug.room_ir(step, SR)
    assert ir[0] == 1.0 and np.abs(ir[1:]).max() < 1.0
    assert len(ir) == math.ceil(aug.sabine_rt60(np.array(step["room"]), 0.3) * SR)
    surface, distance_sq = 2 * (48 + 24 + 18), 4 + 1 + 0.09
    critical_sq = surface * 0.3 / 0.7 / (16 * math.pi)
    assert np.sum(ir[1:] ** 2) == pytest.approx(distance_sq / critical_sq, rel=1e-9)


def test_late_tail_decays_at_its_rt60() -> None:
    tail = aug.late_tail(np.full(len(aug.BANDS_HZ), 0.8), 0.0, 0.001, 2 * SR, SR, seed=2)
    energy = np.cumsum(tail[::-1] ** 2)[::-1]
    db = 10 * np.log10(energy / energy[0])
    t5, t25 = np.argmax(db < -5) / SR, np.argmax(db < -25) / SR
    assert 3 * (t25 - t5) == pytest.approx(0.8, rel=0.1)


def test_mic_stays_inside_and_apart() -> None:
    room, source = np.array([3.0, 3.0, 2.5]), np.array([0.5, 0.5, 0.5])
    mic = aug.place_mic(source, room, np.array([-1.0, -1.0, -1.0]), 5.0)
    assert np.all(mic >= aug.WALL_MARGIN) and np.all(mic <= room - aug.WALL_MARGIN)
    assert np.linalg.norm(mic - source) > 1.0


# ---------------------------------------------------------------- bad input


def test_config_from_dict() -> None:
    config = from_dict(aug.AugmentConfig, {"reverb": 0.5, "eq_freq": [50, 100], "variants": 2})
    assert config.eq_freq == (50.0, 100.0) and config.variants == 2 and config.reverb == 0.5
    with pytest.raises(ConfigError, match="unknown key"):
        from_dict(aug.AugmentConfig, {"reverbb": 0.5})


def test_presets() -> None:
    assert aug.preset("default") == aug.AugmentConfig()
    assert not aug.preset("off").enabled
    light, strong = aug.preset("light"), aug.preset("strong")
    assert light.noise_snr_db[0] >= strong.noise_snr_db[1] and light.reverb < strong.reverb
    with pytest.raises(ValueError, match="expected one of off, light, default, strong"):
        aug.preset("loud")


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"reverb": 1.5}, "reverb must be a probability"),
        ({"eq_freq": (100.0, 50.0)}, "eq_freq must be finite with low <= high"),
        ({"eq_freq": 100.0}, "eq_freq must be a pair"),
        ({"eq_q": (0.0, 1.0)}, "eq_q must be > 0"),
        ({"absorption": (0.1, 1.0)}, "absorption must lie in"),
        ({"compress_ratio": (0.5, 2.0)}, "compress_ratio must be >= 1"),
        ({"variants": -1}, "variants must be an integer"),
        ({"room_size": (1.0, 5.0)}, "must exceed 1.0 m"),
    ],
)
def test_bad_config_values(bad: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        aug.AugmentConfig(**bad)


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"version": 2, "steps": []}, "version"),
        ({"version": 1, "steps": [{"kind": "flanger"}]}, "unknown kind 'flanger'"),
        ({"version": 1, "steps": [{"kind": "gain"}]}, "bad gain step"),
        ({"version": 1, "steps": [{"kind": "noise", "color": "blue", "snr_db": 3, "seed": 1}]}, "color"),
    ],
)
def test_bad_records_are_refused(record: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        aug.apply_record(_music(1.0), SR, record)


def test_stereo_is_refused() -> None:
    with pytest.raises(ValueError, match=r"shape \(n,\)"):
        aug.apply_record(np.zeros((2, 100), np.float32), SR, {"version": 1, "steps": []})
