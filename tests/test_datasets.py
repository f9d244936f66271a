from conftest import melody, write_pair

from pianotx.build import build_dataset
from pianotx.datasets import discover, maestro

CSV_HEAD = "canonical_composer,canonical_title,split,year,midi_filename,audio_filename,duration\n"


def test_maestro_root_uses_its_csv_splits(tmp_path):
    root = tmp_path / "maestro"
    rows = []
    for i, split in enumerate(["train", "train", "validation", "test"]):
        write_pair(root / "2004", f"piece{i}", melody(i))
        rows.append(f"Bach,Work {i},{split},2004,2004/piece{i}.mid,2004/piece{i}.wav,8.0\n")
    rows.append("Bach,Gone,train,2004,2004/gone.mid,2004/gone.wav,8.0\n")
    (root / maestro.CSV_NAME).write_text(CSV_HEAD + "".join(rows))
    sources, problems = discover(root)
    assert [(s.name, s.split) for s in sources] == [
        ("2004/piece0", "train"),
        ("2004/piece1", "train"),
        ("2004/piece2", "validation"),
        ("2004/piece3", "test"),
    ]
    assert [(p.path.name, p.reason) for p in problems] == [("gone.wav", "audio file listed in the CSV is missing")]
    m = build_dataset(root, tmp_path / "ds", workers=1, progress=False, log=lambda _: None).manifest
    assert {k: v["pieces"] for k, v in m["splits"].items()} == {"train": 2, "validation": 1, "test": 1}


def test_pairs_in_subfolders_and_render_json_groups(tmp_path):
    root = tmp_path / "pairs"
    write_pair(root / "a", "x", melody(1))
    write_pair(root, "y", melody(2))
    (root / "render.json").write_text('{"pieces": [{"name": "y", "source": "score-7", "piano": "Alpha"}]}')
    sources, problems = discover(root)
    assert [(s.name, s.group, s.piano) for s in sources] == [("a/x", "a/x", None), ("y", "score-7", "Alpha")]
    assert problems == []
    assert [(s.audio, s.midi) for s in sources] == [
        (root / "a" / "x.wav", root / "a" / "x.mid"),
        (root / "y.wav", root / "y.mid"),
    ]


def test_a_folder_named_like_an_audio_or_midi_file_is_reported(tmp_path):
    root = tmp_path / "pairs"
    write_pair(root, "good", melody(1))
    (root / "x.wav").mkdir()  # a folder, perhaps of stems: its files are searched as any subfolder's
    write_pair(root / "x.wav", "inner", melody(2))
    (root / "y.mid").mkdir()
    sources, problems = discover(root)
    assert [s.name for s in sources] == ["good", "x.wav/inner"]
    assert [(p.path, p.reason) for p in problems] == [
        (root / "x.wav", "a folder, not an audio file"),
        (root / "y.mid", "a folder, not a MIDI file"),
    ]


def test_a_maestro_row_naming_a_folder_is_a_problem(tmp_path):
    root = tmp_path / "maestro"
    write_pair(root / "2004", "piece0", melody(0))
    (root / "2004" / "dir.wav").mkdir()
    row = "Bach,Dir,train,2004,2004/piece0.mid,2004/dir.wav,8.0\n"
    (root / maestro.CSV_NAME).write_text(CSV_HEAD + row)
    sources, problems = discover(root)
    assert sources == []
    assert [(p.path, p.reason) for p in problems] == [
        (root / "2004" / "dir.wav", "listed in the CSV as a file, but a folder")
    ]
