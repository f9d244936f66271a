"""The default training corpus: real scores and generated material on sampled pianos.

No dataset can be downloaded, so the corpus is made the way MAPS was made: scores from
music21's corpus (Bach chorales and Palestrina by default) plus generated material over
the whole keyboard (isolated notes, usual and random chords, fast runs, repeated notes),
each piece rendered with FluidSynth on every soundfont given.

:func:`render_corpus` writes into its output folder, for each piece and piano,
``NAME.wav`` (mono, ``sample_rate`` Hz, 16-bit) and ``NAME.mid`` (one piano track, the
exact notes the audio was rendered from, absolute seconds), then ``render.json``::

    {"version": 1, "sample_rate": 16000, "seed": 0, "options": {...RenderOptions...},
     "soundfonts": [{"name": "FluidR3_GM", "path": "...", "lag_seconds": 0.0061}],
     "keys_covered": 88, "total_seconds": 4321.0,
     "pieces": [{"name": "bach-bwv66.6__t+2__FluidR3_GM", "source": "bach-bwv66.6",
                 "kind": "score", "piano": "FluidR3_GM", "transpose": 2, "seconds": 31.2}]}

``source`` is shared by the renderings of one score (or generated piece) on each piano:
the dataset builder splits by it. ``kind`` is ``"score"`` or a generated kind; a
generated piece's name has no ``__t..`` part. ``seconds`` is the audio length.

Audio and MIDI agree in time: FluidSynth's output lag, measured per soundfont on a probe
of isolated notes, is cut from the start of every rendering, and the silent tail it
appends is trimmed to at most :data:`RELEASE` seconds after the last note-off.

Music reserved for outside evaluation is refused: MuseScore's General soundfont (and
GeneralUser, which it shares samples with) and music21's works by the composers in
:data:`RESERVED_COMPOSERS`. A folder of the user's own MIDI files is not checked.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
import subprocess
import tempfile
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pianotx.config import MIDI_MAX, MIDI_MIN, N_KEYS
from pianotx.midi import Notes, read_notes, write_midi

logger = logging.getLogger(__name__)

FLUIDSYNTH = "fluidsynth"
SOUNDFONT_DIR = Path("/usr/share/sounds/sf2")
DEFAULT_SOUNDFONTS = (str(SOUNDFONT_DIR / "FluidR3_GM.sf2"), str(SOUNDFONT_DIR / "TimGM6mb.sf2"))
INSTALL_HINT = "run `make install` (Debian: apt-get install fluidsynth fluid-soundfont-gm timgm6mb-soundfont)"
# Reserved for outside evaluation: never rendered for training or tuning.
RESERVED_COMPOSERS = (
    "beethoven", "mozart", "haydn", "schubert", "schumann", "chopin", "joplin", "handel",
    "händel", "haendel", "corelli", "weber", "beach", "schoenberg",
)  # fmt: skip
RESERVED_SOUNDFONTS = ("musescore", "generaluser")
_RESERVED_RE = re.compile(r"(?<![a-zäö])(" + "|".join(RESERVED_COMPOSERS) + r")(?![a-zäö])")

KINDS = ("notes", "chords", "random_chords", "runs", "repeats")  # generated material
MANIFEST = "render.json"
LEAD_IN = 0.25  # seconds of silence before a piece's first note
RELEASE = 1.0  # seconds of audio kept after the last note-off, at most
SILENCE = 1.0e-4  # |sample| below this (-80 dBFS) counts as silence when trimming
GENERATED_SECONDS = 45.0  # length of a generated piece when RenderOptions.seconds is 0
SCORE_SUFFIXES = (".mxl", ".xml", ".musicxml", ".krn", ".abc", ".mei")  # not .rntxt analyses
MIDI_SUFFIXES = (".mid", ".midi")
_TICK = 60.0 / (120.0 * 220)  # one tick of pretty_midi's default file (120 qpm, 220 ppq)
_MIN_NOTE = 0.03  # seconds; shorter notes (after overlap cuts) are dropped


class RenderError(RuntimeError):
    """The corpus cannot be rendered (missing tool or file, refused input, failed render)."""


@dataclass(frozen=True)
class RenderOptions:
    """What to render. Every field is plain data, so ``config.from_dict`` builds it.

    Defaults give 100 scores (50 Bach chorales, 50 Palestrina movements, first 45 s of
    each) plus 30 generated 45-s pieces, each on both pianos: about 178 minutes of audio,
    ~25% of it generated, rendered in under a minute on 2 cores.

    Attributes:
        corpus: music21 corpus path prefixes ("bach/bwv" matches bach/bwv66.6.mxl) or
            folders of .mid/.midi files (searched recursively). Scores are taken from the
            entries in turn (round robin), each entry's list in a seeded order.
        soundfonts: .sf2 files; every piece is rendered on each. The piano's name is the
            file's stem.
        pieces: number of scores taken; 0 = every score the corpus entries match.
        seconds: excerpt length per score (its first ``seconds``), and the length of each
            generated piece; 0 = whole scores and 45-s generated pieces.
        generated: generated pieces per score taken: ``ceil(scores * generated)``;
            0 = none. pieces=2 gives 1 generated piece.
        kinds: "kind:weight" entries over :data:`KINDS`; the generated pieces are shared
            out in proportion to the weights (largest remainder, ties to the earlier
            kind). Default weights 3:3:2:3:1 (of 30 pieces: 8, 8, 5, 7, 2).
        transpose: each score is shifted by a seeded number of semitones in
            [-transpose, +transpose], then by whole octaves where needed to fit MIDI
            21..108; notes still outside (a score wider than the keyboard) are folded in.
        seed: seeds score choice, transpositions, tempi, velocities and generated material.
        sample_rate: audio sample rate, Hz.
        gain: FluidSynth master gain (0 < gain < 10).
    """

    corpus: tuple[str, ...] = ("bach/bwv", "palestrina")
    soundfonts: tuple[str, ...] = DEFAULT_SOUNDFONTS
    pieces: int = 100
    seconds: float = 45.0
    generated: float = 0.3
    kinds: tuple[str, ...] = ("notes:3", "chords:3", "random_chords:2", "runs:3", "repeats:1")
    transpose: int = 3
    seed: int = 0
    sample_rate: int = 16000
    gain: float = 1.0

    def __post_init__(self) -> None:
        for name in ("corpus", "soundfonts", "kinds"):
            value = getattr(self, name)
            object.__setattr__(self, name, (value,) if isinstance(value, str) else tuple(value))
        for name, kind in (("pieces", int), ("seconds", float), ("generated", float),
                           ("transpose", int), ("seed", int), ("sample_rate", int),
                           ("gain", float)):  # fmt: skip
            object.__setattr__(self, name, kind(getattr(self, name)))
        if self.pieces < 0 or self.seconds < 0 or self.generated < 0 or self.transpose < 0:
            raise ValueError("pieces, seconds, generated and transpose must be >= 0")
        if self.sample_rate <= 0 or not 0 < self.gain < 10:
            raise ValueError("sample_rate must be positive and gain in (0, 10)")
        if not self.corpus or not self.soundfonts:
            raise ValueError("corpus and soundfonts must not be empty")
        parse_kinds(self.kinds)


@dataclass(frozen=True)
class RenderReport:
    """What :func:`render_corpus` wrote.

    Attributes:
        out_dir: the output folder.
        pieces: (wav, mid) pairs written (pieces x soundfonts).
        seconds: total audio written, seconds.
        lags: soundfont name -> measured FluidSynth lag, seconds (cut from every file).
        skipped: (score, one-line reason) for each score that could not be used.
        keys_covered: distinct MIDI keys played over the whole corpus (of 88).
    """

    out_dir: Path
    pieces: int
    seconds: float
    lags: dict[str, float]
    skipped: tuple[tuple[str, str], ...]
    keys_covered: int


@dataclass(frozen=True)
class Piece:
    """Music to render: ``source`` names it (shared by its renderings), ``notes`` in seconds."""

    source: str
    kind: str  # "score" or one of KINDS
    transpose: int  # semitones applied (0 for generated material)
    notes: Notes


@dataclass(frozen=True)
class Soundfont:
    """A checked soundfont and its measured output lag (seconds)."""

    name: str
    path: Path
    lag_seconds: float = 0.0


# ---------------------------------------------------------------- checks and options


def safe_name(text: str) -> str:
    """``text`` with every run of characters outside ``A-Za-z0-9._+-`` replaced by ``-``."""
    return re.sub(r"[^A-Za-z0-9._+-]+", "-", text).strip("-.") or "piece"


def reserved_composer(text: str) -> str | None:
    """The reserved composer named in ``text`` (a corpus path, a composer field), if any."""
    match = _RESERVED_RE.search(text.lower())
    return match.group(1) if match else None


def parse_kinds(kinds: tuple[str, ...]) -> dict[str, float]:
    """``("notes:3", "runs")`` -> ``{"notes": 3.0, "runs": 1.0}``; a bare kind weighs 1.

    Raises:
        ValueError: an unknown kind, a repeated kind or a negative weight.
    """
    weights: dict[str, float] = {}
    for entry in kinds:
        kind, _, weight = str(entry).partition(":")
        kind = kind.strip()
        if kind not in KINDS or kind in weights:
            raise ValueError(f"kinds: {entry!r} is unknown or repeated; kinds are {', '.join(KINDS)}")
        try:
            weights[kind] = float(weight) if weight.strip() else 1.0
        except ValueError as exc:
            raise ValueError(f"kinds: {entry!r} has no numeric weight") from exc
        if weights[kind] < 0:
            raise ValueError(f"kinds: {entry!r} has a negative weight")
    return weights


def allocate(count: int, weights: dict[str, float]) -> list[str]:
    """Share ``count`` generated pieces among kinds by weight (largest remainder).

    Returns:
        ``count`` kinds, grouped in :data:`KINDS` order, e.g. 12 pieces at the default
        weights: 3 notes, 3 chords, 2 random_chords, 3 runs, 1 repeats.
    """
    total = sum(weights.values())
    if count <= 0 or total <= 0:
        return []
    quotas = {k: count * w / total for k, w in weights.items()}
    shares = {k: int(q) for k, q in quotas.items()}
    order = sorted(weights, key=lambda k: (-(quotas[k] - shares[k]), KINDS.index(k)))
    for kind in order[: count - sum(shares.values())]:
        shares[kind] += 1
    return [k for k in KINDS if k in shares for _ in range(shares[k])]


def check_soundfont(path: str | Path) -> Soundfont:
    """A soundfont that exists and is not reserved for outside evaluation.

    Raises:
        RenderError: a reserved soundfont (by file name or by the bank name in its
            header), or a missing file.
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
        raise RenderError(f"soundfont {path} not found; {INSTALL_HINT}")
    return Soundfont(safe_name(path.stem), path)


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


def check_options(options: RenderOptions) -> list[Soundfont]:
    """Refuse reserved inputs and missing tools before any work is done.

    Raises:
        RenderError: a corpus entry naming a reserved composer, a reserved or missing
            soundfont, two soundfonts with one name, or no fluidsynth binary.
    """
    check_corpus(options.corpus)
    fonts = [check_soundfont(path) for path in options.soundfonts]
    if len({f.name for f in fonts}) != len(fonts):
        raise RenderError("two soundfonts share a file name; rename one")
    if shutil.which(FLUIDSYNTH) is None:
        raise RenderError(f"{FLUIDSYNTH} not found; {INSTALL_HINT}")
    return fonts


# ---------------------------------------------------------------- note utilities


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
    keep = iv[:, 1] - iv[:, 0] >= _MIN_NOTE - 1e-9
    return Notes.from_lists(iv[keep], notes.pitches[keep], notes.velocities[keep])


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
    keep = notes.intervals[:, 0] < end - _MIN_NOTE
    iv = notes.intervals[keep].copy()
    iv[:, 1] = np.minimum(iv[:, 1], end)
    return Notes(iv, notes.pitches[keep], notes.velocities[keep])


def finish(notes: Notes) -> Notes:
    """Notes as written and rendered: quantised to MIDI ticks, one note per key at a time."""
    return resolve_overlaps(quantise(notes))


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
        files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in MIDI_SUFFIXES)
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


def _score_events(path: Path) -> np.ndarray:
    """(n, 3) float64 rows (onset, duration, MIDI pitch), in quarter lengths, of every
    part's notes and chords (ties merged, grace notes dropped, repeats not expanded).

    Raises:
        ValueError: the score names a reserved composer or has no notes.
    """
    import warnings

    from music21 import converter, stream

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        score = converter.parse(path)
        if isinstance(score, stream.Opus):
            score = score.scores[0]
        composer = reserved_composer(str(score.metadata.composer or "")) if score.metadata else None
        if composer:
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
    length = np.maximum(events[:, 1] * seconds_per_quarter * articulation, _MIN_NOTE)
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


def _piece_rng(seed: int, source: str) -> np.random.Generator:
    """A generator seeded by the run's seed and the piece's id (not its position)."""
    return np.random.default_rng([seed, zlib.crc32(source.encode())])


def load_score(candidate: _Candidate, options: RenderOptions) -> Piece:
    """One score as a piece: transposed, excerpted, velocities humanised, overlaps resolved.

    Raises:
        ValueError, MidiError, or anything music21 raises: the score cannot be used.
    """
    rng = _piece_rng(options.seed, candidate.source)
    shift = int(rng.integers(-options.transpose, options.transpose + 1))
    if candidate.is_midi:
        notes = _midi_notes(candidate.path, rng)
    else:
        notes = score_notes(_score_events(candidate.path), rng)
    pitches, applied = transpose_into_range(notes.pitches, shift)
    notes = Notes.from_lists(notes.intervals, pitches, notes.velocities)
    notes = finish(excerpt(notes, options.seconds))
    if not len(notes):
        raise ValueError("no notes left in the excerpt")
    return Piece(candidate.source, "score", applied, notes)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:150]}" if text else type(exc).__name__


def load_scores(
    options: RenderOptions, say: Callable[[str], None] | None = None
) -> tuple[list[Piece], list[tuple[str, str]]]:
    """Take ``options.pieces`` scores round robin over the corpus entries (each entry's
    files in a seeded order), skipping scores that fail with a one-line warning.

    Returns:
        the pieces, and (source, reason) for each skipped score.

    Raises:
        RenderError: a corpus entry names a reserved composer or matches nothing.
    """
    check_corpus(options.corpus)
    rng = np.random.default_rng([options.seed, 0])
    queues = []
    for entry in options.corpus:
        found = _corpus_candidates(entry)
        if not found:
            raise RenderError(f"corpus entry {entry!r} matches no score (music21 prefix or folder)")
        queues.append([found[i] for i in rng.permutation(len(found))])
    wanted = options.pieces or sum(len(q) for q in queues)
    pieces: list[Piece] = []
    skipped: list[tuple[str, str]] = []
    while len(pieces) < wanted and any(queues):
        for queue in queues:
            if not queue or len(pieces) >= wanted:
                continue
            candidate = queue.pop(0)
            try:
                pieces.append(load_score(candidate, options))
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


# ---------------------------------------------------------------- generated material

CHORDS = {  # intervals above the root
    "major": (0, 4, 7),
    "minor": (0, 3, 7),
    "dominant7": (0, 4, 7, 10),
    "major7": (0, 4, 7, 11),
    "minor7": (0, 3, 7, 10),
}
RUNS = {  # step patterns, repeated cyclically
    "major": (2, 2, 1, 2, 2, 2, 1),
    "harmonic_minor": (2, 1, 2, 2, 1, 3, 1),
    "chromatic": (1,),
    "arpeggio_major": (4, 3, 5),
    "arpeggio_minor": (3, 4, 5),
    "arpeggio_dominant7": (4, 3, 3, 2),
}
NOTE_VELOCITIES = (30, 55, 80, 105, 120)  # isolated notes: these +- 5
NOTE_LENGTHS = (0.1, 0.3, 0.6, 1.2)  # isolated notes, seconds
CHORD_LENGTHS = (0.25, 0.5, 1.0, 2.0)  # chord spacing, seconds


def chord_pitches(root: int, quality: str, inversion: int) -> list[int]:
    """A close-position chord, lowest note first.

    Inversion ``k`` moves the ``k`` lowest chord tones up an octave, e.g.
    ``chord_pitches(60, "major", 1) == [64, 67, 72]``.
    """
    intervals = CHORDS[quality]
    if not 0 <= inversion < len(intervals):
        raise ValueError(f"{quality} has inversions 0..{len(intervals) - 1}, not {inversion}")
    return [root + i for i in intervals[inversion:]] + [root + i + 12 for i in intervals[:inversion]]


def run_pitches(start: int, steps: tuple[int, ...], n: int) -> list[int]:
    """``n`` ascending pitches from ``start`` following ``steps`` cyclically."""
    pitches = [start]
    for i in range(n - 1):
        pitches.append(pitches[-1] + steps[i % len(steps)])
    return pitches


def key_cycle(rng: np.random.Generator) -> Iterator[int]:
    """Endless keys for isolated notes: seeded permutations of all 88 keys, one after
    another, so every 88 consecutive keys from the start hold each key exactly once."""
    while True:
        yield from (rng.permutation(N_KEYS) + MIDI_MIN).tolist()


class _Notes:
    """Accumulates notes (start, end, pitch, velocity) of a generated piece."""

    def __init__(self, seconds: float) -> None:
        self.end = LEAD_IN + seconds
        self.rows: list[tuple[float, float, int, int]] = []

    def fits(self, end: float) -> bool:
        return end <= self.end

    def add(self, start: float, end: float, pitch: int, velocity: float) -> None:
        self.rows.append((start, end, int(pitch), int(np.clip(round(velocity), 1, 127))))

    def notes(self) -> Notes:
        if not self.rows:
            return Notes.empty()
        start, end, pitch, vel = zip(*self.rows, strict=True)
        return finish(Notes.from_lists(np.stack([start, end], axis=1), pitch, vel))


def isolated_notes(rng: np.random.Generator, seconds: float, keys: Iterator[int]) -> Notes:
    """One note at a time, keys taken from ``keys`` while they fit in ``seconds``.

    Each note lasts one of :data:`NOTE_LENGTHS` at one of :data:`NOTE_VELOCITIES` (+-5)
    and is followed by 0.2..0.4 s of silence (in the MIDI) before the next.
    """
    out, t = _Notes(seconds), LEAD_IN
    while True:
        length = float(rng.choice(NOTE_LENGTHS))
        if not out.fits(t + length):
            return out.notes()
        out.add(t, t + length, next(keys), rng.choice(NOTE_VELOCITIES) + rng.integers(-5, 6))
        t += length + rng.uniform(0.2, 0.4)


def _chord_sequence(rng: np.random.Generator, seconds: float, draw: Callable[[], list[int]]) -> Notes:
    """Chords from ``draw()`` one after another, each 0.25..2 s apart, held 70..100% of
    that, at a chord velocity in [30, 120] with per-note jitter (sd 4)."""
    out, t = _Notes(seconds), LEAD_IN
    while True:
        step = float(rng.choice(CHORD_LENGTHS))
        length = step * rng.uniform(0.7, 1.0)
        if not out.fits(t + length):
            return out.notes()
        velocity = rng.uniform(30, 120)
        for pitch in draw():
            out.add(t, t + length, pitch, velocity + rng.normal(0, 4))
        t += step


def usual_chords(rng: np.random.Generator, seconds: float) -> Notes:
    """Major/minor triads and dominant/major/minor sevenths, all inversions, anywhere on
    the keyboard; a third of them with the bass doubled an octave below."""

    def draw() -> list[int]:
        quality = str(rng.choice(list(CHORDS)))
        shape = chord_pitches(0, quality, int(rng.integers(len(CHORDS[quality]))))
        root = int(rng.integers(MIDI_MIN - shape[0], MIDI_MAX - shape[-1] + 1))
        pitches = [root + i for i in shape]
        if rng.random() < 1 / 3 and pitches[0] - 12 >= MIDI_MIN:
            pitches.insert(0, pitches[0] - 12)
        return pitches

    return _chord_sequence(rng, seconds, draw)


def random_chords(rng: np.random.Generator, seconds: float) -> Notes:
    """2..6 distinct keys drawn uniformly from a random window of 12..48 semitones."""

    def draw() -> list[int]:
        size = int(rng.integers(2, 7))
        width = int(rng.integers(12, 49))
        low = int(rng.integers(MIDI_MIN, MIDI_MAX - width + 1))
        return sorted((low + rng.choice(width + 1, size, replace=False)).tolist())

    return _chord_sequence(rng, seconds, draw)


def runs(rng: np.random.Generator, seconds: float) -> Notes:
    """Scales and arpeggios (:data:`RUNS`) of 8..24 notes, up, down or up-and-down, at
    6..16 notes/s, legato (each note held 0.9..1.5 inter-onset intervals), a velocity
    level in [45, 110] with a crescendo or diminuendo, 0.2..0.6 s between runs."""
    out, t = _Notes(seconds), LEAD_IN
    while True:
        pitches = run_pitches(0, RUNS[str(rng.choice(list(RUNS)))], int(rng.integers(8, 25)))
        pitches = [p for p in pitches if p <= MIDI_MAX - MIDI_MIN]
        start = int(rng.integers(MIDI_MIN, MIDI_MAX - pitches[-1] + 1))
        direction = int(rng.integers(3))  # 0 up, 1 down, 2 up and down
        seq = [start + p for p in (pitches if direction != 1 else pitches[::-1])]
        if direction == 2:
            seq += seq[-2::-1]
        ioi, hold = 1.0 / rng.uniform(6, 16), rng.uniform(0.9, 1.5)
        if not out.fits(t + ioi * (len(seq) - 1) + ioi * hold):
            return out.notes()
        level, slope = rng.uniform(45, 110), rng.uniform(-20, 20)
        for i, pitch in enumerate(seq):
            vel = level + slope * i / len(seq) + rng.normal(0, 4)
            out.add(t + i * ioi, t + (i + hold) * ioi, pitch, vel)
        t += ioi * len(seq) + rng.uniform(0.2, 0.6)


def repeated_notes(rng: np.random.Generator, seconds: float) -> Notes:
    """A key (or, one time in four, a third/fifth/octave dyad) struck 4..12 times at
    3.3..12.5 strikes/s, each released after 40..80% of the interval; 0.2..0.5 s pauses."""
    out, t = _Notes(seconds), LEAD_IN
    while True:
        keys = [int(rng.integers(MIDI_MIN, MIDI_MAX + 1))]
        if rng.random() < 0.25:
            upper = keys[0] + int(rng.choice([3, 4, 7, 12]))
            keys = keys + [upper] if upper <= MIDI_MAX else keys
        count, ioi = int(rng.integers(4, 13)), rng.uniform(0.08, 0.3)
        hold = rng.uniform(0.4, 0.8)
        if not out.fits(t + ioi * (count - 1 + hold)):
            return out.notes()
        level = rng.uniform(35, 115)
        for i in range(count):
            for key in keys:
                out.add(t + i * ioi, t + (i + hold) * ioi, key, level + rng.normal(0, 5))
        t += ioi * count + rng.uniform(0.2, 0.5)


def generated_pieces(options: RenderOptions, scores: int) -> list[Piece]:
    """``ceil(scores * options.generated)`` generated pieces, named ``gen-KIND-NNN``.

    Isolated-note pieces share one :func:`key_cycle`, so together they play every key
    once before any key twice. Each piece lasts ``options.seconds`` (45 s if 0).
    """
    seconds = options.seconds or GENERATED_SECONDS
    makers = {"chords": usual_chords, "random_chords": random_chords, "runs": runs,
              "repeats": repeated_notes}  # fmt: skip
    keys = key_cycle(_piece_rng(options.seed, "gen-notes-keys"))
    counts: dict[str, int] = {}
    pieces = []
    for kind in allocate(math.ceil(scores * options.generated), parse_kinds(options.kinds)):
        source = f"gen-{kind}-{counts.setdefault(kind, 0):03d}"
        counts[kind] += 1
        rng = _piece_rng(options.seed, source)
        if kind == "notes":
            notes = isolated_notes(rng, seconds, keys)
        else:
            notes = makers[kind](rng, seconds)
        if len(notes):
            pieces.append(Piece(source, kind, 0, notes))
    return pieces


def plan_pieces(
    options: RenderOptions, say: Callable[[str], None] | None = None
) -> tuple[list[Piece], list[tuple[str, str]]]:
    """Every piece to render (scores, then generated material), and the skipped scores."""
    scores, skipped = load_scores(options, say)
    return scores + generated_pieces(options, len(scores)), skipped


# ---------------------------------------------------------------- audio


def _fluidsynth(soundfont: Path, midi: Path, wav: Path, options: RenderOptions) -> np.ndarray:
    """Render ``midi`` with FluidSynth; returns (n,) float32 mono (channel mean)."""
    import soundfile

    cmd = [
        FLUIDSYNTH, "-ni", "-q", "-g", str(options.gain), "-r", str(options.sample_rate),
        "-O", "float", "-T", "wav", "-F", str(wav), str(soundfont), str(midi),
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0 or not wav.is_file():
        tail = (done.stderr or done.stdout).strip().splitlines()
        raise RenderError(f"fluidsynth failed on {midi.name}: {tail[-1] if tail else done.returncode}")
    try:
        audio, _ = soundfile.read(str(wav), dtype="float32", always_2d=True)
    finally:
        wav.unlink(missing_ok=True)
    return audio.mean(axis=1)


def trim_audio(audio: np.ndarray, lag: int, end_seconds: float, sample_rate: int) -> np.ndarray:
    """Align a rendering with its MIDI and trim FluidSynth's silent tail.

    Args:
        audio: (n,) float32 samples as rendered.
        lag: samples the audio lags the MIDI by; cut from the start.
        end_seconds: the last note-off, seconds.
        sample_rate: Hz.

    Returns:
        (m,) float32: from ``lag`` on, ending after the last sample louder than
        :data:`SILENCE`, but never before the last note-off nor more than
        :data:`RELEASE` s after it (zero-padded if the rendering stops earlier).
    """
    x = audio[lag:]
    last_off = int(math.ceil(end_seconds * sample_rate))
    limit = last_off + int(RELEASE * sample_rate)
    x = np.pad(x, (0, max(0, last_off - len(x))))[:limit]
    loud = np.flatnonzero(np.abs(x[last_off:]) > SILENCE)
    return x[: last_off + (int(loud[-1]) + 1 if len(loud) else 0)]


def _probe() -> Notes:
    """Twelve isolated notes over the keyboard at varied positions in FluidSynth's
    64-sample block (onsets 0.5 + 1.2 k s + 5 k/16000 s), for measuring the lag."""
    keys = (33, 40, 45, 52, 57, 60, 64, 69, 72, 76, 81, 88)
    starts = [0.5 + 1.2 * k + 5 * k / 16000 for k in range(len(keys))]
    return quantise(Notes.from_lists([(s, s + 0.3) for s in starts], keys, [100] * len(keys)))


def onset_lag(audio: np.ndarray, onsets: np.ndarray, sample_rate: int) -> float:
    """Median delay, seconds, from each onset to the first sample above 1% of the peak
    in the 0.3 s after it (searched from 50 ms before it).

    Args:
        audio: (n,) samples; onsets: (k,) seconds of isolated notes.
    """
    lags = []
    for onset in onsets:
        a = max(int((onset - 0.05) * sample_rate), 0)
        segment = np.abs(audio[a : int((onset + 0.3) * sample_rate)])
        if segment.size and segment.max() > SILENCE:
            first = int(np.argmax(segment > 0.01 * segment.max()))
            lags.append((a + first) / sample_rate - onset)
    if not lags:
        raise RenderError("the soundfont plays no sound for a piano note")
    return float(np.median(lags))


def measure_lag(font: Soundfont, options: RenderOptions, work: Path) -> Soundfont:
    """``font`` with its measured lag (seconds, clipped at 0) from rendering :func:`_probe`."""
    probe = _probe()
    midi = work / f"probe-{font.name}.mid"
    write_midi(probe, midi)
    audio = _fluidsynth(font.path, midi, work / f"probe-{font.name}.wav", options)
    lag = max(onset_lag(audio, probe.intervals[:, 0], options.sample_rate), 0.0)
    return Soundfont(font.name, font.path, round(lag, 6))


def _write_wav(path: Path, audio: np.ndarray, sample_rate: int) -> None:
    """16-bit WAV written atomically; peaks above 0.99 are scaled down to 0.99."""
    import soundfile

    peak = float(np.abs(audio).max()) if audio.size else 0.0
    if peak > 0.99:
        audio = audio * (0.99 / peak)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        soundfile.write(str(tmp), audio, sample_rate, subtype="PCM_16", format="WAV")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def piece_name(piece: Piece, font: Soundfont) -> str:
    """``SOURCE__t+2__PIANO`` for scores, ``SOURCE__PIANO`` for generated material."""
    middle = f"__t{piece.transpose:+d}" if piece.kind == "score" else ""
    return f"{piece.source}{middle}__{font.name}"


def render_piece(piece: Piece, font: Soundfont, options: RenderOptions, out_dir: Path, work: Path) -> dict[str, Any]:
    """Write ``NAME.wav`` and ``NAME.mid`` for one piece on one piano; its render.json entry."""
    name = piece_name(piece, font)
    midi = work / f"{name}.mid"
    write_midi(piece.notes, midi)
    audio = _fluidsynth(font.path, midi, work / f"{name}.raw.wav", options)
    lag = int(round(font.lag_seconds * options.sample_rate))
    audio = trim_audio(audio, lag, piece.notes.end_time, options.sample_rate)
    _write_wav(out_dir / f"{name}.wav", audio, options.sample_rate)
    os.chmod(midi, 0o644)  # mkstemp made it private
    os.replace(midi, out_dir / f"{name}.mid")
    return {
        "name": name, "source": piece.source, "kind": piece.kind, "piano": font.name,
        "transpose": piece.transpose, "seconds": round(len(audio) / options.sample_rate, 4),
    }  # fmt: skip


# ---------------------------------------------------------------- the corpus


def _render_all(
    jobs: list[tuple[Piece, Soundfont]],
    options: RenderOptions,
    out_dir: Path,
    work: Path,
    say: Callable[[str], None],
) -> list[dict[str, Any]]:
    """Render every (piece, piano) job, ``os.cpu_count()`` FluidSynth processes at once."""
    entries: list[dict[str, Any]] = []
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        futures = [pool.submit(render_piece, p, f, options, out_dir, work) for p, f in jobs]
        try:
            for i, future in enumerate(futures, 1):
                entries.append(future.result())
                say(f"rendered {i}/{len(jobs)} {entries[-1]['name']}")
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    return entries


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(tmp, path)


def render_corpus(out_dir: Path, options: RenderOptions, progress: Callable[[str], None] | None = None) -> RenderReport:
    """Render the corpus described by ``options`` into ``out_dir`` (see module docstring).

    An existing ``render.json`` is removed first and the new one written last, so its
    presence means a complete render. Files are written atomically (temp, rename).

    Args:
        out_dir: output folder, created if needed.
        options: what to render.
        progress: called with one line per step (lags, skipped scores, each file).

    Raises:
        RenderError: a reserved or missing input, no fluidsynth, or a failed render.
    """
    say = progress or (lambda _line: None)
    fonts = check_options(options)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / MANIFEST).unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix=".render-", dir=out_dir) as tmp:
        work = Path(tmp)
        fonts = [measure_lag(font, options, work) for font in fonts]
        for font in fonts:
            say(f"{font.name}: lag {font.lag_seconds * 1000:.1f} ms")
        pieces, skipped = plan_pieces(options, progress)
        say(f"rendering {len(pieces)} pieces on {len(fonts)} piano(s)")
        entries = _render_all([(p, f) for p in pieces for f in fonts], options, out_dir, work, say)
    keys = len(set().union(*(set(p.notes.pitches.tolist()) for p in pieces))) if pieces else 0
    total = round(sum(e["seconds"] for e in entries), 3)
    _write_json(out_dir / MANIFEST, {
        "version": 1, "sample_rate": options.sample_rate, "seed": options.seed,
        "options": asdict(options),
        "soundfonts": [
            {"name": f.name, "path": str(f.path), "lag_seconds": f.lag_seconds} for f in fonts
        ],
        "keys_covered": keys, "total_seconds": total, "pieces": entries,
    })  # fmt: skip
    return RenderReport(
        out_dir, len(entries), total, {f.name: f.lag_seconds for f in fonts},
        tuple(skipped), keys,
    )  # fmt: skip
