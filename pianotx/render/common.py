"""What the corpus renderer's modules share: the error, a piece to render, note utilities.

Everything here takes plain values; only :mod:`pianotx.render.corpus` knows
:class:`~pianotx.render.corpus.RenderOptions`.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from pianotx.datasets.pairs import RENDER_MANIFEST  # written last by a complete render
from pianotx.errors import PianotxError
from pianotx.files import OwnedFolder
from pianotx.midi import Notes

RENDER_VERSION = 1
LEAD_IN = 0.25  # seconds of silence before a piece's first note
_TICK = 60.0 / (120.0 * 220)  # one tick of pretty_midi's default file (120 qpm, 220 ppq)
MIN_NOTE = 0.03  # seconds; shorter notes (after overlap cuts) are dropped


class RenderError(PianotxError, RuntimeError):
    """The corpus cannot be rendered (missing tool or file, refused input, failed render)."""


def render_files(data: Any) -> list[str] | None:
    """Every file of the corpus a parsed ``render.json`` describes (``render.json``, and
    ``NAME.wav`` and ``NAME.mid`` of each piece it lists), or None when ``data`` is not
    a render manifest pianotx wrote (its version, sample rate, options, pianos, and
    pieces whose names :func:`safe_name` could have made)."""
    if not isinstance(data, dict) or data.get("version") != RENDER_VERSION:
        return None
    pianos = data.get("pianos", data.get("soundfonts"))  # "soundfonts": renders before TiMidity's pianos
    if not isinstance(data.get("sample_rate"), int) or not isinstance(data.get("options"), dict):
        return None
    if not isinstance(pianos, list) or not isinstance(data.get("pieces"), list):
        return None
    files = [RENDER_MANIFEST]
    for piece in data["pieces"]:
        name = piece.get("name") if isinstance(piece, dict) else None
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_+-][A-Za-z0-9._+-]*", name):
            return None
        files += [f"{name}.wav", f"{name}.mid"]
    return files


RENDER_FOLDER = OwnedFolder(RENDER_MANIFEST, render_files)  # how `pianotx data render` knows a corpus it made


@dataclass(frozen=True)
class Piece:
    """Music to render: ``source`` names it (shared by its renderings), ``notes`` in seconds."""

    source: str
    kind: str  # "score" or one of KINDS
    transpose: int  # semitones applied (0 for generated material)
    notes: Notes  # as played: keys struck and released
    pedal: tuple[tuple[float, float], ...] = ()  # sustain pedal (down, up) spans, seconds

    @property
    def end_time(self) -> float:
        """When the last key or the pedal is released, seconds."""
        return max([self.notes.end_time] + [up for _, up in self.pedal])


def safe_name(text: str) -> str:
    """``text`` with every run of characters outside ``A-Za-z0-9._+-`` replaced by ``-``."""
    return re.sub(r"[^A-Za-z0-9._+-]+", "-", text).strip("-.") or "piece"


def quantise(notes: Notes) -> Notes:
    """Times rounded to the MIDI file's tick (1/440 s), so the notes equal the file's."""
    iv = np.round(notes.intervals / _TICK) * _TICK
    return Notes.from_lists(iv, notes.pitches, notes.velocities)


def resolve_overlaps(notes: Notes) -> Notes:
    """One key plays one note at a time: a note still sounding when its key is struck
    again ends at the new onset; notes left shorter than 30 ms are dropped."""
    iv = notes.intervals.copy()
    for pitch in np.unique(notes.pitches):
        idx = np.flatnonzero(notes.pitches == pitch)  # sorted by onset (Notes invariant)
        iv[idx[:-1], 1] = np.minimum(iv[idx[:-1], 1], iv[idx[1:], 0])
    keep = iv[:, 1] - iv[:, 0] >= MIN_NOTE - 1e-9
    return Notes.from_lists(iv[keep], notes.pitches[keep], notes.velocities[keep])


def finish(notes: Notes) -> Notes:
    """Notes as written and rendered: quantised to MIDI ticks, one note per key at a time."""
    return resolve_overlaps(quantise(notes))


def piece_rng(seed: int, source: str) -> np.random.Generator:
    """A generator seeded by the run's seed and the piece's id (not its position)."""
    return np.random.default_rng([seed, zlib.crc32(source.encode())])
