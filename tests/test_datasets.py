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
