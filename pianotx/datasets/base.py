"""What every dataset source yields: pieces to build from, and problems with their files."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class PieceSource:
    """One (audio, MIDI) pair to build from."""

    name: str  # unique within the dataset
    audio: Path
    midi: Path
    split: str | None = None  # fixed by the source (MAESTRO); None: assigned by the builder
    group: str = ""  # pieces of one group (the same music) never span splits
    piano: str | None = None  # instrument name when the source knows it (the render's manifest)
    augmented: bool = False  # an augmented copy of a rendering: used for training only
    # Audio and MIDI agree in time by construction (``pianotx data render`` cut each
    # renderer's measured lag): no offset is estimated and none is excluded for it.
    aligned: bool = False


@dataclass(frozen=True)
class Problem:
    """A file the source cannot use."""

    path: Path
    reason: str
