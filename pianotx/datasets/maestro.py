"""MAESTRO v3: a root holding ``maestro-v3.0.0.csv`` and the year folders it names.

The CSV's ``split`` column (train / validation / test) is used as is; pieces of one
composition share a split in MAESTRO by construction.
"""

from __future__ import annotations

import csv
from pathlib import Path

from pianotx.datasets.base import PieceSource, Problem
from pianotx.store import SPLITS

CSV_NAME = "maestro-v3.0.0.csv"


def is_maestro(root: Path) -> bool:
    return (root / CSV_NAME).is_file()


def discover(root: Path) -> tuple[list[PieceSource], list[Problem]]:
    """Pieces listed in the CSV; rows naming missing files or bad splits are problems."""
    csv_path = root / CSV_NAME
    pieces, problems = [], []
    with csv_path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    required = {"split", "midi_filename", "audio_filename", "canonical_title"}
    if rows and not required <= set(rows[0]):
        missing = ", ".join(sorted(required - set(rows[0])))
        return [], [Problem(csv_path, f"CSV lacks column(s) {missing}")]
    for row in rows:
        audio, midi = root / row["audio_filename"], root / row["midi_filename"]
        if row["split"] not in SPLITS:
            problems.append(Problem(csv_path, f"unknown split {row['split']!r} for {row['midi_filename']}"))
        elif audio.is_dir() or midi.is_dir():
            problems.append(Problem(audio if audio.is_dir() else midi, "listed in the CSV as a file, but a folder"))
        elif not audio.is_file():
            problems.append(Problem(audio, "audio file listed in the CSV is missing"))
        elif not midi.is_file():
            problems.append(Problem(midi, "MIDI file listed in the CSV is missing"))
        else:
            pieces.append(
                PieceSource(
                    name=Path(row["audio_filename"]).with_suffix("").as_posix(),
                    audio=audio,
                    midi=midi,
                    split=row["split"],
                    group=row.get("canonical_composer", "") + "/" + row["canonical_title"],
                )
            )
    return pieces, problems
