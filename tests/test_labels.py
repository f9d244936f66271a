import numpy as np

from pianotx.labels import notes_to_rolls
from pianotx.midi import Notes

FR = 31.25  # frames per second: frame i is centred at i * 0.032 s


def test_known_notes_give_exact_cells():
    # C4 (60) from 0.032 s to 0.128 s: frames 1, 2, 3; A0 (21) 0.5..0.6 s: round(15.625)=16 .. round(18.75)=19
    notes = Notes.from_lists([(0.032, 0.128), (0.5, 0.6)], [60, 21])
    frames, onsets = notes_to_rolls(notes, 24, FR)
    assert frames.dtype == np.uint8 and frames.shape == (24, 88)
    assert np.flatnonzero(frames[:, 60 - 21]).tolist() == [1, 2, 3]
    assert np.flatnonzero(frames[:, 0]).tolist() == [16, 17, 18]
    assert np.argwhere(onsets).tolist() == [[1, 39], [16, 0]]
    assert frames.sum() == 6


def test_very_short_note_keeps_one_frame_and_edges_are_cut():
    notes = Notes.from_lists([(0.100, 0.101), (0.9, 2.0), (-0.1, 0.07)], [108, 50, 70])
    frames, onsets = notes_to_rolls(notes, 32, FR)
    assert np.flatnonzero(frames[:, 87]).tolist() == [3]
    assert np.flatnonzero(frames[:, 50 - 21]).tolist() == list(range(28, 32))
    # starts before the roll: sounding frames kept, no onset cell
    assert np.flatnonzero(frames[:, 70 - 21]).tolist() == [0, 1]
    assert onsets[:, 70 - 21].sum() == 0
    assert frames.sum(axis=1)[[0, 3, 28]].tolist() == [1, 1, 1]


def test_empty_notes_give_empty_rolls():
    frames, onsets = notes_to_rolls(Notes.empty(), 5, FR)
    assert frames.shape == (5, 88) and frames.sum() == 0 and onsets.sum() == 0
