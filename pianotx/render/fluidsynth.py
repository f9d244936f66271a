"""FluidSynth for the synthetic corpus: soundfont checks, rendering, lag and trimming.

FluidSynth's output lags its MIDI by a few milliseconds: :func:`measure_lag` measures it
per soundfont on a probe of isolated notes, and :func:`trim_audio` cuts it from the start
of every rendering along with all but :data:`RELEASE` seconds of the silent tail.
Soundfonts in :data:`RESERVED_SOUNDFONTS` are refused (kept for outside evaluation).
"""

from __future__ import annotations

import math
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pianotx.files import atomic_path
from pianotx.midi import Notes, write_midi
from pianotx.render.common import RenderError, quantise, safe_name

FLUIDSYNTH = "fluidsynth"
SOUNDFONT_DIR = Path("/usr/share/sounds/sf2")
DEFAULT_SOUNDFONTS = (str(SOUNDFONT_DIR / "FluidR3_GM.sf2"), str(SOUNDFONT_DIR / "TimGM6mb.sf2"))
INSTALL_HINT = "run `make install` (Debian: apt-get install fluidsynth fluid-soundfont-gm timgm6mb-soundfont)"
# Reserved for outside evaluation: never rendered for training or tuning.
RESERVED_SOUNDFONTS = ("musescore", "generaluser")
RELEASE = 1.0  # seconds of audio kept after the last note-off, at most
SILENCE = 1.0e-4  # |sample| below this (-80 dBFS) counts as silence when trimming


@dataclass(frozen=True)
class Soundfont:
    """A checked soundfont and its measured output lag (seconds)."""

    name: str
    path: Path
    lag_seconds: float = 0.0


# ---------------------------------------------------------------- checks


def check_soundfont(path: str | Path) -> Soundfont:
    """A soundfont that exists and is not reserved for outside evaluation.

    Raises:
        RenderError: a reserved soundfont (by file name or by the bank name in its
            header), or a missing file.
    """
    path = Path(path)
    header = b""
    if path.is_file():
        with path.open("rb") as handle:
            header = handle.read(4096).lower()
    for word in RESERVED_SOUNDFONTS:
        if word in path.name.lower() or word.encode() in header:
            raise RenderError(f"soundfont {path.name} is refused: {word} is reserved for outside evaluation")
    if not path.is_file():
        raise RenderError(f"soundfont {path} not found; {INSTALL_HINT}")
    return Soundfont(safe_name(path.stem), path)


def check_fluidsynth() -> None:
    """Refuse to render without the fluidsynth binary.

    Raises:
        RenderError: no fluidsynth binary.
    """
    if shutil.which(FLUIDSYNTH) is None:
        raise RenderError(f"{FLUIDSYNTH} not found; {INSTALL_HINT}")


# ---------------------------------------------------------------- audio


def run_fluidsynth(soundfont: Path, midi: Path, wav: Path, sample_rate: int, gain: float) -> np.ndarray:
    """Render ``midi`` with FluidSynth at ``sample_rate`` Hz and master ``gain``;
    returns (n,) float32 mono (channel mean)."""
    import soundfile

    cmd = [
        FLUIDSYNTH, "-ni", "-q", "-g", str(gain), "-r", str(sample_rate),
        "-O", "float", "-T", "wav", "-F", str(wav), str(soundfont), str(midi),
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0 or not wav.is_file():
        tail = (done.stderr or done.stdout).strip().splitlines()
        raise RenderError(f"fluidsynth failed on {midi.name}: {tail[-1] if tail else done.returncode}")
    try:
        audio, _ = soundfile.read(str(wav), dtype="float32", always_2d=True)
    finally:
        wav.unlink(missing_ok=True)
    return audio.mean(axis=1)


def trim_audio(audio: np.ndarray, lag: int, end_seconds: float, sample_rate: int) -> np.ndarray:
    """Align a rendering with its MIDI and trim FluidSynth's silent tail.

    Args:
        audio: (n,) float32 samples as rendered.
        lag: samples the audio lags the MIDI by; cut from the start.
        end_seconds: the last note-off, seconds.
        sample_rate: Hz.

    Returns:
        (m,) float32: from ``lag`` on, ending after the last sample louder than
        :data:`SILENCE`, but never before the last note-off nor more than
        :data:`RELEASE` s after it (zero-padded if the rendering stops earlier).
    """
    x = audio[lag:]
    last_off = int(math.ceil(end_seconds * sample_rate))
    limit = last_off + int(RELEASE * sample_rate)
    x = np.pad(x, (0, max(0, last_off - len(x))))[:limit]
    loud = np.flatnonzero(np.abs(x[last_off:]) > SILENCE)
    return x[: last_off + (int(loud[-1]) + 1 if len(loud) else 0)]


def _probe() -> Notes:
    """Twelve isolated notes over the keyboard at varied positions in FluidSynth's
    64-sample block (onsets 0.5 + 1.2 k s + 5 k/16000 s), for measuring the lag."""
    keys = (33, 40, 45, 52, 57, 60, 64, 69, 72, 76, 81, 88)
    starts = [0.5 + 1.2 * k + 5 * k / 16000 for k in range(len(keys))]
    return quantise(Notes.from_lists([(s, s + 0.3) for s in starts], list(keys), [100] * len(keys)))


def onset_lag(audio: np.ndarray, onsets: np.ndarray, sample_rate: int) -> float:
    """Median delay, seconds, from each onset to the first sample above 1% of the peak
    in the 0.3 s after it (searched from 50 ms before it).

    Args:
        audio: (n,) samples; onsets: (k,) seconds of isolated notes.
    """
    lags = []
    for onset in onsets:
        a = max(int((onset - 0.05) * sample_rate), 0)
        segment = np.abs(audio[a : int((onset + 0.3) * sample_rate)])
        if segment.size and segment.max() > SILENCE:
            first = int(np.argmax(segment > 0.01 * segment.max()))
            lags.append((a + first) / sample_rate - onset)
    if not lags:
        raise RenderError("the soundfont plays no sound for a piano note")
    return float(np.median(lags))


def measure_lag(font: Soundfont, work: Path, sample_rate: int, gain: float) -> Soundfont:
    """``font`` with its measured lag (seconds, clipped at 0) from rendering :func:`_probe`."""
    probe = _probe()
    midi = work / f"probe-{font.name}.mid"
    write_midi(probe, midi)
    audio = run_fluidsynth(font.path, midi, work / f"probe-{font.name}.wav", sample_rate, gain)
    lag = max(onset_lag(audio, probe.intervals[:, 0], sample_rate), 0.0)
    return Soundfont(font.name, font.path, round(lag, 6))


def write_wav(path: Path, audio: np.ndarray, sample_rate: int) -> None:
    """16-bit WAV written atomically; peaks above 0.99 are scaled down to 0.99."""
    import soundfile

    peak = float(np.abs(audio).max()) if audio.size else 0.0
    if peak > 0.99:
        audio = audio * (0.99 / peak)
    with atomic_path(path) as tmp:
        soundfile.write(str(tmp), audio, sample_rate, subtype="PCM_16", format="WAV")
