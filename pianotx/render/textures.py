"""Piano textures over functional harmony: seeded pieces of idiomatic piano writing.

A piece is a harmonic skeleton (:class:`Skeleton`) realised by a texture. The skeleton
is a key (major, or minor with the harmonic minor's dominant), a meter (2/4, 3/4, 4/4,
6/8), a tempo, and a progression of phrases in functional harmony (:data:`PHRASES`:
authentic and plagal cadences, ii-V-I, the circle of fifths, deceptive and half
cadences, secondary dominants, the Neapolitan, the Andalusian descent), one chord per
bar, ending on the tonic.

Textures (:data:`TEXTURES`; the last bar of every piece is a held tonic chord):

- ``alberti``: a melody over an Alberti bass (low-high-middle-high);
- ``waltz``: bass on the downbeat, chords on the other beats, a melody above (3/4);
- ``stride``: bass octaves low and chords in the middle in turn, a melody doubled at a
  chord tone below on the beats (2/4, 4/4);
- ``arpeggios``: broken chords over 2-4 octaves (up, up-down or down-up);
- ``parallel_scales``: scales of the chord's own scale in parallel thirds, sixths,
  octaves or tenths, doubled an octave or two below or over a held bass;
- ``block_chords``: 4-6 voices in both hands (bass, maybe its octave, and 3-4 close
  chord tones whose top voice moves as a melody);
- ``counterpoint``: two lines moving in turn in long and short values, chord tones on
  the downbeat, otherwise steps preferring consonance and contrary motion;
- ``trills_tremolos``: trills on chord tones (with a turn) over chords or a
  broken-octave tremolo, or measured chord tremolos in both hands;
- ``repeated_chords``: fast repeated chords (octaves to four notes, top voice singing)
  over bass octaves on the beats;
- ``melody_accompaniment``: a melody over a nocturne-like broken chord, an after-beat
  (bass, chord) or a held bass under chords on the beats;
- ``piano`` (:data:`PIANO`): one skeleton, each phrase in a different texture.

Every texture writes on a grid of equal steps (a set number per beat); no voice strikes
twice within a step, and a step lasts at least ``1 / MAX_RATE`` s. Each texture has a
band of step rates (:attr:`TextureSpec.rate`, its fastest voice, notes/s) the tempo is
drawn from. Notes are clipped to their bar, so the notes sounding as a chord begins are
that chord's; off-beat melody notes may be passing or neighbour notes.

Dynamics: each phrase rises to a peak 50-80% of the way through and falls back (base
level 45..85, rise 6..20); the downbeat gets +8, the meter's other strong beats +4,
off-beat steps -4; the melody +10, the bass +2, inner voices -8; per-note noise sd 3.
Timing: each note starts 0..8 ms after its grid time (hands and fingers are never
exactly together). Sustain pedal: a pedalled texture changes the pedal at every
harmony, as pianists do (up just before the next chord, down 25-100 ms after it
begins); see :class:`Texture` and :func:`pianotx.midi.write_midi` (its ``pedal``).

Everything is a function of the generator passed in: the same seed gives the same piece.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from pianotx.config import MIDI_MAX, MIDI_MIN
from pianotx.midi import Notes, apply_sustain
from pianotx.render.common import LEAD_IN, MIN_NOTE, finish, quantise

MAX_RATE = 15.0  # grid steps per second, at most: the fastest voice's onsets per second
JITTER = 0.008  # seconds; each onset is 0..JITTER after its grid time

# ---------------------------------------------------------------- harmony

SCALES = {  # pitch classes above the scale's tonic
    "major": (0, 2, 4, 5, 7, 9, 11),
    "harmonic": (0, 2, 3, 5, 7, 8, 11),
    "natural": (0, 2, 3, 5, 7, 8, 10),
    "neapolitan": (0, 1, 3, 5, 7, 8, 11),  # harmonic minor with a flat second
}
QUALITIES = {  # chord tones above the root, root first
    "maj": (0, 4, 7),
    "min": (0, 3, 7),
    "dim": (0, 3, 6),
    "7": (0, 4, 7, 10),
    "m7": (0, 3, 7, 10),
    "hd7": (0, 3, 6, 10),
    "o7": (0, 3, 6, 9),
}
# numeral -> (root above the key's tonic, quality, scale's tonic above the key's, scale):
# a secondary dominant takes the scale of the key it points to.
NUMERALS = {
    "major": {
        "I": (0, "maj", 0, "major"), "ii": (2, "min", 0, "major"), "ii7": (2, "m7", 0, "major"),
        "iii": (4, "min", 0, "major"), "IV": (5, "maj", 0, "major"), "V": (7, "maj", 0, "major"),
        "V7": (7, "7", 0, "major"), "vi": (9, "min", 0, "major"), "viio": (11, "dim", 0, "major"),
        "V/V": (2, "7", 7, "major"), "V/vi": (4, "7", 9, "harmonic"), "V/ii": (9, "7", 2, "harmonic"),
        "V/IV": (0, "7", 5, "major"),
    },
    "minor": {
        "i": (0, "min", 0, "harmonic"), "iio": (2, "dim", 0, "harmonic"), "iih7": (2, "hd7", 0, "harmonic"),
        "III": (3, "maj", 0, "natural"), "iv": (5, "min", 0, "harmonic"), "V": (7, "maj", 0, "harmonic"),
        "V7": (7, "7", 0, "harmonic"), "VI": (8, "maj", 0, "harmonic"), "VII": (10, "maj", 0, "natural"),
        "viio7": (11, "o7", 0, "harmonic"), "N6": (1, "maj", 0, "neapolitan"), "V/V": (2, "7", 7, "major"),
        "V/iv": (0, "7", 5, "harmonic"), "V/III": (10, "7", 3, "major"),
    },
}  # fmt: skip
PHRASES = {  # one chord per bar; the endings in the tonic cover every length 1..8
    "major": (
        "I IV V7 I", "I ii V7 I", "ii V7 I", "IV V7 I", "V7 I", "I",  # cadences, ii-V-I
        "I IV viio iii vi ii V7 I",  # circle of fifths
        "I vi IV V", "I V vi IV", "I IV V vi",  # half cadence, pop axis, deceptive
        "I vi ii V7 I", "I V/V V7 I", "I V/vi vi IV V7 I", "I V/ii ii V7 I", "I V/IV IV V7 I",
        "I ii7 V7 vi IV V7 I",  # deceptive, then authentic
    ),
    "minor": (
        "i iv V7 i", "iio V7 i", "iv V7 i", "V7 i", "i",
        "i iv VII III VI iio V7 i",  # circle of fifths
        "i VI iv V", "i VII VI V", "i iv V VI",  # half cadence, Andalusian, deceptive
        "i VI iih7 V7 i", "i V/iv iv VI V7 i", "i N6 V7 i", "i V/V V7 i", "i V/III III iv V7 i",
        "i viio7 i iv V7 i", "i iv V VI iv V7 i",
    ),
}  # fmt: skip


@dataclass(frozen=True)
class Chord:
    """One harmony: its numeral, root and tones (pitch classes 0..11), and the 7-note
    scale its melodic steps move in (pitch classes, ascending from 0)."""

    numeral: str
    root: int
    tones: tuple[int, ...]
    scale: tuple[int, ...]


@dataclass(frozen=True)
class Meter:
    """``beats`` per bar, each of ``sub`` natural subdivisions (2 simple, 3 compound);
    ``strong`` beats (0-based) get accents; ``bpm`` the range of beats per minute."""

    name: str
    beats: int
    sub: int
    strong: tuple[int, ...]
    bpm: tuple[float, float]


METERS = {
    "2/4": Meter("2/4", 2, 2, (0,), (50.0, 200.0)),
    "3/4": Meter("3/4", 3, 2, (0,), (50.0, 200.0)),
    "4/4": Meter("4/4", 4, 2, (0, 2), (50.0, 200.0)),
    "6/8": Meter("6/8", 2, 3, (0, 1), (40.0, 120.0)),  # beats are dotted quarters
}


@dataclass(frozen=True)
class Skeleton:
    """What a texture realises: key, meter, beat length (s), one chord per bar, and the
    first bar of each phrase (0 first)."""

    tonic: int
    minor: bool
    meter: Meter
    beat: float
    chords: tuple[Chord, ...]
    phrases: tuple[int, ...]

    @property
    def bar_seconds(self) -> float:
        return self.beat * self.meter.beats

    def bar_start(self, index: int) -> float:
        return LEAD_IN + index * self.bar_seconds


def progression(tonic: int, minor: bool, numerals: list[str] | tuple[str, ...]) -> tuple[Chord, ...]:
    """Chords of ``numerals`` (keys of :data:`NUMERALS`) in the key on ``tonic`` (0 = C).

    E.g. ``progression(0, False, ["V/V"])[0].tones == (2, 6, 9, 0)`` (D F# A C).
    """
    table = NUMERALS["minor" if minor else "major"]
    chords = []
    for numeral in numerals:
        if numeral not in table:
            raise ValueError(f"{numeral!r} is no numeral of a {'minor' if minor else 'major'} key")
        root, quality, scale_root, scale = table[numeral]
        tones = tuple((tonic + root + i) % 12 for i in QUALITIES[quality])
        pcs = tuple(sorted((tonic + scale_root + i) % 12 for i in SCALES[scale]))
        chords.append(Chord(numeral, (tonic + root) % 12, tones, pcs))
    return tuple(chords)


def draw_progression(rng: np.random.Generator, minor: bool, bars: int) -> tuple[list[str], list[int]]:
    """Numerals for ``bars`` bars, phrase by phrase from :data:`PHRASES`, the last
    phrase ending on the tonic; and the first bar of each phrase."""
    phrases = [p.split() for p in PHRASES["minor" if minor else "major"]]
    tonic = "i" if minor else "I"
    numerals: list[str] = []
    starts: list[int] = []
    while len(numerals) < bars:
        left = bars - len(numerals)
        if left <= 8 and (left < 4 or rng.random() < 0.5):
            choice = [p for p in phrases if len(p) == left and p[-1] == tonic]
        else:
            choice = [p for p in phrases if 3 <= len(p) < left]
        starts.append(len(numerals))
        numerals += choice[int(rng.integers(len(choice)))]
    return numerals, starts


# ---------------------------------------------------------------- pitches


def pitches_in(tones: tuple[int, ...], lo: int, hi: int) -> list[int]:
    """Every MIDI pitch in ``lo..hi`` whose pitch class is in ``tones``, ascending."""
    return [p for p in range(lo, hi + 1) if p % 12 in tones]


def nearest(tones: tuple[int, ...], target: int, lo: int, hi: int) -> int:
    """The pitch of ``tones`` in ``lo..hi`` nearest ``target`` (the lower on a tie)."""
    return min(pitches_in(tones, lo, hi), key=lambda p: (abs(p - target), p))


def close_chord(tones: tuple[int, ...], top: int, size: int, lo: int, hi: int) -> list[int]:
    """``size`` consecutive chord pitches in ``lo..hi`` (close position), ascending, the
    highest nearest ``top``: ``close_chord((0, 4, 7), 72, 3, 48, 84) == [64, 67, 72]``."""
    pitches = pitches_in(tones, lo, hi)
    windows = [pitches[i : i + size] for i in range(len(pitches) - size + 1)]
    return min(windows, key=lambda w: (abs(w[-1] - top), w[-1]))


def scale_step(pitch: int, scale: tuple[int, ...], steps: int) -> int:
    """The pitch ``steps`` degrees of ``scale`` above ``pitch`` (below if negative)."""
    direction = 1 if steps > 0 else -1
    for _ in range(abs(steps)):
        pitch += direction
        while pitch % 12 not in scale:
            pitch += direction
    return pitch


def fold(pitch: int) -> int:
    """``pitch`` moved by octaves into the keyboard's MIDI 21..108."""
    while pitch < MIDI_MIN:
        pitch += 12
    while pitch > MIDI_MAX:
        pitch -= 12
    return pitch


# ---------------------------------------------------------------- writing


@dataclass(frozen=True)
class Texture:
    """A generated piece as played.

    Attributes:
        notes: the keys as struck and released (tick-quantised, one note per key at a
            time), in seconds from 0 (the first at :data:`~pianotx.render.common.LEAD_IN`
            or later).
        pedal: sustain pedal spans ``(down, up)`` in seconds, tick-quantised, sorted and
            disjoint, ``down < up``; empty for an unpedalled piece.
    """

    notes: Notes
    pedal: tuple[tuple[float, float], ...]

    def sustained(self) -> Notes:
        """The notes as heard and labelled: released notes held on to the pedal's release
        (:func:`pianotx.midi.apply_sustain`, as :func:`~pianotx.midi.read_notes` does)."""
        return apply_sustain(self.notes, list(self.pedal))


@dataclass(frozen=True)
class Bar:
    """One bar on a grid: ``n`` steps of ``step`` s, ``beat`` steps per beat."""

    index: int
    chord: Chord
    meter: Meter
    start: float
    beat: int
    n: int
    step: float

    @property
    def end(self) -> float:
        return self.start + self.n * self.step

    def time(self, pos: float) -> float:
        return self.start + pos * self.step


@dataclass
class Voices:
    """What a texture carries from bar to bar: each line's last pitch, the piece's choice
    of pattern (each texture reads it its own way) and register lift (semitones)."""

    melody: int
    upper: int
    lower: int
    bass: int
    pattern: int
    lift: int
    direction: int = 1


ROLE_VELOCITY = {"melody": 10, "bass": 2, "inner": -8}


class Writer:
    """Collects a piece's notes and pedal bar by bar, with its dynamics and timing."""

    def __init__(self, skeleton: Skeleton, rng: np.random.Generator) -> None:
        self.sk, self.rng = skeleton, rng
        self.arcs = _draw_arcs(skeleton, rng)
        self.rows: list[tuple[float, float, int, int]] = []
        self.pedal: list[tuple[float, float]] = []

    def bar(self, index: int, steps: int) -> Bar:
        """Bar ``index`` with ``steps`` grid steps per beat."""
        sk = self.sk
        n = steps * sk.meter.beats
        return Bar(index, sk.chords[index], sk.meter, sk.bar_start(index), steps, n, sk.beat / steps)

    def note(self, bar: Bar, pos: int, length: float, pitch: int, role: str, hold: float = 0.95) -> None:
        """A note at step ``pos`` lasting ``length * hold`` steps (at least 45 ms), cut
        at the bar's end; its velocity from the dynamics, ``role`` and the beat."""
        onset = bar.time(pos) + self.rng.uniform(0.0, JITTER)
        end = min(max(bar.time(pos) + length * hold * bar.step, onset + 0.045), bar.end)
        if end - onset < MIN_NOTE:
            return
        velocity = self.velocity(bar, pos, role) + self.rng.normal(0.0, 3.0)
        self.rows.append((onset, end, fold(int(pitch)), int(np.clip(round(velocity), 1, 127))))

    def velocity(self, bar: Bar, pos: int, role: str) -> float:
        """The phrase's level at this point, plus the metric accent and the role's offset."""
        level = _arc_level(self.arcs, bar.index + pos / bar.n)
        if pos == 0:
            accent = 8
        elif pos % bar.beat:
            accent = -4
        else:
            accent = 4 if pos // bar.beat in bar.meter.strong else 0
        return level + accent + ROLE_VELOCITY[role]

    def pedal_bar(self, bar: Bar) -> None:
        """Pedal this bar's harmony: down 25-100 ms after it begins, up just before its end."""
        length = bar.end - bar.start
        down = bar.start + min(self.rng.uniform(0.025, 0.1), 0.2 * length)
        up = bar.end - min(self.rng.uniform(0.005, 0.02), 0.1 * length)
        self.pedal.append((down, up))

    def texture(self) -> Texture:
        """The notes written, finished as MIDI notes, and the pedal on the same ticks."""
        if not self.rows:
            return Texture(Notes.empty(), ())
        start, end, pitch, velocity = zip(*self.rows, strict=True)
        notes = finish(Notes.from_lists(np.stack([start, end], axis=1), list(pitch), list(velocity)))
        return Texture(notes, _quantise_spans(self.pedal))


def _quantise_spans(spans: list[tuple[float, float]]) -> tuple[tuple[float, float], ...]:
    """Spans on the MIDI file's ticks, in time order, empty ones dropped."""
    if not spans:
        return ()
    ticks = quantise(Notes.from_lists(spans, np.zeros(len(spans), np.int64))).intervals
    return tuple((float(a), float(b)) for a, b in ticks if b > a)


def _draw_arcs(sk: Skeleton, rng: np.random.Generator) -> list[tuple[float, float, float, float, float]]:
    """Per phrase: (first bar, bars, base level, rise, peak bar) of its dynamic arc."""
    ends = list(sk.phrases[1:]) + [len(sk.chords)]
    arcs: list[tuple[float, float, float, float, float]] = []
    for first, end in zip(sk.phrases, ends):
        bars = end - first
        arcs.append((first, bars, rng.uniform(45, 85), rng.uniform(6, 20), first + bars * rng.uniform(0.5, 0.8)))
    return arcs


def _arc_level(arcs: list[tuple[float, float, float, float, float]], x: float) -> float:
    """The velocity level at bar position ``x``: the phrase's base plus its rise, full at
    the peak and falling linearly to nothing at the phrase's ends."""
    first, bars, base, rise, peak = next((a for a in reversed(arcs) if a[0] <= x), arcs[0])
    half = max(peak - first, first + bars - peak, 1e-9)
    return base + rise * max(0.0, 1.0 - abs(x - peak) / half)


# ---------------------------------------------------------------- melody


def melody_onsets(rng: np.random.Generator, bar: Bar, busy: float) -> list[int]:
    """Onset steps of one bar of melody on its grid (the meter's subdivision): the
    downbeat, 70% of the other beats and ``busy`` of the subdivisions."""
    unit = max(1, bar.beat // bar.meter.sub)
    return [0] + [p for p in range(unit, bar.n, unit) if rng.random() < (0.7 if p % bar.beat == 0 else busy)]


def melody_pitch(rng: np.random.Generator, bar: Bar, prev: int, pos: int, lo: int, hi: int) -> int:
    """A chord tone near ``prev`` on a beat; otherwise a step or third of the chord's
    scale (passing and neighbour notes), turned back at ``lo``/``hi``."""
    if pos % bar.beat == 0:
        return nearest(bar.chord.tones, prev + int(rng.integers(-4, 5)), lo, hi)
    move = int(rng.choice([-1, 1, -1, 1, -2, 2]))
    pitch = scale_step(prev, bar.chord.scale, move)
    return pitch if lo <= pitch <= hi else scale_step(prev, bar.chord.scale, -move)


def melody_bar(w: Writer, bar: Bar, v: Voices, lo: int, hi: int, busy: float = 0.4, double: bool = False) -> None:
    """One bar of melody in ``lo..hi`` (plus the lift), legato; ``double`` adds the next
    chord tone at least a third below each note on a beat."""
    onsets = melody_onsets(w.rng, bar, busy)
    lo, hi = lo + v.lift, hi + v.lift
    for pos, end in zip(onsets, onsets[1:] + [bar.n]):
        v.melody = melody_pitch(w.rng, bar, min(max(v.melody, lo), hi), pos, lo, hi)
        w.note(bar, pos, end - pos, v.melody, "melody")
        if double and pos % bar.beat == 0:
            below = nearest(bar.chord.tones, v.melody - 4, v.melody - 9, v.melody - 3)
            w.note(bar, pos, end - pos, below, "inner")


def bass_note(bar: Bar, v: Voices, lo: int, hi: int, tone: int = 0) -> int:
    """Chord tone ``tone`` (0 root, 2 fifth) in ``lo..hi`` nearest the last bass note."""
    v.bass = nearest((bar.chord.tones[tone],), v.bass, lo, hi)
    return v.bass


# ---------------------------------------------------------------- textures


def alberti(w: Writer, bar: Bar, v: Voices) -> None:
    """Melody over an Alberti bass: a close chord broken low-high-middle-high."""
    melody_bar(w, bar, v, 67, 86)
    low, mid, high = close_chord(bar.chord.tones, (v.lower + 60) // 2, 3, 45, 67)
    v.lower = high
    for pos in range(bar.n):
        w.note(bar, pos, 1, (low, high, mid, high)[pos % 4], "bass" if pos == 0 else "inner")


def waltz(w: Writer, bar: Bar, v: Voices) -> None:
    """Melody; the bass (an octave if the pattern is odd) on the downbeat, a close chord
    on every other beat."""
    melody_bar(w, bar, v, 67, 88)
    bass = bass_note(bar, v, 36, 50)
    for pitch in (bass, bass - 12) if v.pattern % 2 else (bass,):
        w.note(bar, 0, bar.beat, pitch, "bass", hold=0.9)
    chord = close_chord(bar.chord.tones, (v.lower + 64) // 2, 3, 52, 69)
    v.lower = chord[-1]
    for beat in range(1, bar.meter.beats):
        for pitch in chord:
            w.note(bar, beat * bar.beat, bar.beat, pitch, "inner", hold=0.6)


def stride(w: Writer, bar: Bar, v: Voices) -> None:
    """Stride: bass octaves low (root, then fifth) and middle chords in turn on the
    beats; a melody doubled below on the beats."""
    melody_bar(w, bar, v, 67, 90, busy=0.5, double=True)
    chord = close_chord(bar.chord.tones, (v.lower + 64) // 2, 3 + v.pattern % 2, 52, 70)
    v.lower = chord[-1]
    for beat in range(bar.meter.beats):
        if beat % 2 == 0:
            bass = bass_note(bar, v, 33, 45, tone=0 if beat == 0 else 2)
            for pitch in (bass - 12, bass):
                w.note(bar, beat * bar.beat, bar.beat, pitch, "bass", hold=0.7)
        else:
            for pitch in chord:
                w.note(bar, beat * bar.beat, bar.beat, pitch, "inner", hold=0.6)


def arpeggios(w: Writer, bar: Bar, v: Voices) -> None:
    """A broken chord over 2-4 octaves from the bass, one note per step: up, up-down or
    down-up (the pattern); the bass held through the bar, the top note accented."""
    root = bass_note(bar, v, 28, 52)
    path = pitches_in(bar.chord.tones, root, min(root + 12 * (2 + v.pattern % 3), MIDI_MAX))
    shape = (v.pattern // 3) % 3
    if shape == 0:
        cycle = path + path[-2:0:-1]
    elif shape == 1:
        cycle = path
    else:
        cycle = path[::-1] + path[1:-1]
    for pos in range(bar.n):
        pitch = cycle[pos % len(cycle)]
        role = "bass" if pitch == root else "melody" if pitch == path[-1] else "inner"
        w.note(bar, pos, bar.n if pos == 0 else 2, pitch, role)


SCALE_GAPS = (2, 5, 7, 9)  # degrees between parallel voices: thirds, sixths, octaves, tenths


def _scale_anchor(bar: Bar, target: int, gap: int) -> int:
    """The chord tone in 48..80 nearest ``target`` whose note ``gap`` degrees above is a
    chord tone too (any chord tone if none is)."""
    tones, scale = bar.chord.tones, bar.chord.scale
    good = [p for p in pitches_in(tones, 48, 80) if scale_step(p, scale, gap) % 12 in tones]
    return min(good or pitches_in(tones, 48, 80), key=lambda p: (abs(p - target), p))


def parallel_scales(w: Writer, bar: Bar, v: Voices) -> None:
    """A scale of the chord's own scale in two parallel voices (:data:`SCALE_GAPS`),
    from a chord tone, turning at 48 and 80; doubled 1-2 octaves below or over a bass."""
    gap, scale = SCALE_GAPS[v.pattern % 4], bar.chord.scale
    doubling = (0, 12, 24)[(v.pattern // 4) % 3]
    v.lower = _scale_anchor(bar, v.lower + v.direction * 2, gap)
    if not doubling:
        w.note(bar, 0, bar.n, bass_note(bar, v, 31, 45), "bass", hold=0.9)
    for pos in range(bar.n):
        if pos:
            if not 48 <= scale_step(v.lower, scale, v.direction) <= 80:
                v.direction = -v.direction
            v.lower = scale_step(v.lower, scale, v.direction)
        w.note(bar, pos, 1, scale_step(v.lower, scale, gap), "melody")
        w.note(bar, pos, 1, v.lower, "inner")
        if doubling:
            w.note(bar, pos, 1, v.lower - doubling, "bass")


def _block_onsets(rng: np.random.Generator, bar: Bar, busy: float) -> list[int]:
    """Chord onsets: the downbeat, ``busy`` of the other beats, a few half beats."""
    half = bar.beat // 2
    beats = [b * bar.beat for b in range(1, bar.meter.beats) if rng.random() < busy]
    halves = [b * bar.beat + half for b in range(bar.meter.beats) if half and rng.random() < 0.15]
    return sorted({0, *beats, *halves})


def block_chords(w: Writer, bar: Bar, v: Voices) -> None:
    """Chords in both hands: the bass (and its octave for odd patterns) and 3-4 close
    chord tones, the top voice moving by small steps as a melody."""
    onsets = _block_onsets(w.rng, bar, (0.3, 0.6, 0.9)[v.pattern % 3])
    bass = bass_note(bar, v, 31, 48)
    low = [bass, bass + 12] if v.pattern % 2 else [bass]
    for pos, end in zip(onsets, onsets[1:] + [bar.n]):
        top = v.melody + int(w.rng.integers(-3, 4))
        chord = close_chord(bar.chord.tones, top, 3 + (v.pattern // 2) % 2, 55 + v.lift, 86 + v.lift)
        v.melody = chord[-1]
        for pitch in low + chord:
            role = "melody" if pitch == chord[-1] else "bass" if pitch == bass else "inner"
            w.note(bar, pos, end - pos, pitch, role, hold=0.9)


CONSONANT = (0, 3, 4, 7, 8, 9)  # intervals (mod 12) counted consonant between two voices


def _line_onsets(rng: np.random.Generator, bar: Bar, unit: int) -> list[int]:
    """Every ``unit`` steps, a fifth of the off-beat ones tied over (dropped)."""
    return [p for p in range(0, bar.n, unit) if p % bar.beat == 0 or rng.random() < 0.8]


def _lower_line(w: Writer, bar: Bar, v: Voices, unit: int) -> list[tuple[int, int, int]]:
    """The lower voice (40..64): chord tones on beats, scale steps between."""
    onsets = _line_onsets(w.rng, bar, unit)
    notes = []
    for pos, end in zip(onsets, onsets[1:] + [bar.n]):
        v.lower = melody_pitch(w.rng, bar, v.lower, pos, 40, 64)
        notes.append((pos, end, v.lower))
    return notes


def _upper_pitch(w: Writer, bar: Bar, v: Voices, pos: int, low: tuple[int, int]) -> int:
    """The upper voice's next pitch: a chord tone on the downbeat; otherwise steps and
    leaps scored for consonance with the lower voice (``(pitch, motion)``) and motion
    against it."""
    lo, hi = 60 + v.lift, 84 + v.lift
    if pos == 0:
        near = nearest(bar.chord.tones, v.upper + int(w.rng.integers(-3, 4)), lo, hi)
        return near if (near - low[0]) % 12 else nearest(bar.chord.tones, near + 3, lo, hi)
    moves = [scale_step(v.upper, bar.chord.scale, s) for s in (-2, -1, 1, 2)]
    if pos % bar.beat == 0:
        moves += pitches_in(bar.chord.tones, v.upper - 5, v.upper + 5)

    def cost(p: int) -> float:
        dissonant = (p - low[0]) % 12 not in CONSONANT
        similar = (p - v.upper) * low[1] > 0
        return 0.4 * abs(p - v.upper) + 4 * dissonant + 1.5 * similar + 6 * (not lo <= p <= hi) + w.rng.random()

    return min(moves, key=cost)


def counterpoint(w: Writer, bar: Bar, v: Voices) -> None:
    """Two voices, one moving every step and the other every beat (in turn, bar by bar):
    chord tones on the downbeat, mostly consonant, contrary motion preferred. Unpedalled."""
    fast = (bar.index + v.pattern) % 2
    lower = _lower_line(w, bar, v, 1 if fast else bar.beat)
    for pos, end, pitch in lower:
        w.note(bar, pos, end - pos, pitch, "inner")
    onsets = _line_onsets(w.rng, bar, bar.beat if fast else 1)
    for pos, end in zip(onsets, onsets[1:] + [bar.n]):
        i = max(k for k, note in enumerate(lower) if note[0] <= pos)
        motion = lower[i][2] - lower[i - 1][2] if i and lower[i][0] == pos else 0
        v.upper = _upper_pitch(w, bar, v, pos, (lower[i][2], motion))
        w.note(bar, pos, end - pos, v.upper, "melody")


def _trill(w: Writer, bar: Bar, v: Voices) -> None:
    """A trill on a chord tone with its upper scale neighbour, one note per step,
    ending with a turn (lower neighbour, main note) in the last two steps."""
    main = nearest(bar.chord.tones, v.melody + int(w.rng.integers(-4, 5)), 67 + v.lift, 88 + v.lift)
    v.melody = main
    upper = scale_step(main, bar.chord.scale, 1)
    turn = [scale_step(main, bar.chord.scale, -1), main] if bar.n >= 6 else []
    line = [(main, upper)[i % 2] for i in range(bar.n - len(turn))] + turn
    for pos, pitch in enumerate(line):
        w.note(bar, pos, 1, pitch, "melody")


def _tremolo(w: Writer, bar: Bar, first: list[int], second: list[int], role: str) -> None:
    """A measured tremolo: ``first`` and ``second`` in turn, one per step."""
    for pos in range(bar.n):
        for pitch in (first, second)[pos % 2]:
            w.note(bar, pos, 1, pitch, role)


def trills_tremolos(w: Writer, bar: Bar, v: Voices) -> None:
    """By the pattern: a trill over held chords, a trill over a broken-octave tremolo in
    the bass, or a chord tremolo (lower and upper pair in turn) over the octave tremolo;
    one bar in four a plain melody over the same left hand."""
    mode = v.pattern % 3
    bass = bass_note(bar, v, 33, 48)
    if mode == 2:
        chord = close_chord(bar.chord.tones, v.melody, 4, 55 + v.lift, 86 + v.lift)
        v.melody = chord[-1]
        _tremolo(w, bar, chord[:2], chord[2:], "inner")
    elif w.rng.random() < 0.25:
        melody_bar(w, bar, v, 67, 88)
    else:
        _trill(w, bar, v)
    if mode == 0:
        for pitch in [bass] + close_chord(bar.chord.tones, 60, 3, 50, 64):
            w.note(bar, 0, bar.n, pitch, "bass" if pitch == bass else "inner", hold=0.9)
    else:
        _tremolo(w, bar, [bass - 12], [bass], "bass")


def repeated_chords(w: Writer, bar: Bar, v: Voices) -> None:
    """A chord (octave to four notes, by the pattern) struck on every step, its top voice
    moving beat by beat; bass octaves on the beats (root, then fifth)."""
    size = 2 + v.pattern % 3
    for beat in range(bar.meter.beats):
        top = nearest(bar.chord.tones, v.melody + int(w.rng.integers(-3, 4)), 66 + v.lift, 86 + v.lift)
        chord = close_chord(bar.chord.tones, top, min(size, 3), 54, 92)
        chord = [chord[-1] - 12, chord[-1]] if size == 2 else chord + [chord[0] + 12] * (size == 4)
        v.melody = chord[-1]
        bass = bass_note(bar, v, 33, 48, tone=0 if beat == 0 else 2)
        for pitch in (bass - 12, bass):
            w.note(bar, beat * bar.beat, bar.beat, pitch, "bass", hold=0.8)
        for step in range(bar.beat):
            for pitch in sorted(set(chord)):
                role = "melody" if pitch == chord[-1] else "inner"
                w.note(bar, beat * bar.beat + step, 1, pitch, role, hold=0.55)


def _nocturne(w: Writer, bar: Bar, v: Voices) -> None:
    """Left hand broken over a twelfth from the root, up and back, one note per step."""
    root = bass_note(bar, v, 31, 45)
    path = pitches_in(bar.chord.tones, root, root + 19)
    cycle = path + path[-2:0:-1]
    for pos in range(bar.n):
        w.note(bar, pos, bar.n if pos == 0 else 2, cycle[pos % len(cycle)], "bass" if pos == 0 else "inner")


def _afterbeat(w: Writer, bar: Bar, v: Voices) -> None:
    """Bass on each beat (root, then fifth), a close chord on each half beat after it."""
    chord = close_chord(bar.chord.tones, 60, 3, 50, 65)
    half = max(1, bar.beat // 2)
    for beat in range(bar.meter.beats):
        pos = beat * bar.beat
        w.note(bar, pos, half, bass_note(bar, v, 33, 48, tone=0 if beat == 0 else 2), "bass", hold=0.8)
        for pitch in chord:
            w.note(bar, pos + half, half, pitch, "inner", hold=0.7)


def _held_bass_chords(w: Writer, bar: Bar, v: Voices) -> None:
    """A bass held through the bar and a close chord on every beat."""
    w.note(bar, 0, bar.n, bass_note(bar, v, 31, 45), "bass")
    chord = close_chord(bar.chord.tones, 60, 3, 48, 64)
    for beat in range(bar.meter.beats):
        for pitch in chord:
            w.note(bar, beat * bar.beat, bar.beat, pitch, "inner", hold=0.8)


def melody_accompaniment(w: Writer, bar: Bar, v: Voices) -> None:
    """A cantabile melody over a left-hand accompaniment chosen by the pattern: a
    nocturne-like broken chord, an after-beat, or a held bass under chords."""
    melody_bar(w, bar, v, 65, 88, busy=0.45)
    (_nocturne, _afterbeat, _held_bass_chords)[v.pattern % 3](w, bar, v)


def cadence(w: Writer, bar: Bar, v: Voices) -> None:
    """The last bar: the bass octave and a four-note close chord, held."""
    bass = bass_note(bar, v, 28, 43)
    chord = close_chord(bar.chord.tones, v.melody, 4, 50 + v.lift, 88 + v.lift)
    for pitch in [bass, bass + 12] + chord:
        role = "melody" if pitch == chord[-1] else "bass" if pitch <= bass + 12 else "inner"
        w.note(bar, 0, bar.n, pitch, role, hold=0.9)


# ---------------------------------------------------------------- kinds


@dataclass(frozen=True)
class TextureSpec:
    """A texture: its bar writer, the band of step rates its tempo is drawn from (steps/s,
    the fastest voice's notes/s), the steps per beat it allows in simple and compound
    meters, its meters, and how often a piece of it is pedalled."""

    write: Callable[[Writer, Bar, Voices], None]
    rate: tuple[float, float]
    simple: tuple[int, ...]
    compound: tuple[int, ...]
    meters: tuple[str, ...]
    pedal: float


ALL_METERS = tuple(METERS)
TEXTURES = {
    "alberti": TextureSpec(alberti, (6.0, 13.0), (2, 4), (3, 6), ("2/4", "3/4", "4/4"), 0.5),
    "waltz": TextureSpec(waltz, (4.0, 7.0), (2,), (3,), ("3/4",), 0.8),
    "stride": TextureSpec(stride, (4.0, 9.0), (2, 4), (3,), ("2/4", "4/4"), 0.5),
    "arpeggios": TextureSpec(arpeggios, (7.0, 14.0), (3, 4), (3, 6), ALL_METERS, 1.0),
    "parallel_scales": TextureSpec(parallel_scales, (6.0, 12.0), (4,), (6,), ALL_METERS, 0.0),
    "block_chords": TextureSpec(block_chords, (1.2, 4.0), (1, 2), (1, 3), ALL_METERS, 0.8),
    "counterpoint": TextureSpec(counterpoint, (3.0, 8.0), (2, 4), (3,), ALL_METERS, 0.0),
    "trills_tremolos": TextureSpec(trills_tremolos, (9.0, 14.5), (4, 8), (6,), ALL_METERS, 0.3),
    "repeated_chords": TextureSpec(repeated_chords, (6.0, 12.0), (3, 4), (3, 6), ALL_METERS, 0.6),
    "melody_accompaniment": TextureSpec(melody_accompaniment, (4.0, 10.0), (2, 4), (3, 6), ALL_METERS, 0.9),
}  # fmt: skip
PIANO = "piano"  # the kind that changes texture at each phrase
PIANO_BPM = {2: (60.0, 132.0), 3: (40.0, 84.0)}  # its tempo range, by the meter's subdivision
KINDS = (*TEXTURES, PIANO)
# Notes/s (all voices) of 45-s pieces: the range over 300 seeds, rounded outward.
DENSITY = {
    "alberti": (7.0, 17.0), "waltz": (6.0, 13.0), "stride": (4.0, 17.0), "arpeggios": (6.0, 12.0),
    "parallel_scales": (11.0, 35.0), "block_chords": (1.5, 15.0), "counterpoint": (3.0, 10.0),
    "trills_tremolos": (7.0, 42.0), "repeated_chords": (13.0, 50.0), "melody_accompaniment": (3.0, 18.0),
    PIANO: (3.0, 27.0),
}  # fmt: skip


def steps_per_beat(spec: TextureSpec, meter: Meter, beat: float) -> int:
    """The texture's steps per beat whose rate (steps/s) is nearest the middle of its
    band (geometric), among those at most :data:`MAX_RATE` (the fewest if none is)."""
    options = spec.compound if meter.sub == 3 else spec.simple
    allowed = [k for k in options if k / beat <= MAX_RATE] or [min(options)]
    middle = math.sqrt(spec.rate[0] * spec.rate[1])
    return min(allowed, key=lambda k: abs(math.log(k / beat / middle)))


def tempo_options(spec: TextureSpec, meter: Meter) -> list[tuple[int, float, float]]:
    """(steps per beat, lowest rate, highest rate) for each step count whose rates in the
    texture's band have a beat inside the meter's tempo range."""
    options = []
    for k in spec.compound if meter.sub == 3 else spec.simple:
        lo, hi = max(spec.rate[0], k * meter.bpm[0] / 60), min(spec.rate[1], k * meter.bpm[1] / 60)
        if lo < hi:
            options.append((k, lo, hi))
    return options


def _draw_beat(rng: np.random.Generator, kind: str, meter: Meter) -> float:
    """A beat length (s): for a texture, from a step rate in its band; for ``piano``, a
    tempo in :data:`PIANO_BPM`."""
    if kind == PIANO:
        return 60.0 / rng.uniform(*PIANO_BPM[meter.sub])
    options = tempo_options(TEXTURES[kind], meter)
    k, lo, hi = options[int(rng.integers(len(options)))]
    return k / rng.uniform(lo, hi)


def draw_skeleton(rng: np.random.Generator, seconds: float, kind: str) -> Skeleton:
    """A skeleton for ``kind``: one of its meters, a tempo, a key (40% minor) and as many
    bars of progression as fit in ``seconds`` (none if not one)."""
    meters = TEXTURES[kind].meters if kind in TEXTURES else ALL_METERS
    meter = METERS[meters[int(rng.integers(len(meters)))]]
    beat = _draw_beat(rng, kind, meter)
    bars = int((seconds + 1e-9) // (beat * meter.beats))
    tonic, minor = int(rng.integers(12)), bool(rng.random() < 0.4)
    numerals, phrases = draw_progression(rng, minor, bars)
    return Skeleton(tonic, minor, meter, beat, progression(tonic, minor, numerals), tuple(phrases))


def _sections(kind: str, sk: Skeleton, rng: np.random.Generator) -> list[tuple[str, int, int]]:
    """(texture, first bar, end bar): the whole piece, or for ``piano`` each phrase in a
    texture fitting the meter, never the same twice running."""
    if kind != PIANO:
        return [(kind, 0, len(sk.chords))]
    names = [name for name, spec in TEXTURES.items() if sk.meter.name in spec.meters]
    ends = list(sk.phrases[1:]) + [len(sk.chords)]
    sections: list[tuple[str, int, int]] = []
    for first, end in zip(sk.phrases, ends):
        choice = [n for n in names if not sections or n != sections[-1][0]]
        sections.append((choice[int(rng.integers(len(choice)))], first, end))
    return sections


def realise(kind: str, sk: Skeleton, rng: np.random.Generator) -> Texture:
    """The skeleton played in texture ``kind`` (one of :data:`KINDS`), its last bar a
    held :func:`cadence`."""
    if kind not in KINDS:
        raise ValueError(f"texture {kind!r} is unknown; textures are {', '.join(KINDS)}")
    w = Writer(sk, rng)
    for name, first, end in _sections(kind, sk, rng):
        spec = TEXTURES[name]
        steps = steps_per_beat(spec, sk.meter, sk.beat)
        v = Voices(int(rng.integers(70, 80)), int(rng.integers(70, 80)), 52, int(rng.integers(33, 49)),
                   int(rng.integers(18)), int(rng.integers(-5, 13)))  # fmt: skip
        pedalled = rng.random() < spec.pedal
        for index in range(first, end):
            bar = w.bar(index, steps)
            (cadence if index == len(sk.chords) - 1 else spec.write)(w, bar, v)
            if pedalled:
                w.pedal_bar(bar)
    return w.texture()


def generate(kind: str, rng: np.random.Generator, seconds: float) -> Texture:
    """A seeded piece of texture ``kind`` lasting at most ``seconds`` after the lead-in."""
    if kind not in KINDS:
        raise ValueError(f"texture {kind!r} is unknown; textures are {', '.join(KINDS)}")
    return realise(kind, draw_skeleton(rng, seconds, kind), rng)
