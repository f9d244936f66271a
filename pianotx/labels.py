"""Notes -> 88-key frame and onset rolls on the feature frame grid.

Frame ``i`` is centred on ``i / frame_rate`` seconds. A note [start, end) occupies
frames ``round(start * fr)`` up to, not including, ``round(end * fr)``, and at least
its onset frame; its onset roll cell is its first frame. Key ``k`` is MIDI ``21 + k``.
"""

from __future__ import annotations

import numpy as np

from pianotx.config import MIDI_MIN, N_KEYS
from pianotx.midi import Notes


def note_frames(notes: Notes, frame_rate: float) -> tuple[np.ndarray, np.ndarray]:
    """First and end (exclusive) frame of each note, (n,) int64 each."""
    start = np.round(notes.intervals[:, 0] * frame_rate).astype(np.int64)
    end = np.round(notes.intervals[:, 1] * frame_rate).astype(np.int64)
    return start, np.maximum(end, start + 1)


def notes_to_rolls(notes: Notes, n_frames: int, frame_rate: float) -> tuple[np.ndarray, np.ndarray]:
    """Frame and onset rolls for ``notes``.

    Args:
        notes: notes in MIDI 21..108; parts outside [0, n_frames) frames are cut off.
        n_frames: length of the rolls.
        frame_rate: frames per second.

    Returns:
        frames: (n_frames, 88) uint8, 1 where a key sounds.
        onsets: (n_frames, 88) uint8, 1 at each note's first frame.
    """
    frames = np.zeros((n_frames, N_KEYS), np.uint8)
    onsets = np.zeros((n_frames, N_KEYS), np.uint8)
    if not len(notes):
        return frames, onsets
    start, end = note_frames(notes, frame_rate)
    keys = notes.pitches - MIDI_MIN
    for s, e, k in zip(start, end, keys):
        if e <= 0 or s >= n_frames:
            continue
        frames[max(s, 0) : min(e, n_frames), k] = 1
        if s >= 0:
            onsets[s, k] = 1
    return frames, onsets


def notes_to_velocities(notes: Notes, n_frames: int, frame_rate: float) -> np.ndarray:
    """Velocity targets: (n_frames, 88) uint8, each note's MIDI velocity (1..127) at its
    onset cell (the onset roll's cell of :func:`notes_to_rolls`), 0 elsewhere; where two
    notes of a key start in one frame, the louder."""
    out = np.zeros((n_frames, N_KEYS), np.uint8)
    if not len(notes):
        return out
    start, _ = note_frames(notes, frame_rate)
    keys = notes.pitches - MIDI_MIN
    inside = (start >= 0) & (start < n_frames)
    np.maximum.at(out, (start[inside], keys[inside]), np.clip(notes.velocities[inside], 1, 127).astype(np.uint8))
    return out
