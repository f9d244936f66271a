"""Sources of (audio, MIDI) pieces: a folder of pairs (what ``pianotx data render``
writes among them) or MAESTRO.

Every source yields :class:`~pianotx.datasets.base.PieceSource` records and a list of
problems (files that cannot be used, each with a reason) for the dataset builder.
"""

from __future__ import annotations

from pathlib import Path

from pianotx.datasets.base import PieceSource, Problem

__all__ = ["PieceSource", "Problem", "discover"]


def discover(root: Path) -> tuple[list[PieceSource], list[Problem]]:
    """Pieces under ``root``: a MAESTRO v3 root (its CSV present) or a folder of pairs."""
    from pianotx.datasets import maestro, pairs

    if maestro.is_maestro(root):
        return maestro.discover(root)
    return pairs.discover(root)
