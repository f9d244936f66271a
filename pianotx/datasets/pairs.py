"""A folder of pairs: ``X.wav`` (or flac/ogg/mp3) beside ``X.mid`` (or ``.midi``).

This is the piano-midi.de layout and what ``pianotx data render`` writes. Subfolders are
searched too; names are paths relative to the root. When a ``render.json`` from
``pianotx data render`` is present, each piece's source score (its group) and piano are
taken from it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pianotx.audio import AUDIO_EXTENSIONS
from pianotx.datasets.base import PieceSource, Problem
from pianotx.midi import MIDI_EXTENSIONS
from pianotx.render.common import RENDER_MANIFEST


def _render_info(root: Path) -> dict[str, dict[str, Any]]:
    path = root / RENDER_MANIFEST
    if not path.is_file():
        return {}
    try:
        return {p["name"]: p for p in json.loads(path.read_text())["pieces"]}
    except (ValueError, KeyError, TypeError):
        return {}


def _stems(root: Path, extensions: tuple[str, ...]) -> dict[Path, Path]:
    found: dict[Path, Path] = {}
    for path in sorted(root.rglob("*")):
        hidden = any(part.startswith(".") for part in path.relative_to(root).parts)
        if path.is_file() and path.suffix.lower() in extensions and not hidden:
            found.setdefault(path.with_suffix(""), path)
    return found


def discover(root: Path) -> tuple[list[PieceSource], list[Problem]]:
    """Pair every audio file with the MIDI file of the same stem."""
    audio, midi = _stems(root, AUDIO_EXTENSIONS), _stems(root, MIDI_EXTENSIONS)
    info = _render_info(root)
    pieces, problems = [], []
    for stem in sorted(set(audio) | set(midi)):
        if stem not in midi:
            problems.append(Problem(audio[stem], "no MIDI file with the same name"))
            continue
        if stem not in audio:
            problems.append(Problem(midi[stem], "no audio file with the same name"))
            continue
        name = stem.relative_to(root).as_posix()
        meta = info.get(name, {})
        pieces.append(
            PieceSource(
                name=name,
                audio=audio[stem],
                midi=midi[stem],
                group=str(meta.get("source", name)),
                piano=meta.get("piano"),
                augmented="augment" in meta,
                aligned=bool(meta),
            )
        )
    return pieces, problems
