"""TiMidity++ pianos: the freepats GUS patches played by the ``timidity`` program.

Debian's ``freepats`` holds two genuinely different pianos, program 0 (Acoustic Grand,
10 samples) and program 1 (Bright, 12 other samples), with no velocity layers (TiMidity
scales the level by velocity). TiMidity always reads its default configuration, which
on Debian maps programs to FluidR3_GM; :data:`FREEPATS_CONFIG` is read after it and the
piano's own line (``-x``) last, so the piano's patch wins. That line also makes a held
note decay as a piano's does (:data:`DECAY`); the patches alone hold a constant level
after 2 s, like an organ. Reverb and chorus are off (dry, like FluidSynth's renderings),
the initial silence is kept (TiMidity drops it by default) and the program is forced on
every channel (``-EI``), whatever the MIDI file says.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from pianotx.render.common import RenderError
from pianotx.render.piano import read_mono

TIMIDITY = "timidity"
FREEPATS_CONFIG = Path("/etc/timidity/freepats.cfg")
FREEPATS_DIR = Path("/usr/share/midi/freepats")
# The sustain stage falls to silence at rate 20 (of 255): a held C3 loses ~33 dB in 12 s.
DECAY = "rate=::20 offset=::0"
INSTALL_HINT = "run `make install` (Debian: apt-get install timidity freepats)"
HEADROOM = 4  # rendered this much quieter (24-bit) and scaled back, so dense chords never clip


@dataclass(frozen=True)
class TimidityPiano:
    """A General MIDI program of a TiMidity configuration, and its lag.

    Attributes:
        name: the piano's name.
        program: General MIDI program (0-based) forced on every channel.
        patch: the GUS patch played, relative to :data:`FREEPATS_DIR`.
        options: TiMidity patch options (timidity.cfg(5)) on the piano's line.
        level: TiMidity volume, percent (``-A``), at gain 1.0.
        config: the TiMidity configuration read after the default one.
        lag_seconds: measured output lag, seconds.
    """

    name: str
    program: int
    patch: str
    options: str = DECAY
    level: float = 100.0
    config: Path = FREEPATS_CONFIG
    lag_seconds: float = 0.0
    kind: ClassVar[str] = "timidity"

    def render(self, midi: Path, wav: Path, sample_rate: int, gain: float) -> np.ndarray:
        """(n,) float32 mono rendering of ``midi``; see :class:`pianotx.render.piano.Piano`."""
        line = f"bank 0\\n{self.program} {self.patch} {self.options}"
        return run_timidity(self.config, line, self.program, midi, wav, sample_rate, self.level * gain)

    def describe(self) -> dict[str, Any]:
        """render.json entry: name, kind, config, program, patch, options, lag_seconds."""
        return {
            "name": self.name, "kind": self.kind, "config": str(self.config), "program": self.program,
            "patch": self.patch, "options": self.options, "lag_seconds": self.lag_seconds,
        }  # fmt: skip


def check_timidity_piano(name: str, program: int, patch: str, options: str, level: float) -> TimidityPiano:
    """A freepats piano whose program, configuration and patch are installed.

    Raises:
        RenderError: no timidity binary, no freepats configuration or patch (the
            message says how to get them).
    """
    if shutil.which(TIMIDITY) is None:
        raise RenderError(f"{TIMIDITY} not found; {INSTALL_HINT}")
    for path in (FREEPATS_CONFIG, FREEPATS_DIR / patch):
        if not path.is_file():
            raise RenderError(f"{path} not found; {INSTALL_HINT}")
    return TimidityPiano(name, program, patch, options, level)


def run_timidity(
    config: Path, line: str, program: int, midi: Path, wav: Path, sample_rate: int, volume: float
) -> np.ndarray:
    """Render ``midi`` with TiMidity at ``sample_rate`` Hz; returns (n,) float32 mono.

    Args:
        config: configuration file read after TiMidity's default one.
        line: configuration read last (``-x``; lines separated by a literal ``\\n``).
        program: General MIDI program forced on every channel.
        midi: the MIDI file; wav: scratch output (removed after reading).
        sample_rate: Hz.
        volume: TiMidity volume, percent (the audio is as loud as ``-A volume`` makes it).

    Raises:
        RenderError: timidity failed or wrote nothing.
    """
    amp = max(1, round(volume / HEADROOM))
    cmd = [
        TIMIDITY, "-c", str(config), "-x", line, "-Ow2", "-s", str(sample_rate), "--output-mono",
        "--preserve-silence", "-EFreverb=d", "-EFchorus=d", f"-EI{program}", "-A", str(amp),
        "-o", str(wav), str(midi),
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0 or not wav.is_file():
        tail = (done.stderr or done.stdout).strip().splitlines()
        raise RenderError(f"timidity failed on {midi.name}: {tail[-1] if tail else done.returncode}")
    return read_mono(wav) * np.float32(volume / amp)
