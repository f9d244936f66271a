"""FluidSynth pianos: a soundfont (.sf2) played by the ``fluidsynth`` program.

FluidR3_GM and TimGM6mb come from Debian's soundfont packages; the Salamander grand is
an SF2 built by :mod:`pianotx.render.salamander`; any other .sf2 file can be named.
Soundfonts in :data:`RESERVED_SOUNDFONTS` are refused (kept for outside evaluation).
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from pianotx.render.common import RenderError, safe_name
from pianotx.render.piano import read_mono

FLUIDSYNTH = "fluidsynth"
SOUNDFONT_DIR = Path("/usr/share/sounds/sf2")
INSTALL_HINT = "run `make install` (Debian: apt-get install fluidsynth fluid-soundfont-gm timgm6mb-soundfont)"
# Reserved for outside evaluation: never rendered for training or tuning.
RESERVED_SOUNDFONTS = ("musescore", "generaluser")


@dataclass(frozen=True)
class SoundfontPiano:
    """A checked soundfont played by FluidSynth (preset 0 of bank 0), and its lag.

    Attributes:
        name: the piano's name (a file's stem unless given).
        path: the .sf2 file.
        lag_seconds: measured output lag, seconds.
    """

    name: str
    path: Path
    lag_seconds: float = 0.0
    kind: ClassVar[str] = "fluidsynth"

    def render(self, midi: Path, wav: Path, sample_rate: int, gain: float) -> np.ndarray:
        """(n,) float32 mono rendering of ``midi``; see :class:`pianotx.render.piano.Piano`."""
        return run_fluidsynth(self.path, midi, wav, sample_rate, gain)

    def describe(self) -> dict[str, Any]:
        """render.json entry: name, kind, path, lag_seconds."""
        return {"name": self.name, "kind": self.kind, "path": str(self.path), "lag_seconds": self.lag_seconds}


# ---------------------------------------------------------------- checks


def check_soundfont(path: str | Path, name: str | None = None, hint: str = INSTALL_HINT) -> SoundfontPiano:
    """A piano from a soundfont that exists and is not reserved for outside evaluation.

    Args:
        path: the .sf2 file.
        name: the piano's name; default: the file's stem, made file-name safe.
        hint: how to get the file, for the error message.

    Raises:
        RenderError: a reserved soundfont (by file name or by the bank name in its
            header), a missing file, or a file that is no SoundFont (its first 12 bytes
            are not ``RIFF``, a size and ``sfbk``, as in every .sf2 and .sf3 file).
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
        raise RenderError(f"soundfont {path} not found; {hint}")
    if header[:4] != b"riff" or header[8:12] != b"sfbk":  # the header was read lowered
        raise RenderError(f"{path}: not a SoundFont file (no RIFF sfbk header)")
    return SoundfontPiano(name or safe_name(path.stem), path)


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
    cmd = [
        FLUIDSYNTH, "-ni", "-q", "-g", str(gain), "-r", str(sample_rate),
        "-O", "float", "-T", "wav", "-F", str(wav), str(soundfont), str(midi),
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0 or not wav.is_file():
        tail = (done.stderr or done.stdout).strip().splitlines()
        raise RenderError(f"fluidsynth failed on {midi.name}: {tail[-1] if tail else done.returncode}")
    return read_mono(wav)
