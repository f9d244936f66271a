import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from conftest import melody, write_pair

from pianotx.build import BuildError, assign_splits, build_dataset
from pianotx.config import BuildConfig, ChunkConfig, SplitConfig, to_dict
from pianotx.datasets import PieceSource
from pianotx.loader import ChunkDataset
from pianotx.midi import Notes, read_notes, write_midi
from pianotx.store import SPLITS, SplitArrays, load_manifest

QUIET = {"workers": 1, "progress": False, "log": lambda m: None}


def test_manifest_shapes_and_labels(pairs_dir, tmp_path):
    out = tmp_path / "ds"
    result = build_dataset(pairs_dir, out, **QUIET)
    m = result.manifest
    assert result.status == "built"
    manifest = load_manifest(out)
    assert m["version"] == 3 and manifest.chunk_frames == 512
    assert to_dict(manifest.features) | {"frame_rate": manifest.features.frame_rate} == {
        "sample_rate": 16000,
        "hop_length": 512,
        "n_bins": 84,
        "bins_per_octave": 12,
        "fmin": 27.5,
        "top_db": 80.0,
        "frame_rate": 31.25,
    }
    assert {k: v["pieces"] for k, v in m["splits"].items()} == {"train": 8, "validation": 1, "test": 1}
    assert sum(v["chunks"] for v in m["splits"].values()) == 10  # 8.5 s each: one padded chunk
    assert all(p["offset_frames"] == 0 and p["alignment_confidence"] > 4.0 for p in m["pieces"])
    assert len(m["fingerprint"]) == 64
    train = SplitArrays(load_manifest(out), "train")
    rec = load_manifest(out).pieces("train")[0]
    features, frames, onsets = train.piece(rec)
    assert features.shape == (rec["n_frames"], 84) and frames.shape == (rec["n_frames"], 88)
    from pianotx.labels import notes_to_rolls

    expected, expected_on = notes_to_rolls(train.notes(rec["name"]), rec["n_frames"], 31.25)
    assert np.array_equal(frames, expected) and np.array_equal(onsets, expected_on)
    # padding after the piece is silence without notes
    idx = rec["chunk_start"]
    padded = train.get(np.array([idx]))
    assert padded[0][0, rec["n_frames"] :].sum() == 0 and padded[1][0, rec["n_frames"] :].sum() == 0


def test_late_audio_is_found_and_labels_shifted(tmp_path):
    notes = melody(7)
    write_pair(tmp_path / "in", "late", notes, delay=0.5)
    m = build_dataset(tmp_path / "in", tmp_path / "ds", **QUIET).manifest
    (piece,) = m["pieces"]
    assert piece["offset_frames"] == 16 and piece["offset_seconds"] == 0.512
    arrays = SplitArrays(load_manifest(tmp_path / "ds"), piece["split"])
    np.testing.assert_allclose(arrays.notes("late").intervals, notes.intervals + 0.512)


def test_rendered_pieces_are_aligned_by_construction(tmp_path):
    import json

    write_pair(tmp_path / "in", "r", melody(5), noise=True)  # no alignment would trust this audio
    write_pair(tmp_path / "in", "p", melody(6), noise=True)
    (tmp_path / "in" / "render.json").write_text(json.dumps({"pieces": [{"name": "r", "source": "r", "piano": "A"}]}))
    m = build_dataset(tmp_path / "in", tmp_path / "ds", **QUIET).manifest
    by_name = {p["name"]: p for p in m["pieces"]}
    assert (by_name["r"]["excluded"], by_name["r"]["offset_frames"], by_name["r"]["aligned_by"]) == (False, 0, "render")
    assert by_name["p"]["excluded"] and by_name["p"]["reason"].startswith("alignment confidence")


def test_up_to_date_then_rebuilt_on_config_or_input_change(pairs_dir, tmp_path):
    out = tmp_path / "ds"
    first = build_dataset(pairs_dir, out, **QUIET)
    assert build_dataset(pairs_dir, out, **QUIET).status == "up to date"
    changed = replace(BuildConfig(), chunks=ChunkConfig(chunk_frames=256))
    again = build_dataset(pairs_dir, out, changed, **QUIET)
    assert again.status == "built" and load_manifest(tmp_path / "ds").chunk_frames == 256
    assert again.manifest["fingerprint"] != first.manifest["fingerprint"]
    write_midi(melody(99), pairs_dir / "piece00.mid")
    assert build_dataset(pairs_dir, out, changed, **QUIET).status == "built"
    assert not list(tmp_path.glob(".ds.*"))


def test_an_up_to_date_build_clears_what_a_killed_build_left(pairs_dir, tmp_path):
    out = tmp_path / "ds"
    build_dataset(pairs_dir, out, **QUIET)
    stale = tmp_path / ".ds.tmp-999999999"  # killed while it removed the dataset it replaced
    (stale / "train").mkdir(parents=True)
    (stale / "manifest.json").write_text("{}")
    assert build_dataset(pairs_dir, out, **QUIET).status == "up to date"
    assert not list(tmp_path.glob(".ds.*"))


def test_split_is_by_group_and_holds_out_a_piano():
    sources = [
        PieceSource(f"s{g}__{piano}", Path("a"), Path("m"), group=f"s{g}", piano=piano)
        for g in range(20)
        for piano in ("Alpha", "Beta")
    ]
    splits, excluded = assign_splits(sources, BuildConfig())
    by_group: dict[str, set] = {}
    for name, split in splits.items():
        by_group.setdefault(name.split("__")[0], set()).add(split)
    assert all(len(s) == 1 for s in by_group.values())
    assert sorted(splits.values()).count("test") == 2 and sorted(splits.values()).count("validation") == 2
    assert {n.split("__")[1] for n, s in splits.items() if s == "test"} == {"Beta"}
    assert {n.split("__")[1] for n, s in splits.items() if s != "test"} == {"Alpha"}
    assert len(excluded) == 20 - 2 + 2  # Beta outside test, Alpha inside test
    none = replace(BuildConfig(), splits=SplitConfig(holdout_piano="none"))
    assert len(assign_splits(sources, none)[1]) == 0


def test_a_second_piano_can_be_held_out_for_validation():
    sources = [
        PieceSource(f"s{g}__{piano}", Path("a"), Path("m"), group=f"s{g}", piano=piano)
        for g in range(20)
        for piano in ("Alpha", "Beta", "Gamma")
    ]
    config = replace(BuildConfig(), splits=SplitConfig(validation_piano="Alpha"))
    splits, excluded = assign_splits(sources, config)
    pianos = {split: {n.split("__")[1] for n, s in splits.items() if s == split} for split in SPLITS}
    assert pianos == {"train": {"Beta"}, "validation": {"Alpha"}, "test": {"Gamma"}}
    assert sorted(splits.values()).count("validation") == 2 and sorted(splits.values()).count("test") == 2
    assert len(splits) == 16 + 2 + 2 and len(excluded) == 60 - 20
    val_group = next(n for n, s in splits.items() if s == "validation").split("__")[0]
    assert excluded[f"{val_group}__Beta"] == "validation music is played on the held-out piano Alpha only"
    assert excluded[f"{val_group}__Gamma"] == "piano Gamma is held out for the test split"
    train_group = next(n for n, s in splits.items() if s == "train").split("__")[0]
    assert excluded[f"{train_group}__Alpha"] == "piano Alpha is held out for the validation split"
    assert excluded[f"{train_group}__Gamma"] == "piano Gamma is held out for the test split"


@pytest.mark.parametrize(
    ("validation", "test", "message"),
    [
        ("Omega", "auto", "validation piano 'Omega' is not among Alpha, Beta"),
        ("Beta", "auto", "validation piano 'Beta' is already held out for the test split"),
        ("Alpha", "Beta", "holding out Beta and Alpha leaves no piano to train on"),
    ],
)
def test_a_validation_piano_must_leave_training_a_piano(validation, test, message):
    sources = [PieceSource(f"s__{p}", Path("a"), Path("m"), group="s", piano=p) for p in ("Alpha", "Beta")]
    config = replace(BuildConfig(), splits=SplitConfig(holdout_piano=test, validation_piano=validation))
    with pytest.raises(BuildError, match=f"^{re.escape(message)}$"):
        assign_splits(sources, config)


def test_a_validation_piano_needs_pieces_that_name_pianos(pairs_dir, tmp_path):
    config = replace(BuildConfig(), splits=SplitConfig(validation_piano="Alpha"))
    message = f"{pairs_dir}: validation piano 'Alpha' cannot be held out: the pieces name no piano"
    with pytest.raises(BuildError, match=f"^{re.escape(message)}$"):
        build_dataset(pairs_dir, tmp_path / "ds", config, **QUIET)
    assert not (tmp_path / "ds").exists()


def test_augmented_copies_are_for_training_only():
    sources = [
        PieceSource(f"s{g}__Alpha{suffix}", Path("a"), Path("m"), group=f"s{g}", piano="Alpha", augmented=bool(suffix))
        for g in range(20)
        for suffix in ("", "__aug1")
    ]
    splits, excluded = assign_splits(sources, BuildConfig())
    dry = {n.removesuffix("__aug1"): s for n, s in splits.items() if not n.endswith("__aug1")}
    for name, split in splits.items():
        if name.endswith("__aug1"):
            assert split == "train" and dry[name.removesuffix("__aug1")] == "train"
    held = {n for n in excluded if n.endswith("__aug1")}
    assert held == {f"{n}__aug1" for n, s in dry.items() if s != "train"} and len(held) == 4
    assert set(excluded.values()) == {"augmented copies are for training only"}


def test_bad_inputs_are_skipped_with_reasons(tmp_path):
    src = tmp_path / "in"
    write_pair(src, "good", melody(1))
    (src / "corrupt.wav").write_bytes(b"RIFF....garbage")
    write_midi(melody(2), src / "corrupt.mid")
    write_pair(src, "badmidi", melody(3))
    (src / "badmidi.mid").write_bytes(b"MThd garbage")
    write_pair(src, "lownotes", melody(4))
    write_midi(Notes.from_lists([(0, 1)], [12]), src / "lownotes.mid")
    write_pair(src, "short", melody(5))
    write_midi(melody(5).shifted(5.0), src / "short.mid")
    write_midi(melody(6), src / "orphan.mid")
    write_pair(src, "noise", melody(8), noise=True)
    lines: list[str] = []
    m = build_dataset(src, tmp_path / "ds", workers=1, progress=False, log=lines.append).manifest
    skipped = [line for line in lines if line.startswith("skipped ")]
    # splits are drawn before pieces are read: the one good piece leaves another split empty
    (warning,) = [line for line in lines if line not in skipped]
    assert warning.startswith("warning: the ") and "split is empty; `pianotx search` needs train" in warning
    reasons = {Path(line.split(": ")[0].removeprefix("skipped ")).name: line.split(": ", 1)[1] for line in skipped}
    assert set(reasons) == {"corrupt.wav", "badmidi.mid", "lownotes.mid", "short.wav", "orphan.mid", "noise.wav"}
    assert reasons["corrupt.wav"].startswith("cannot decode audio")
    assert reasons["badmidi.mid"].startswith("MIDI does not parse")
    assert reasons["lownotes.mid"] == "MIDI has no notes in the piano range 21..108"
    assert "much shorter than its MIDI" in reasons["short.wav"]
    assert reasons["orphan.mid"] == "no audio file with the same name"
    assert reasons["noise.wav"].startswith("alignment confidence")
    assert [p["name"] for p in m["pieces"] if not p["excluded"]] == ["good"]
    assert m["problems"] == [{"path": str(src / "orphan.mid"), "reason": "no audio file with the same name"}]
    with pytest.raises(BuildError, match=r"orphan\.mid: no audio file with the same name \(--strict\)"):
        build_dataset(src, tmp_path / "ds2", strict=True, **QUIET)
    assert not (tmp_path / "ds2").exists()


def test_nothing_usable_is_an_error(tmp_path):
    write_pair(tmp_path / "in", "noise", melody(1), noise=True)
    with pytest.raises(BuildError, match="no usable piece"):
        build_dataset(tmp_path / "in", tmp_path / "ds", **QUIET)
    assert not (tmp_path / "ds").exists() and not list(tmp_path.glob(".ds.*"))


def test_killed_build_leaves_no_dataset(pairs_dir, tmp_path):
    out = tmp_path / "ds"
    code = (
        "import time, pianotx.build as b\n"
        "orig = b.process_piece\n"
        "def slow(*a):\n    time.sleep(0.5)\n    return orig(*a)\n"
        "b.process_piece = slow\n"
        f"b.build_dataset({str(pairs_dir)!r}, {str(out)!r}, workers=1, progress=False)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code])
    deadline = time.time() + 60
    while not list(tmp_path.glob(".ds.tmp-*/pieces/*.npz")) and time.time() < deadline:
        time.sleep(0.1)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert list(tmp_path.glob(".ds.tmp-*")) and not out.exists()
    assert build_dataset(pairs_dir, out, **QUIET).status == "built"
    assert not list(tmp_path.glob(".ds.tmp-*"))


def test_killed_parallel_build_leaves_no_worker(pairs_dir, tmp_path):
    import psutil

    code = (
        "import time, pianotx.build as b\n"
        "orig = b.process_piece\n"
        "def slow(*a):\n    time.sleep(1.0)\n    return orig(*a)\n"
        "b.process_piece = slow\n"
        f"b.build_dataset({str(pairs_dir)!r}, {str(tmp_path / 'ds')!r}, workers=2, progress=False)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code])
    deadline = time.time() + 60
    workers: list = []
    while len(workers) < 2 and time.time() < deadline:
        workers = psutil.Process(proc.pid).children(recursive=True)
        time.sleep(0.1)
    assert len(workers) >= 2
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    _, alive = psutil.wait_procs(workers, timeout=10)
    assert alive == []


def test_loader_streams_shuffled_batches(pairs_dir, tmp_path):
    build_dataset(pairs_dir, tmp_path / "ds", replace(BuildConfig(), chunks=ChunkConfig(chunk_frames=64)), **QUIET)
    seq = ChunkDataset(tmp_path / "ds", "train", batch_size=5, seed=1)
    total = load_manifest(tmp_path / "ds").data["splits"]["train"]["chunks"]
    assert len(seq) == -(-total // 5)
    assert all(isinstance(s["features"], np.memmap) for s in seq.arrays.shards)
    seen = np.concatenate([seq.order[i * 5 : (i + 1) * 5] for i in range(len(seq))])
    assert sorted(seen.tolist()) == list(range(total))
    x, y = seq[0]
    assert x.shape == (5, 64, 84) and x.dtype == np.float32 and y.shape == (5, 64, 88) and y.dtype == np.float32
    first = seq.order.copy()
    seq.on_epoch_end()
    assert not np.array_equal(first, seq.order)
    ref = SplitArrays(load_manifest(tmp_path / "ds"), "train").get(seq.order[:5])
    assert np.array_equal(seq[0][0], ref[0])


def test_early_audio_shifts_notes_before_zero_which_are_clamped(tmp_path):
    import soundfile as sf
    from conftest import SR, synth

    from pianotx.evaluate import evaluate_piece

    notes = Notes.from_lists([(0.1, 0.6), (0.8, 1.3), (1.5, 2.2), (2.4, 3.0), (3.2, 4.0)], [60, 64, 67, 72, 55])
    audio = synth(notes)[int(0.32 * SR) :]  # audio starts 10 frames early: the first note is cut
    (tmp_path / "in").mkdir()
    sf.write(tmp_path / "in" / "early.wav", audio, SR)
    write_midi(notes, tmp_path / "in" / "early.mid")
    (piece,) = build_dataset(tmp_path / "in", tmp_path / "ds", **QUIET).manifest["pieces"]
    assert piece["offset_frames"] == -10
    ref = SplitArrays(load_manifest(tmp_path / "ds"), piece["split"]).notes("early")
    assert ref.intervals.min() == 0.0 and len(ref) == 5
    np.testing.assert_allclose(ref.intervals[1:], notes.intervals[1:] - 0.32)
    assert evaluate_piece(ref, ref)["note_f1"] == 1.0  # mir_eval accepts the clamped notes


def test_every_file_of_a_built_dataset_is_listed_by_its_manifest(pairs_dir, tmp_path):
    from pianotx.store import DATASET_FOLDER

    manifest = build_dataset(pairs_dir, tmp_path / "ds", **QUIET).manifest
    present = sorted(p.relative_to(tmp_path / "ds").as_posix() for p in (tmp_path / "ds").rglob("*") if p.is_file())
    assert sorted(DATASET_FOLDER.listed(manifest)) == present  # so a rebuild may replace it


def test_a_float_wav_at_eight_times_full_scale_is_aligned_as_recorded(tmp_path):
    import soundfile as sf
    from conftest import SR, synth

    notes = melody(7)
    loud = synth(notes, delay=0.5) * np.float32(8.0)
    (tmp_path / "in").mkdir()
    sf.write(tmp_path / "in" / "loud.wav", loud, SR, subtype="FLOAT")
    write_midi(notes, tmp_path / "in" / "loud.mid")
    lines: list[str] = []
    (piece,) = build_dataset(tmp_path / "in", tmp_path / "ds", workers=1, progress=False, log=lines.append).manifest[
        "pieces"
    ]
    peak = float(np.abs(loud).max())
    assert [line for line in lines if "full scale" in line] == [
        f"warning: {tmp_path / 'in' / 'loud.wav'}: samples reach {peak:.3g}, above full scale (1.0); "
        "scaled to a peak of 1.0"
    ]
    assert (piece["excluded"], piece["offset_frames"], piece["offset_seconds"]) == (False, 16, 0.512)


def _chord_midi(path, count, seconds=8.0):
    """``count`` notes struck at 0 s over the keyboard, held ``seconds``."""
    import pretty_midi

    pm = pretty_midi.PrettyMIDI()
    piano = pretty_midi.Instrument(0)
    piano.notes = [pretty_midi.Note(80, 21 + i % 88, 0.0, seconds) for i in range(count)]
    pm.instruments.append(piano)
    pm.write(str(path))


def test_implausible_pairs_are_refused_naming_the_midi(tmp_path):
    import soundfile as sf
    from conftest import SR, synth

    src = tmp_path / "in"
    write_pair(src, "good", melody(1))
    sf.write(src / "chord.wav", synth(melody(2)), SR)  # unrelated audio beside a 10,000-note chord
    _chord_midi(src / "chord.mid", 10_000)
    audio = synth(melody(3, seconds=30.0))
    sf.write(src / "partial.wav", audio, SR)
    write_midi(melody(3), src / "partial.mid")  # the MIDI of its first 8 seconds
    lines: list[str] = []
    m = build_dataset(src, tmp_path / "ds", workers=1, progress=False, log=lines.append).manifest
    skipped = sorted(line for line in lines if line.startswith("skipped "))
    end, seconds = read_notes(src / "partial.mid").end_time, len(audio) / SR
    assert skipped == [
        f"skipped {src / 'chord.mid'}: 10000 notes start together at 0.00 s, more than the 20 a pianist plays at once",
        f"skipped {src / 'partial.mid'}: MIDI ({end:.1f} s) is much shorter than its audio ({seconds:.1f} s)",
    ]
    assert [p["name"] for p in m["pieces"] if not p["excluded"]] == ["good"]


def test_a_midi_of_a_24_hour_note_is_skipped_without_exhausting_memory(tmp_path):
    import mido

    src = tmp_path / "in"
    write_pair(src, "good", melody(1))
    write_pair(src, "day", melody(2))
    day = mido.MidiFile(ticks_per_beat=480)
    day.tracks.append(
        mido.MidiTrack(
            [mido.Message("note_on", note=60, velocity=80, time=0), mido.Message("note_off", note=60, time=82_944_000)]
        )
    )
    day.save(str(src / "day.mid"))
    lines: list[str] = []
    build_dataset(src, tmp_path / "ds", workers=1, progress=False, log=lines.append)
    assert [line for line in lines if line.startswith("skipped ")] == [
        f"skipped {src / 'day.mid'}: MIDI lasts 86400 s, longer than the 7200 s (2 hours) pianotx reads"
    ]


def test_the_input_must_be_a_folder(tmp_path):
    write_pair(tmp_path, "a", melody(1))
    message = f"{tmp_path / 'a.wav'}: the input is a file, not a folder (give the folder of audio and MIDI pairs)"
    with pytest.raises(BuildError, match=f"^{re.escape(message)}$"):
        build_dataset(tmp_path / "a.wav", tmp_path / "ds", **QUIET)
    assert not (tmp_path / "ds").exists()


def test_a_folder_named_like_audio_is_reported_and_refused_when_strict(tmp_path):
    src = tmp_path / "in"
    write_pair(src, "good", melody(1))
    (src / "take.wav").mkdir()
    write_midi(melody(2), src / "take.mid")
    lines: list[str] = []
    build_dataset(src, tmp_path / "ds", workers=1, progress=False, log=lines.append)
    assert [line for line in lines if line.startswith("skipped ")] == [
        f"skipped {src / 'take.wav'}: a folder, not an audio file",
        f"skipped {src / 'take.mid'}: no audio file with the same name",
    ]
    message = f"{src / 'take.wav'}: a folder, not an audio file (--strict)"
    with pytest.raises(BuildError, match=f"^{re.escape(message)}$"):
        build_dataset(src, tmp_path / "ds2", strict=True, **QUIET)
