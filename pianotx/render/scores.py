"""Scores for the synthetic corpus: music21's corpus or folders of the user's MIDI files.

Each score is taken whole or as an excerpt, transposed by a seeded number of semitones
into the piano's range, played at a seeded tempo with humanised velocities. Works by the
composers in :data:`RESERVED_COMPOSERS` are refused (kept for outside evaluation).
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pianotx.config import MIDI_MAX, MIDI_MIN
from pianotx.midi import MIDI_EXTENSIONS, Notes, read_notes
from pianotx.render.common import LEAD_IN, MIN_NOTE, Piece, RenderError, finish, piece_rng, safe_name

logger = logging.getLogger(__name__)

# Reserved for outside evaluation: never rendered for training or tuning.
RESERVED_COMPOSERS = (
    "beethoven", "mozart", "haydn", "schubert", "schumann", "chopin", "joplin", "handel",
    "händel", "haendel", "corelli", "weber", "beach", "schoenberg",
)  # fmt: skip
_RESERVED_RE = re.compile(r"(?<![a-zäö])(" + "|".join(RESERVED_COMPOSERS) + r")(?![a-zäö])")
SCORE_SUFFIXES = (".mxl", ".xml", ".musicxml", ".krn", ".abc", ".mei")  # not .rntxt analyses


# ---------------------------------------------------------------- checks


def reserved_composer(text: str) -> str | None:
    """The reserved composer named in ``text`` (a corpus path, a composer field), if any."""
    match = _RESERVED_RE.search(text.lower())
    return match.group(1) if match else None


def _is_folder(entry: str) -> bool:
    """A corpus entry naming a folder of MIDI files (not a music21 corpus prefix)."""
    return bool(entry.strip()) and Path(entry).is_dir()


def check_corpus(corpus: tuple[str, ...]) -> None:
    """Refuse music21 corpus prefixes naming a reserved composer (folders are not checked).

    Raises:
        RenderError: naming the entry and the composer.
    """
    for entry in corpus:
        composer = None if _is_folder(entry) else reserved_composer(entry)
        if composer:
            raise RenderError(f"corpus entry {entry!r} is refused: {composer} is reserved for outside evaluation")


# ---------------------------------------------------------------- note utilities


def transpose_into_range(pitches: np.ndarray, shift: int) -> tuple[np.ndarray, int]:
    """Shift ``pitches`` by ``shift`` semitones, then by octaves until they fit 21..108.

    Args:
        pitches: (n,) int MIDI numbers.
        shift: semitones.

    Returns:
        (n,) int64 pitches in 21..108, and the total shift applied (``shift`` plus any
        whole octaves). A score wider than the keyboard is not moved; its outlying
        pitches are folded in by octaves one by one.
    """
    p = np.asarray(pitches, np.int64) + shift
    if not len(p):
        return p, shift
    octave = 0
    if p.max() - p.min() <= MIDI_MAX - MIDI_MIN:  # fits: move by whole octaves only
        if p.max() > MIDI_MAX:
            octave = -12 * math.ceil((p.max() - MIDI_MAX) / 12)
        elif p.min() < MIDI_MIN:
            octave = 12 * math.ceil((MIDI_MIN - p.min()) / 12)
    p = p + octave
    while (p > MIDI_MAX).any() or (p < MIDI_MIN).any():
        p = np.where(p > MIDI_MAX, p - 12, np.where(p < MIDI_MIN, p + 12, p))
    return p, shift + octave


def humanised_velocities(onsets: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Velocities for a score's notes: a seeded base level, a slow swell and jitter.

    Args:
        onsets: (n,) note onsets, seconds.

    Returns:
        (n,) int64 in 20..120: base in [50, 90] + 12 * sin(2 pi t / period + phase) with a
        period of 8..20 s + normal jitter (sd 6).
    """
    base = rng.uniform(50, 90)
    period, phase = rng.uniform(8, 20), rng.uniform(0, 2 * np.pi)
    swell = 12 * np.sin(2 * np.pi * onsets / period + phase)
    vel = base + swell + rng.normal(0, 6, len(onsets))
    return np.clip(np.round(vel), 20, 120).astype(np.int64)


def excerpt(notes: Notes, seconds: float) -> Notes:
    """Notes starting in the first ``seconds`` after :data:`LEAD_IN`, cut off at its end
    (``seconds`` 0: all notes)."""
    if seconds <= 0:
        return notes
    end = LEAD_IN + seconds
    keep = notes.intervals[:, 0] < end - MIN_NOTE
    iv = notes.intervals[keep].copy()
    iv[:, 1] = np.minimum(iv[:, 1], end)
    return Notes(iv, notes.pitches[keep], notes.velocities[keep])


# ---------------------------------------------------------------- scores


@dataclass(frozen=True)
class _Candidate:
    source: str  # piece id, e.g. "bach-bwv66.6"
    path: Path
    is_midi: bool


def _corpus_candidates(entry: str) -> list[_Candidate]:
    """Files of one corpus entry (a MIDI folder or a music21 corpus prefix), sorted."""
    folder = Path(entry)
    if _is_folder(entry):
        files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in MIDI_EXTENSIONS)
        prefix = safe_name(folder.resolve().name)
        return [
            _Candidate(safe_name(f"{prefix}-{p.relative_to(folder).with_suffix('').as_posix()}"), p, True)
            for p in files
        ]
    from music21 import corpus
    from music21.common.pathTools import getCorpusFilePath

    root, want = Path(getCorpusFilePath()), entry.strip("/").lower()
    found = []
    for path in sorted(corpus.getCorePaths()):
        rel = path.relative_to(root).as_posix()
        if rel.lower().startswith(want) and path.suffix.lower() in SCORE_SUFFIXES:
            if reserved_composer(rel) is None:
                found.append(_Candidate(safe_name(rel.rsplit(".", 1)[0]), path, False))
    return found


def score_events(path: Path, refuse_reserved: bool = True) -> np.ndarray:
    """(n, 3) float64 rows (onset, duration, MIDI pitch), in quarter lengths, of every
    part's notes and chords (ties merged, grace notes dropped, repeats not expanded).

    Args:
        path: a score music21 reads.
        refuse_reserved: refuse a score whose composer is reserved (``False`` only for
            outside evaluation, ``benchmarks/outside.py``).

    Raises:
        ValueError: the score names a reserved composer (when refused) or has no notes.
    """
    import warnings

    from music21 import converter, stream

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        score = converter.parse(path)
        if isinstance(score, stream.Opus):
            score = score.scores[0]
        composer = reserved_composer(str(score.metadata.composer or "")) if score.metadata else None
        if composer and refuse_reserved:
            raise ValueError(f"{composer} is reserved for outside evaluation")
        flat = score.stripTies(inPlace=False).flatten()
        rows = [
            (float(el.offset), float(el.quarterLength), float(p.midi))
            for el in flat.notes
            if el.quarterLength > 0 and not el.duration.isGrace
            for p in getattr(el, "pitches", ())
        ]
    if not rows:
        raise ValueError("no notes")
    return np.asarray(rows, np.float64)


def score_notes(events: np.ndarray, rng: np.random.Generator) -> Notes:
    """Notes in seconds from (onset, duration, pitch) rows in quarter lengths.

    The beat is a quarter, or a half where the median note is a half or longer (as in
    Palestrina), played at a seeded 72..100 beats per minute; notes sound for a seeded
    85..97% of their written length; the first note starts at :data:`LEAD_IN`.
    """
    beat = 2.0 if np.median(events[:, 1]) >= 1.5 else 1.0
    seconds_per_quarter = 60.0 / (rng.uniform(72, 100) * beat)
    articulation = rng.uniform(0.85, 0.97)
    start = (events[:, 0] - events[:, 0].min()) * seconds_per_quarter + LEAD_IN
    length = np.maximum(events[:, 1] * seconds_per_quarter * articulation, MIN_NOTE)
    return Notes.from_lists(
        np.stack([start, start + length], axis=1),
        events[:, 2].astype(np.int64),
        humanised_velocities(start, rng),
    )


def _midi_notes(path: Path, rng: np.random.Generator) -> Notes:
    """A user MIDI file's notes (pedal applied), starting at LEAD_IN; constant
    velocities (a notation export) are humanised."""
    notes = read_notes(path, sustain=True)
    notes = notes.shifted(LEAD_IN - float(notes.intervals[:, 0].min()))
    if np.ptp(notes.velocities) == 0:
        notes = Notes(notes.intervals, notes.pitches, humanised_velocities(notes.intervals[:, 0], rng))
    return notes


def load_score(candidate: _Candidate, seed: int, transpose: int, seconds: float) -> Piece:
    """One score as a piece: transposed by a seeded shift in [-transpose, +transpose],
    cut to its first ``seconds`` (0: whole), velocities humanised, overlaps resolved.

    Raises:
        ValueError, MidiError, or anything music21 raises: the score cannot be used.
    """
    rng = piece_rng(seed, candidate.source)
    shift = int(rng.integers(-transpose, transpose + 1))
    if candidate.is_midi:
        notes = _midi_notes(candidate.path, rng)
    else:
        notes = score_notes(score_events(candidate.path), rng)
    pitches, applied = transpose_into_range(notes.pitches, shift)
    notes = Notes.from_lists(notes.intervals, pitches, notes.velocities)
    notes = finish(excerpt(notes, seconds))
    if not len(notes):
        raise ValueError("no notes left in the excerpt")
    return Piece(candidate.source, "score", applied, notes)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:150]}" if text else type(exc).__name__


def load_scores(
    corpus: tuple[str, ...],
    count: int,
    seed: int,
    transpose: int,
    seconds: float,
    say: Callable[[str], None] | None = None,
) -> tuple[list[Piece], list[tuple[str, str]]]:
    """Take ``count`` scores (0: all) round robin over the ``corpus`` entries (each
    entry's files in a seeded order), skipping scores that fail with a one-line warning.
    ``seed``, ``transpose`` and ``seconds``: see :func:`load_score`.

    Returns:
        the pieces, and (source, reason) for each skipped score.

    Raises:
        RenderError: a corpus entry names a reserved composer or matches nothing.
    """
    check_corpus(corpus)
    rng = np.random.default_rng([seed, 0])
    queues = []
    for entry in corpus:
        found = _corpus_candidates(entry)
        if not found:
            raise RenderError(f"corpus entry {entry!r} matches no score (music21 prefix or folder)")
        queues.append([found[i] for i in rng.permutation(len(found))])
    wanted = count or sum(len(q) for q in queues)
    pieces: list[Piece] = []
    skipped: list[tuple[str, str]] = []
    while len(pieces) < wanted and any(queues):
        for queue in queues:
            if not queue or len(pieces) >= wanted:
                continue
            candidate = queue.pop(0)
            try:
                pieces.append(load_score(candidate, seed, transpose, seconds))
            except Exception as exc:  # music21 and pretty_midi raise many types
                skipped.append((candidate.source, _one_line(exc)))
                _warn(say, f"skipped {candidate.source}: {skipped[-1][1]}")
    return _unique_sources(pieces), skipped


def _warn(say: Callable[[str], None] | None, message: str) -> None:
    if say is None:
        logger.warning(message)
    else:
        say(f"warning: {message}")


def _unique_sources(pieces: list[Piece]) -> list[Piece]:
    """Suffix ``-2``, ``-3``... to repeated source ids (same file name in two folders)."""
    seen: dict[str, int] = {}
    out = []
    for piece in pieces:
        seen[piece.source] = seen.get(piece.source, 0) + 1
        if seen[piece.source] > 1:
            piece = Piece(f"{piece.source}-{seen[piece.source]}", piece.kind, piece.transpose, piece.notes)
        out.append(piece)
    return out
