"""Notes in memory, and reading and writing them as MIDI (pretty_midi).

A :class:`Notes` is three parallel arrays, the layout mir_eval expects:
``intervals`` (n, 2) float64 onset/offset seconds, ``pitches`` (n,) int MIDI numbers,
``velocities`` (n,) int 1..127. Notes are kept sorted by onset, then pitch.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pianotx.config import MIDI_MAX, MIDI_MIN
from pianotx.errors import PianotxError
from pianotx.files import atomic_path

MIDI_EXTENSIONS = (".mid", ".midi")
# What :func:`read_notes` reads: a file lasting longer, or whose last event lies at a
# later tick, is refused before pretty_midi builds its tick-to-time table (8 bytes a tick)
# or anything is sized by its length: a few bytes can say "a note of 24 hours".
MAX_SECONDS = 2 * 3600.0
MAX_TICKS = 3 * 10**7  # 240 MB of table; 2 hours at 960 ticks a beat and 120 bpm is 13.8 M


class MidiError(PianotxError, ValueError):
    """A MIDI file cannot be read or has nothing usable in it."""


@dataclass(frozen=True)
class Notes:
    """Notes as parallel arrays (see module docstring)."""

    intervals: np.ndarray  # (n, 2) float64 seconds
    pitches: np.ndarray  # (n,) int64 MIDI
    velocities: np.ndarray  # (n,) int64

    @staticmethod
    def empty() -> Notes:
        return Notes(np.zeros((0, 2)), np.zeros(0, np.int64), np.zeros(0, np.int64))

    @staticmethod
    def from_lists(
        intervals: list[tuple[float, float]] | np.ndarray,
        pitches: list[int] | np.ndarray,
        velocities: list[int] | np.ndarray | None = None,
    ) -> Notes:
        """Build sorted notes; velocities default to 80."""
        iv = np.asarray(intervals, dtype=np.float64).reshape(-1, 2)
        p = np.asarray(pitches, dtype=np.int64).reshape(-1)
        v = np.full(len(p), 80, np.int64) if velocities is None else np.asarray(velocities, np.int64)
        if not (len(iv) == len(p) == len(v)):
            raise ValueError("intervals, pitches and velocities differ in length")
        order = np.lexsort((p, iv[:, 0])) if len(p) else np.zeros(0, np.int64)
        return Notes(iv[order], p[order], v[order])

    def __len__(self) -> int:
        return len(self.pitches)

    @property
    def end_time(self) -> float:
        return float(self.intervals[:, 1].max()) if len(self) else 0.0

    def shifted(self, seconds: float) -> Notes:
        """The same notes ``seconds`` later (earlier if negative)."""
        return Notes(self.intervals + seconds, self.pitches.copy(), self.velocities.copy())

    def from_zero(self) -> Notes:
        """Notes ending after 0 s, onsets before 0 s moved to 0 (after an early-audio shift)."""
        keep = self.intervals[:, 1] > 0
        iv = self.intervals[keep].copy()
        iv[:, 0] = np.maximum(iv[:, 0], 0.0)
        return Notes(iv, self.pitches[keep], self.velocities[keep])

    def in_piano_range(self) -> Notes:
        """Only the notes within MIDI 21..108."""
        keep = (self.pitches >= MIDI_MIN) & (self.pitches <= MIDI_MAX)
        return Notes(self.intervals[keep], self.pitches[keep], self.velocities[keep])

    def save_npz(self) -> dict[str, np.ndarray]:
        """Arrays for ``np.savez`` (see :meth:`from_arrays`)."""
        return {"intervals": self.intervals, "pitches": self.pitches, "velocities": self.velocities}

    @staticmethod
    def from_arrays(arrays: dict[str, np.ndarray] | np.lib.npyio.NpzFile) -> Notes:
        return Notes(
            np.asarray(arrays["intervals"], np.float64).reshape(-1, 2),
            np.asarray(arrays["pitches"], np.int64),
            np.asarray(arrays["velocities"], np.int64),
        )


def _pedal_intervals(cc: list[tuple[float, int]], end: float, threshold: int) -> list[tuple[float, float]]:
    """Spans where the sustain pedal (value >= threshold) is down."""
    spans, down_at = [], None
    for time, value in sorted(cc):
        if value >= threshold and down_at is None:
            down_at = time
        elif value < threshold and down_at is not None:
            spans.append((down_at, time))
            down_at = None
    if down_at is not None:
        spans.append((down_at, max(end, down_at)))
    return spans


def apply_sustain(notes: Notes, pedal: list[tuple[float, float]]) -> Notes:
    """Extend notes released while the pedal is down to the pedal's release.

    A sustained note still ends when the same key is struck again (the damper is lifted
    by the new note), as in the Onsets and Frames label convention.
    """
    if not len(notes) or not pedal:
        return notes
    iv = notes.intervals.copy()
    for i, (_, off) in enumerate(iv):
        for down, up in pedal:
            if down <= off < up:
                iv[i, 1] = up
                break
    for pitch in np.unique(notes.pitches):
        idx = np.flatnonzero(notes.pitches == pitch)
        idx = idx[np.argsort(iv[idx, 0], kind="stable")]
        for a, b in zip(idx[:-1], idx[1:]):
            # cut the pedal extension at the re-strike, never the note as played
            iv[a, 1] = min(iv[a, 1], max(iv[b, 0], notes.intervals[a, 1]))
    return Notes.from_lists(iv, notes.pitches, notes.velocities)


def midi_extent(midi: object) -> tuple[int, float]:
    """The last event of a parsed ``mido.MidiFile``: its tick and its time in seconds.

    Each track's ticks are summed and the latest end kept; the seconds follow the tempo
    changes of the first track (120 bpm until the first), as pretty_midi times the
    notes. Nothing is allocated by the file's length.

    Raises:
        MidiError: a time division of zero ticks a beat.
    """
    ppq = int(midi.ticks_per_beat)  # type: ignore[attr-defined]
    if ppq <= 0:
        raise MidiError(f"MIDI has a time division of {ppq} ticks a beat")
    last, tempos = 0, []
    for number, track in enumerate(midi.tracks):  # type: ignore[attr-defined]
        tick = 0
        for message in track:
            tick += message.time
            if message.type == "set_tempo" and number == 0:
                tempos.append((tick, message.tempo))
        last = max(last, tick)
    seconds, at, tempo = 0.0, 0, 500000
    for tick, new in sorted(tempos):
        seconds += (tick - at) * tempo / 1e6 / ppq
        at, tempo = tick, new
    return last, seconds + (last - at) * tempo / 1e6 / ppq


def check_extent(midi: object) -> None:
    """Refuse a parsed ``mido.MidiFile`` longer than :data:`MAX_SECONDS` or with events
    beyond tick :data:`MAX_TICKS`.

    Raises:
        MidiError: the length and the limit.
    """
    ticks, seconds = midi_extent(midi)
    if seconds > MAX_SECONDS:
        limit = f"{MAX_SECONDS:.0f} s ({MAX_SECONDS / 3600:g} hours)"
        raise MidiError(f"MIDI lasts {seconds:.0f} s, longer than the {limit} pianotx reads")
    if ticks > MAX_TICKS:
        raise MidiError(f"MIDI's last event lies at tick {ticks}, beyond the {MAX_TICKS} ticks pianotx reads")


def read_notes(path: str | Path, sustain: bool = True, pedal_threshold: int = 64) -> Notes:
    """All non-drum notes of a MIDI file, in the piano range, optionally pedal-extended.

    Raises:
        MidiError: the file does not parse, lasts longer than :data:`MAX_SECONDS` (or
            reaches beyond tick :data:`MAX_TICKS`), or has no notes in MIDI 21..108.
    """
    import mido
    import pretty_midi

    pretty_midi.pretty_midi.MAX_TICK = max(pretty_midi.pretty_midi.MAX_TICK, MAX_TICKS + 1)
    try:
        midi = mido.MidiFile(file=io.BytesIO(Path(path).read_bytes()), charset="latin1")
        check_extent(midi)
        pm = pretty_midi.PrettyMIDI(mido_object=midi)
    except MidiError:
        raise
    except Exception as exc:  # pretty_midi/mido raise many types on bad files
        detail = str(exc).strip() or "the file ends early or is malformed"
        raise MidiError(f"MIDI does not parse ({type(exc).__name__}: {detail})") from exc
    all_notes: list[Notes] = []
    for inst in pm.instruments:
        if inst.is_drum or not inst.notes:
            continue
        n = Notes.from_lists(
            [(x.start, x.end) for x in inst.notes],
            [x.pitch for x in inst.notes],
            [x.velocity for x in inst.notes],
        )
        if sustain:
            cc = [(c.time, c.value) for c in inst.control_changes if c.number == 64]
            n = apply_sustain(n, _pedal_intervals(cc, n.end_time, pedal_threshold))
        all_notes.append(n)
    if not all_notes:
        raise MidiError("MIDI has no notes")
    merged = Notes.from_lists(
        np.concatenate([n.intervals for n in all_notes]),
        np.concatenate([n.pitches for n in all_notes]),
        np.concatenate([n.velocities for n in all_notes]),
    ).in_piano_range()
    keep = merged.intervals[:, 1] > merged.intervals[:, 0]
    merged = Notes(merged.intervals[keep], merged.pitches[keep], merged.velocities[keep])
    if not len(merged):
        raise MidiError(f"MIDI has no notes in the piano range {MIDI_MIN}..{MIDI_MAX}")
    return merged


def write_midi(
    notes: Notes,
    path: str | Path,
    program: int = 0,
    pedal: Sequence[tuple[float, float]] = (),
    text: str | None = None,
) -> None:
    """Write notes as a one-track piano MIDI file, atomically (temp file, then rename).

    Args:
        notes: the keys as struck and released.
        path: the ``.mid`` file.
        program: General MIDI program (0: acoustic grand piano).
        pedal: sustain pedal spans ``(down, up)`` in seconds, written as CC64 127 at each
            down and 0 at each up; :func:`read_notes` with ``sustain=True`` reads the
            file back with the notes held on to the pedal's release.
        text: a text meta event written at time 0 (what made the file).
    """
    import pretty_midi

    pm = pretty_midi.PrettyMIDI()
    inst = pretty_midi.Instrument(program=program, name="piano")
    for (start, end), pitch, vel in zip(notes.intervals, notes.pitches, notes.velocities):
        inst.notes.append(pretty_midi.Note(int(np.clip(vel, 1, 127)), int(pitch), float(start), float(end)))
    for down, up in pedal:
        inst.control_changes.append(pretty_midi.ControlChange(64, 127, float(down)))
        inst.control_changes.append(pretty_midi.ControlChange(64, 0, float(up)))
    pm.instruments.append(inst)
    if text:
        pm.text_events.append(pretty_midi.Text(text, 0.0))
    with atomic_path(path) as tmp:
        pm.write(str(tmp))
