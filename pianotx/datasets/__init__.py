"""Sources of (audio, MIDI) pieces: a folder of pairs, MAESTRO, or the synthetic render.

Every source yields :class:`PieceSource` records and a list of problems (files that
cannot be used, each with a reason) for the dataset builder.
"""

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
    piano: str | None = None  # instrument name when the source knows it (render.json)


@dataclass(frozen=True)
class Problem:
    """A file the source cannot use."""

    path: Path
    reason: str


def discover(root: Path) -> tuple[list[PieceSource], list[Problem]]:
    """Pieces under ``root``: a MAESTRO v3 root (its CSV present) or a folder of pairs."""
    from pianotx.datasets import maestro, pairs

    if maestro.is_maestro(root):
        return maestro.discover(root)
    return pairs.discover(root)
