"""benchmarks/versus_basic_pitch.py: its pure parts (Basic Pitch itself is never installed here)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import load_benchmark

from pianotx.midi import Notes
from pianotx.transcribe import BUNDLED_MODEL


@pytest.fixture(scope="module")
def versus():
    return load_benchmark("versus_basic_pitch")


def piece(versus, name: str, seconds: float, reference: Notes | None = None):
    return versus.Piece(name, Path(f"/audio/{name}.wav"), seconds, reference or Notes.empty())


def test_notes_from_events_sorts_keeps_piano_keys_and_positive_durations(versus):
    events = [
        [1.0, 1.5, 60, 0.5],
        [0.5, 0.9, 64, 1.0],
        [0.5, 0.7, 62, 0.0],
        [0.2, 0.4, 20, 0.5],  # below A0
        [0.2, 0.4, 109, 0.5],  # above C8
        [2.0, 2.0, 70, 0.5],  # no duration
    ]
    notes = versus.notes_from_events(events)
    np.testing.assert_array_equal(notes.intervals, [[0.5, 0.7], [0.5, 0.9], [1.0, 1.5]])
    np.testing.assert_array_equal(notes.pitches, [62, 64, 60])
    np.testing.assert_array_equal(notes.velocities, [1, 127, 64])  # round(63.5) = 64, 0 -> 1
    assert notes.pitches.dtype == np.int64 and notes.intervals.dtype == np.float64


def test_notes_from_events_of_nothing_is_empty(versus):
    notes = versus.notes_from_events([])
    assert len(notes) == 0 and notes.intervals.shape == (0, 2)


def test_real_time_factor_sums_over_pieces(versus):
    pieces = [piece(versus, "a", 10.0), piece(versus, "b", 30.0)]
    assert versus.real_time_factor({"a": 0.1, "b": 0.3}, pieces) == pytest.approx(0.01)


def test_markdown_table_rounds_percent_and_factor(versus):
    rows = [
        {
            "system": "Basic Pitch 0.4.0 (tensorflow)",
            "note_f1": 0.79649,
            "note_with_offset_f1": 0.40551,
            "frame_f1": 0.8,
            "note_with_velocity_f1": 0.33449,
            "rtf": 0.016849,
            "startup_seconds": 5.04,
            "pieces": 12,
        },
        {
            "system": "pianotx bundled",
            "note_f1": 0.5,
            "note_with_offset_f1": 0.25,
            "frame_f1": 0.0,
            "note_with_velocity_f1": 0.6,
            "rtf": 0.0032,
            "startup_seconds": 3.25,
            "pieces": 12,
        },
    ]
    assert versus.markdown_table(rows) == (
        "| system | note F1 | note+offset F1 | frame F1 | note+velocity F1 | real-time factor | start-up s | pieces |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|\n"
        "| Basic Pitch 0.4.0 (tensorflow) | 79.6 | 40.6 | 80.0 | 33.4 | 0.0168 | 5.0 | 12 |\n"
        "| pianotx bundled | 50.0 | 25.0 | 0.0 | 60.0 | 0.0032 | 3.2 | 12 |"
    )


def test_score_run_scores_each_piece_against_its_reference(versus):
    reference = Notes.from_lists([(0.0, 1.0), (1.0, 2.0)], [60, 64])
    found_one = Notes.from_lists([(0.01, 1.0)], [60])  # onset 10 ms late, same offset
    pieces = [piece(versus, "a", 4.0, reference), piece(versus, "b", 4.0, reference)]
    run = versus.SystemRun("s", 2.0, {"a": found_one, "b": reference}, {"a": 0.02, "b": 0.06})
    scored = versus.score_run(run, pieces)
    assert scored["per_piece"]["a"]["note_precision"] == 1.0
    assert scored["per_piece"]["a"]["note_recall"] == 0.5
    assert scored["per_piece"]["b"]["note_with_offset_f1"] == 1.0
    assert scored["mean"]["note_f1"] == pytest.approx((2 / 3 + 1.0) / 2)
    assert scored["rtf"] == pytest.approx(0.01)
    row = versus.table_row(scored)
    assert (row["system"], row["startup_seconds"], row["pieces"]) == ("s", 2.0, 2)
    assert row["note_f1"] == scored["mean"]["note_f1"]
    assert scored["found_by_band"]["C4-B4"] == [3, 4]  # 60 found twice, 64 once
    assert scored["found_by_band"]["C3-B3"] == [0, 0]


def test_recall_table_counts_reference_notes_by_register_and_velocity(versus):
    reference = Notes.from_lists([(0.0, 1.0), (1.0, 2.0), (2.0, 3.0)], [30, 100, 100], [40, 40, 100])
    pieces = [piece(versus, "a", 4.0, reference)]
    found = Notes.from_lists([(0.0, 1.0), (2.0, 3.0)], [30, 100])  # the soft C7 missed
    runs = [versus.SystemRun(name, 0.0, {"a": est}, {"a": 0.1}) for name, est in (("x", found), ("y", Notes.empty()))]
    table = versus.recall_table([versus.score_run(run, pieces) for run in runs]).splitlines()
    assert table[0] == (
        "| note recall % | A0-B2 | C3-B3 | C4-B4 | C5-B5 | C6-B6 | C7-C8 "
        "| vel 1-49 | vel 50-69 | vel 70-89 | vel 90-127 |"
    )
    assert table[2:] == [
        "| reference notes | 1 | 0 | 0 | 0 | 0 | 2 | 2 | 0 | 0 | 1 |",
        "| x | 100.0 | - | - | - | - | 50.0 | 50.0 | - | - | 100.0 |",
        "| y | 0.0 | - | - | - | - | 0.0 | 0.0 | - | - | 0.0 |",
    ]


def test_run_basic_pitch_reads_the_runners_result(versus, monkeypatch):
    pieces = [piece(versus, "a", 10.0), piece(versus, "b", 10.0)]
    result = {
        "version": "0.4.0",
        "backend": "TENSORFLOW",
        "files": [
            {"audio": "/audio/a.wav", "seconds": 0.5, "notes": [[0.1, 0.6, 60, 0.5]], "error": ""},
            {"audio": "/audio/b.wav", "seconds": 1.5, "notes": [], "error": ""},
        ],
    }
    monkeypatch.setattr(versus, "call_runner", lambda python, audio, warmup, out: (result, 7.0))
    run = versus.run_basic_pitch(Path("python"), pieces, Path("silence.wav"))
    assert run.name == "Basic Pitch 0.4.0 (tensorflow)"
    assert run.startup_seconds == 5.0  # wall 7 s less the files' 2 s
    assert run.seconds == {"a": 0.5, "b": 1.5}
    np.testing.assert_array_equal(run.estimates["a"].pitches, [60])
    assert len(run.estimates["b"]) == 0


def test_run_basic_pitch_stops_on_a_failed_file(versus, monkeypatch):
    result = {
        "version": "0.4.0",
        "backend": "TENSORFLOW",
        "files": [{"audio": "/audio/a.wav", "seconds": 0.0, "notes": [], "error": "RuntimeError: bad"}],
    }
    monkeypatch.setattr(versus, "call_runner", lambda python, audio, warmup, out: (result, 1.0))
    with pytest.raises(versus.BenchmarkError, match=r"/audio/a.wav: Basic Pitch failed \(RuntimeError: bad\)"):
        versus.run_basic_pitch(Path("python"), [piece(versus, "a", 1.0)], Path("silence.wav"))


def test_ensure_basic_pitch_uses_an_installed_venv(versus, tmp_path):
    (tmp_path / versus.INSTALLED_MARKER).write_text("basic-pitch==0.4.0\n")
    assert versus.ensure_basic_pitch(tmp_path, "python3") == tmp_path / "bin" / "python"


def test_ensure_basic_pitch_leaves_a_foreign_folder_alone(versus, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(versus.BenchmarkError, match="exists and is not a venv"):
        versus.ensure_basic_pitch(tmp_path, "python3")
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_default_venv_follows_xdg_cache_home(versus, monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert versus.default_venv() == tmp_path / "pianotx" / "basic-pitch-venv"


def test_system_names(versus):
    assert versus.system_name(str(BUNDLED_MODEL)) == "pianotx bundled"
    assert versus.system_name("models:/piano/Production") == "pianotx models:/piano/Production"


def context_example(versus):
    """Ten reference notes in known contexts, and the estimates that find four of them."""
    reference = Notes.from_lists(
        [(0.0, 1.0)] * 4 + [(1.0, 2.0), (1.03, 2.0), (2.0, 2.5), (3.0, 3.5), (3.04, 3.5), (3.08, 3.5)],
        [40, 48, 60, 84, 86, 72, 100, 55, 57, 59],
        [50, 60, 90, 91, 100, 70, 30, 80, 80, 80],
    )
    found = Notes.from_lists(
        [(0.0, 1.0), (0.06, 1.0), (0.0, 1.0), (1.01, 2.0), (3.04, 3.5)],
        [40, 48, 60, 86, 57],  # 48 starts 60 ms late: past the 50 ms tolerance, not found
    )
    return [piece(versus, "a", 4.0, reference)], found


def test_chord_sizes_count_the_onsets_within_50_ms_of_each_note(versus):
    [p], _ = context_example(versus)
    # 4 together; 1.00 and 1.03; 2.0 alone; a chain 3.00, 3.04, 3.08 (3.00 and 3.08 are 80 ms apart)
    np.testing.assert_array_equal(versus.chord_sizes(p.reference), [4, 4, 4, 4, 2, 2, 1, 2, 3, 2])
    assert versus.chord_sizes(Notes.empty()).shape == (0,)


def test_found_by_context_counts_mir_evals_matches_by_chord_velocity_and_register(versus):
    pieces, found = context_example(versus)
    assert versus.found_by_context(pieces, {"a": found}) == {
        "1 onset": [0, 1],
        "2-3 onsets": [2, 5],
        "4+ onsets": [2, 4],
        "vel <60": [1, 2],
        "vel 60-90": [2, 6],
        "vel >90": [1, 2],
        "below C3": [1, 1],
        "C3-C6": [2, 7],
        "above C6": [1, 2],
    }


def test_context_table_shows_recall_per_context(versus):
    pieces, found = context_example(versus)
    runs = [versus.SystemRun(name, 0.0, {"a": est}, {"a": 0.1}) for name, est in (("x", found), ("y", Notes.empty()))]
    assert versus.context_table([versus.score_run(run, pieces) for run in runs]).splitlines() == [
        "| note recall % | 1 onset | 2-3 onsets | 4+ onsets | vel <60 | vel 60-90 | vel >90 "
        "| below C3 | C3-C6 | above C6 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        "| reference notes | 1 | 5 | 4 | 2 | 6 | 2 | 1 | 7 | 2 |",
        "| x | 0.0 | 40.0 | 50.0 | 50.0 | 33.3 | 50.0 | 100.0 | 28.6 | 50.0 |",
        "| y | 0.0 | 0.0 | 0.0 | 0.0 | 0.0 | 0.0 | 0.0 | 0.0 | 0.0 |",
    ]
