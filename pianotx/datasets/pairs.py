"""A folder of pairs: ``X.wav`` (or flac/ogg/mp3) beside ``X.mid`` (or ``.midi``).

This is the piano-midi.de layout and what ``pianotx data render`` writes. Subfolders are
searched too; names are paths relative to the root. A folder named like an audio or
MIDI file (``x.wav/``) is reported as a problem (its contents are still searched). When a ``render.json`` from
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

# The manifest `pianotx data render` writes last into the pairs folders it makes; defined
# here, with the layout it describes, so that the renderer imports it and not the reverse.
RENDER_MANIFEST = "render.json"


def _render_info(root: Path) -> dict[str, dict[str, Any]]:
    path = root / RENDER_MANIFEST
    if not path.is_file():
        return {}
    try:
        return {p["name"]: p for p in json.loads(path.read_text())["pieces"]}
    except (ValueError, KeyError, TypeError):
        return {}


def _stems(root: Path, extensions: tuple[str, ...], kind: str, problems: list[Problem]) -> dict[Path, Path]:
    """Files under ``root`` (hidden ones aside) with one of ``extensions``, by stem; each
    folder so named is added to ``problems``."""
    found: dict[Path, Path] = {}
    for path in sorted(root.rglob("*")):
        hidden = any(part.startswith(".") for part in path.relative_to(root).parts)
        if hidden or path.suffix.lower() not in extensions:
            continue
        if path.is_file():
            found.setdefault(path.with_suffix(""), path)
        elif path.is_dir():
            problems.append(Problem(path, f"a folder, not {kind} file"))
    return found


def discover(root: Path) -> tuple[list[PieceSource], list[Problem]]:
    """Pair every audio file with the MIDI file of the same stem."""
    problems: list[Problem] = []
    audio = _stems(root, AUDIO_EXTENSIONS, "an audio", problems)
    midi = _stems(root, MIDI_EXTENSIONS, "a MIDI", problems)
    info = _render_info(root)
    pieces = []
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
