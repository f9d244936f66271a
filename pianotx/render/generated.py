"""Generated material for the corpus: drills over the keyboard, and piano textures.

Generated pieces cover the whole keyboard: isolated notes, usual and random chords, fast
runs and repeated notes, and idiomatic piano music in functional harmony (Alberti bass,
waltz, stride, arpeggios, ... and ``piano``, a texture per phrase: see
:mod:`pianotx.render.textures`). :data:`KINDS` names them all; each piece is a seeded
function of the run's seed and the piece's id.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import partial

import numpy as np

from pianotx.config import MIDI_MAX, MIDI_MIN, N_KEYS
from pianotx.midi import Notes
from pianotx.render import textures
from pianotx.render.common import LEAD_IN, Piece, finish, piece_rng

DRILLS = ("notes", "chords", "random_chords", "runs", "repeats")
KINDS = DRILLS + textures.KINDS  # generated material
GENERATED_SECONDS = 45.0  # length of a generated piece when the render's seconds is 0


# ---------------------------------------------------------------- kinds


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
        return finish(Notes.from_lists(np.stack([start, end], axis=1), list(pitch), list(vel)))


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


def texture_notes(kind: str, rng: np.random.Generator, seconds: float) -> Notes:
    """A piece of texture ``kind`` (:func:`pianotx.render.textures.generate`) as heard:
    its notes held on by the sustain pedal (:meth:`~pianotx.render.textures.Texture.sustained`)."""
    return textures.generate(kind, rng, seconds).sustained()


def _texture_piece(source: str, kind: str, rng: np.random.Generator, seconds: float) -> Piece:
    """A texture as played: its keys and its sustain pedal (written as CC64)."""
    texture = textures.generate(kind, rng, seconds)
    return Piece(source, kind, 0, texture.notes, texture.pedal)


def generated_pieces(seed: int, seconds: float, kinds: tuple[str, ...], count: int) -> list[Piece]:
    """``count`` generated pieces shared out over ``kinds`` ("kind:weight" entries),
    named ``gen-KIND-NNN``.

    Isolated-note pieces share one :func:`key_cycle`, so together they play every key
    once before any key twice. Each piece lasts ``seconds`` (45 s if 0). A texture keeps
    its notes as played and its sustain pedal (``Piece.pedal``): its MIDI file carries
    CC64, so it sounds pedalled and reads back pedal-extended (:func:`texture_notes`).
    """
    seconds = seconds or GENERATED_SECONDS
    makers: dict[str, Callable[[np.random.Generator, float], Notes]] = {
        "chords": usual_chords, "random_chords": random_chords, "runs": runs, "repeats": repeated_notes,
        **{kind: partial(texture_notes, kind) for kind in textures.KINDS},
    }  # fmt: skip
    keys = key_cycle(piece_rng(seed, "gen-notes-keys"))
    counts: dict[str, int] = {}
    pieces = []
    for kind in allocate(count, parse_kinds(kinds)):
        source = f"gen-{kind}-{counts.setdefault(kind, 0):03d}"
        counts[kind] += 1
        rng = piece_rng(seed, source)
        if kind in textures.KINDS:
            piece = _texture_piece(source, kind, rng, seconds)
        elif kind == "notes":
            piece = Piece(source, kind, 0, isolated_notes(rng, seconds, keys))
        else:
            piece = Piece(source, kind, 0, makers[kind](rng, seconds))
        if len(piece.notes):
            pieces.append(piece)
    return pieces
