"""Metrics: reference and estimated notes written inline, scores counted by hand."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from pianotx.evaluate import (
    METRIC_KEYS,
    evaluate_piece,
    format_table,
    found_references,
    frame_scores,
    mean_scores,
    note_scores,
    split_rolls,
    spread,
)
from pianotx.midi import Notes

# 4 reference notes, one second each.
REF = Notes.from_lists([(0.0, 1.0), (1.0, 2.0), (2.0, 3.0), (3.0, 4.0)], [60, 62, 64, 65])
# 5 estimated notes:
#   e0 onset +20 ms, offset exact           -> onset match, offset match
#   e1 onset +30 ms, offset 0.5 s early     -> onset match, offset miss (tol. 0.2 s)
#   e2 onset +40 ms, offset +0.1 s          -> onset match, offset match
#   e3 right time, pitch 66 (100 cents off) -> no match
#   e4 pitch 65, onset 60 ms late           -> no match (tolerance 50 ms)
EST = Notes.from_lists([(0.02, 1.0), (1.03, 1.5), (2.04, 3.1), (3.0, 4.0), (3.06, 4.0)], [60, 62, 64, 66, 65])


def test_note_scores_onsets_by_hand() -> None:
    scores = note_scores(REF, EST, offset=False)
    assert scores["precision"] == pytest.approx(3 / 5)
    assert scores["recall"] == pytest.approx(3 / 4)
    assert scores["f1"] == pytest.approx(2 / 3)


def test_found_references_are_those_note_recall_counts() -> None:
    assert found_references(REF, EST).tolist() == [True, True, True, False]
    assert found_references(REF, Notes.empty()).tolist() == [False] * 4
    assert found_references(Notes.empty(), EST).tolist() == []


def test_note_scores_with_offsets_by_hand() -> None:
    scores = note_scores(REF, EST, offset=True)
    assert scores["precision"] == pytest.approx(2 / 5)
    assert scores["recall"] == pytest.approx(2 / 4)
    assert scores["f1"] == pytest.approx(4 / 9)


def test_offset_min_tolerance_for_short_notes() -> None:
    # 0.1 s notes: 20 % is 20 ms, so the 50 ms minimum applies
    ref = Notes.from_lists([(0.0, 0.1), (1.0, 1.1)], [60, 60])
    est = Notes.from_lists([(0.0, 0.14), (1.0, 1.16)], [60, 60])  # +40 ms, +60 ms
    scores = note_scores(ref, est, offset=True)
    assert scores["precision"] == pytest.approx(1 / 2)
    assert scores["recall"] == pytest.approx(1 / 2)
    assert note_scores(ref, est, offset=False)["f1"] == pytest.approx(1.0)


def test_pitch_tolerance_is_half_a_semitone() -> None:
    ref = Notes.from_lists([(0.0, 1.0)], [60])
    assert note_scores(ref, Notes.from_lists([(0.0, 1.0)], [61]), offset=False)["f1"] == 0.0


def test_frame_scores_by_hand() -> None:
    # 10 ms grid. ref: 60 on frames 0-4 (5 cells), 64 on frames 2-3 (2 cells) = 7 cells
    #             est: 60 on frames 1-5 (5 cells), 67 on frame 2 (1 cell)       = 6 cells
    # true positives: 60 on frames 1-4 = 4 cells -> P = 4/6, R = 4/7
    ref = Notes.from_lists([(0.0, 0.05), (0.02, 0.04)], [60, 64])
    est = Notes.from_lists([(0.01, 0.06), (0.02, 0.03)], [60, 67])
    scores = frame_scores(ref, est)
    assert scores["precision"] == pytest.approx(4 / 6)
    assert scores["recall"] == pytest.approx(4 / 7)
    assert scores["f1"] == pytest.approx(8 / 13)


def test_frame_scores_other_hop() -> None:
    # 0.1 s grid: ref 60 on frames 0-9 (10 cells), est 60 on frames 5-14 (10 cells)
    ref = Notes.from_lists([(0.0, 1.0)], [60])
    est = Notes.from_lists([(0.5, 1.5)], [60])
    scores = frame_scores(ref, est, hop=0.1)
    assert scores["precision"] == pytest.approx(0.5)
    assert scores["recall"] == pytest.approx(0.5)


def test_frame_scores_perfect_and_disjoint() -> None:
    assert frame_scores(REF, REF) == {"precision": 1.0, "recall": 1.0, "f1": 1.0}
    other = Notes.from_lists([(5.0, 6.0)], [60])
    assert frame_scores(REF, other) == {"precision": 0.0, "recall": 0.0, "f1": 0.0}


@pytest.mark.parametrize(
    ("ref", "est"),
    [(REF, Notes.empty()), (Notes.empty(), EST), (Notes.empty(), Notes.empty())],
    ids=["no-estimate", "no-reference", "both-empty"],
)
def test_empty_sets_score_zero_without_warnings(ref: Notes, est: Notes) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        scores = evaluate_piece(ref, est)
    assert scores == dict.fromkeys(METRIC_KEYS, 0.0)


def test_evaluate_piece_keys_and_values() -> None:
    scores = evaluate_piece(REF, EST)
    assert list(scores) == [
        "frame_precision",
        "frame_recall",
        "frame_f1",
        "note_precision",
        "note_recall",
        "note_f1",
        "note_with_offset_precision",
        "note_with_offset_recall",
        "note_with_offset_f1",
        "note_with_velocity_precision",
        "note_with_velocity_recall",
        "note_with_velocity_f1",
    ]
    assert list(scores) == list(METRIC_KEYS)
    # every velocity is 80 on both sides: the velocity test passes wherever onsets match
    assert (scores["note_with_velocity_precision"], scores["note_with_velocity_recall"]) == (
        pytest.approx(3 / 5),
        pytest.approx(3 / 4),
    )
    assert scores["note_precision"] == pytest.approx(3 / 5)
    assert scores["note_with_offset_recall"] == pytest.approx(2 / 4)
    assert evaluate_piece(REF, REF) == dict.fromkeys(METRIC_KEYS, 1.0)


def test_mean_scores_is_the_mean_over_pieces() -> None:
    a = evaluate_piece(REF, REF)
    b = evaluate_piece(REF, EST)
    mean = mean_scores([a, b])
    assert mean["note_f1"] == pytest.approx((1.0 + 2 / 3) / 2)
    assert mean["note_with_offset_f1"] == pytest.approx((1.0 + 4 / 9) / 2)
    assert list(mean) == list(METRIC_KEYS)
    with pytest.raises(ValueError):
        mean_scores([])
    with pytest.raises(ValueError):
        mean_scores([a, {"note_f1": 1.0}])


def test_format_table() -> None:
    per_piece = {"bach_prelude": evaluate_piece(REF, EST), "x": evaluate_piece(REF, REF)}
    mean = mean_scores(list(per_piece.values()))
    table = format_table(per_piece, mean)
    lines = table.splitlines()
    assert "frame" in lines[0] and "note+offset" in lines[0]
    assert "note+velocity" in lines[0]
    assert lines[1].split() == ["piece"] + ["P", "R", "F1"] * 4
    row = lines[3].split()
    assert row[0] == "bach_prelude"
    assert row[4:7] == ["60.0", "75.0", "66.7"]  # note P, R, F1 in percent
    assert row[7:10] == ["40.0", "50.0", "44.4"]
    assert row[10:13] == ["60.0", "75.0", "66.7"]  # note+velocity: all velocities 80
    assert lines[4].split()[1:] == ["100.0"] * 12
    assert lines[-1].startswith("mean (2)")
    assert len({len(line) for line in lines}) == 1  # aligned columns


def test_tune_decoding_picks_the_threshold_of_the_best_note_f1():
    from pianotx.config import DecodingConfig
    from pianotx.evaluate import tune_decoding

    rate = 31.25
    frames = np.zeros((100, 88), np.float32)
    frames[10:30, 39] = 0.35  # MIDI 60, frames 10..29: only thresholds <= 0.35 see it
    frames[50:70, 43] = 0.9  # MIDI 64: every threshold sees it
    ref = Notes.from_lists([(10 / rate, 30 / rate), (50 / rate, 70 / rate)], [60, 64])
    best, f1 = tune_decoding([({"frames": frames}, ref)], rate, DecodingConfig())
    assert (best.threshold, best.onset_threshold, f1) == (0.3, 0.5, 1.0)
    loud = frames.copy()
    loud[10:30, 39] = 0.9
    best, f1 = tune_decoding([({"frames": loud}, ref)], rate, DecodingConfig())
    assert best == DecodingConfig() and f1 == 1.0  # the defaults win ties


def test_tune_decoding_drops_onsetless_runs_where_that_pays():
    from pianotx.config import DecodingConfig
    from pianotx.evaluate import tune_decoding

    rate = 31.25
    frames = np.zeros((100, 88), np.float32)
    onsets = np.zeros((100, 88), np.float32)
    frames[10:30, 39] = onsets[10, 39] = 0.9  # MIDI 60 with its onset
    frames[10:20, 51] = 0.9  # MIDI 72, its octave: 0.32 s of frames and no onset
    ref = Notes.from_lists([(10 / rate, 30 / rate)], [60])
    best, f1 = tune_decoding([({"frames": frames, "onsets": onsets}, ref)], rate, DecodingConfig())
    assert (best.onsetless_min_duration, f1) == (0.5, 1.0)
    ref = Notes.from_lists([(10 / rate, 30 / rate), (10 / rate, 20 / rate)], [60, 72])  # a note, its onset missed
    best, f1 = tune_decoding([({"frames": frames, "onsets": onsets}, ref)], rate, DecodingConfig())
    assert (best.onsetless_min_duration, f1) == (0.0, 1.0)  # nothing to gain: every run is kept


def test_tune_decoding_lets_a_weaker_onset_start_a_note_than_cut_one():
    from pianotx.config import DecodingConfig
    from pianotx.evaluate import tune_decoding

    rate = 31.25
    frames = np.zeros((100, 88), np.float32)
    onsets = np.zeros((100, 88), np.float32)
    frames[10:30, 39] = onsets[10, 39] = 0.9  # MIDI 60, struck once; its onset output
    onsets[20, 39] = 0.5  # bumps to 0.5 mid-note: a threshold up to 0.5 cuts it in two
    frames[40:50, 41], onsets[40, 41] = 0.9, 0.5  # MIDI 62, 0.32 s, a weak onset
    frames[10:20, 51] = 0.9  # MIDI 72, an octave of MIDI 60: 0.32 s of frames, no onset
    ref = Notes.from_lists([(10 / rate, 30 / rate), (40 / rate, 50 / rate)], [60, 62])
    best, f1 = tune_decoding([({"frames": frames, "onsets": onsets}, ref)], rate, DecodingConfig())
    # one onset threshold cannot do it: above 0.5 the short MIDI 62 goes with the octave
    assert (best.onset_threshold, best.onsetless_min_duration, best.onsetless_threshold, f1) == (0.6, 0.5, 0.3, 1.0)


def test_tuning_measures_the_median_onset_lag_as_the_latency():
    from pianotx.config import DecodingConfig
    from pianotx.evaluate import onset_errors, tune_decoding

    rate = 31.25
    frames = np.zeros((200, 88), np.float32)
    ref_onsets = []
    for i, start in enumerate((10, 50, 90, 130, 170)):
        frames[start : start + 20, 39 + i] = 0.9
        ref_onsets.append(start / rate - (0.004, 0.006, 0.008, 0.010, 0.030)[i])  # decoded late by these
    ref = Notes.from_lists([(t, t + 0.5) for t in ref_onsets], [60 + i for i in range(5)])
    est = Notes.from_lists([(s / rate, s / rate + 0.64) for s in (10, 50, 90, 130, 170)], [60 + i for i in range(5)])
    assert np.allclose(onset_errors(ref, est), [0.004, 0.006, 0.008, 0.010, 0.030])
    best, _ = tune_decoding([({"frames": frames}, ref)], rate, DecodingConfig())
    assert best.latency == 0.008  # the median, not the mean (0.0116)


def test_a_latency_moves_decoded_notes_earlier_and_drops_what_it_moves_before_zero():
    from pianotx.config import DecodingConfig
    from pianotx.decoding import decode

    rate = 31.25
    frames = np.zeros((100, 88), np.float32)
    frames[0:2, 39] = 0.9  # frames 0-1: 0.0-0.064 s
    frames[50:70, 43] = 0.9  # 1.6-2.24 s
    notes = decode(frames, rate, DecodingConfig(latency=0.01))
    assert notes.pitches.tolist() == [60, 64]
    assert np.allclose(notes.intervals, [[0.0, 0.054], [1.59, 2.23]])
    later = decode(frames, rate, DecodingConfig(latency=-0.02))
    assert np.allclose(later.intervals, [[0.02, 0.084], [1.62, 2.26]])
    blip = np.zeros((10, 88), np.float32)
    blip[0, 39] = blip[5, 40] = 0.9  # one frame each: 0-0.032 s and 0.16-0.192 s
    kept = decode(blip, rate, DecodingConfig(latency=0.05, min_duration=0.0))
    assert kept.pitches.tolist() == [61] and np.allclose(kept.intervals, [[0.11, 0.142]])
    with pytest.raises(ValueError, match="latency"):
        DecodingConfig(latency=0.06)


def test_split_rolls_serves_the_named_pieces_in_manifest_order(pairs_dir, tmp_path) -> None:
    from pianotx.build import build_dataset
    from pianotx.store import SplitArrays, load_manifest

    build_dataset(pairs_dir, tmp_path / "ds", workers=1, progress=False, log=lambda _line: None)
    manifest = load_manifest(tmp_path / "ds")
    train = [r["name"] for r in manifest.pieces("train")]
    assert len(train) == 8

    def silent(frames: np.ndarray) -> np.ndarray:
        return np.zeros((len(frames), 88), np.float32)

    wanted = {train[5], train[2], "not-a-piece"}
    served = list(split_rolls(silent, manifest, "train", 0, manifest.features, wanted))
    assert [name for name, _, _ in served] == [train[2], train[5]]
    name, rolls, ref = served[0]
    record = next(r for r in manifest.pieces("train") if r["name"] == name)
    assert rolls["frames"].shape == (record["n_frames"], 88)
    np.testing.assert_array_equal(ref.pitches, SplitArrays(manifest, "train").notes(name).pitches)
    assert [n for n, _, _ in split_rolls(silent, manifest, "train", 1, manifest.features, wanted)] == [train[2]]
    assert len(list(split_rolls(silent, manifest, "train", 3, manifest.features))) == 3


def test_spread_takes_evenly_spaced_items_from_first_to_last():
    items = list("abcdefg")
    assert spread(items, 3) == ["a", "d", "g"]
    assert spread(items, 2) == ["a", "g"]
    assert spread(items, 4) == ["a", "c", "e", "g"]  # positions 0, 2, 4, 6
    assert spread(items, 1) == ["a"]
    assert spread(items, 0) == items and spread(items, 7) == items and spread(items, 9) == items
    assert spread([], 3) == []
