"""benchmarks/leave_one_piano_out.py end to end on a tiny render folder of three pianos:
the folds it builds, that no fold's model hears its test piano, scores, and reuse."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import SR, load_benchmark, melody, synth

from pianotx.midi import write_midi
from pianotx.store import SPLITS, load_manifest
from pianotx.transcribe import BUNDLED_MODEL

PIANOS = ("Alpha", "Beta", "Gamma")
GROUPS = 20  # 2 test, 2 validation and 16 training groups (SplitConfig's 10% each)
TINY = """
name: tiny
objective: {name: val_note_f1, direction: max}
note_eval_pieces: 2
fixed: {lstm_units: 8, dense_units: 8, recurrent_dropout: 0.0, batch_size: 4, epochs: 50}
"""


@pytest.fixture(scope="module")
def lopo():
    return load_benchmark("leave_one_piano_out")


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def render(tmp_path_factory) -> Path:
    """What `pianotx data render` writes, in small: each group's music (4 s) played on
    each piano (each at its own loudness), and a render.json naming source and piano."""
    import soundfile as sf

    folder = tmp_path_factory.mktemp("render")
    entries = []
    for g in range(GROUPS):
        notes = melody(g, seconds=4.0)
        for k, piano in enumerate(PIANOS):
            name = f"g{g:02d}__{piano}"
            sf.write(folder / f"{name}.wav", (0.6 + 0.2 * k) * synth(notes), SR)
            write_midi(notes, folder / f"{name}.mid")
            entries.append({"name": name, "source": f"g{g:02d}", "kind": "score", "piano": piano})
    (folder / "render.json").write_text(json.dumps({"pieces": entries}))
    return folder


def piano_of(name: str) -> str:
    return name.rsplit("__", 1)[1]


def group_of(name: str) -> str:
    return name.rsplit("__", 1)[0]


def test_the_pianos_of_a_render_folder_and_those_asked_for(lopo, render, tmp_path):
    assert lopo.fold_pianos(render, None) == ["Alpha", "Beta", "Gamma"]
    assert lopo.fold_pianos(render, ["Gamma", "Alpha", "Gamma"]) == ["Gamma", "Alpha"]
    with pytest.raises(lopo.versus.BenchmarkError, match="no piano Omega; it has Alpha, Beta, Gamma"):
        lopo.fold_pianos(render, ["Omega"])
    with pytest.raises(lopo.versus.BenchmarkError, match="needs two pianos or more, found no pieces naming"):
        lopo.fold_pianos(tmp_path, None)


def test_a_space_that_searches_or_starts_from_a_model_is_refused(lopo, tmp_path):
    searched = tmp_path / "searched.yaml"
    searched.write_text("hyperparameters: {lstm_units: {type: choice, values: [8, 16]}}\n")
    with pytest.raises(lopo.versus.BenchmarkError, match="searches hyperparameters"):
        lopo.read_space(searched)
    tuned = tmp_path / "tuned.yaml"
    tuned.write_text("fixed: {init_from: bundled}\n")
    with pytest.raises(lopo.versus.BenchmarkError, match="fixed init_from bundled; each fold trains from scratch"):
        lopo.read_space(tuned)


def test_the_fold_space_takes_the_budget_and_is_named_by_what_it_trains(lopo, tmp_path):
    base = tmp_path / "tiny.yaml"
    base.write_text(TINY)
    space = lopo.fold_space(base, "Alpha", 2, 7, "f" * 64, tmp_path / "spaces")
    text = __import__("yaml").safe_load(space.read_text())
    assert text["fixed"]["epochs"] == 2 and text["fixed"]["steps_per_epoch"] == 7 and text["fixed"]["lstm_units"] == 8
    assert text["tuner"] == {"type": "random", "max_trials": 1, "seed": 0} and text["note_eval_pieces"] == 2
    assert text["name"] == space.stem and space.stem.startswith("lopo-Alpha-")
    assert lopo.fold_space(base, "Alpha", 2, 7, "f" * 64, tmp_path / "spaces") == space  # the same fold: found again
    assert lopo.fold_space(base, "Alpha", 3, 7, "f" * 64, tmp_path / "spaces") != space  # another budget
    assert lopo.fold_space(base, "Alpha", 2, 7, "0" * 64, tmp_path / "spaces") != space  # another dataset
    bundled = __import__("yaml").safe_load(lopo.fold_space(lopo.BUNDLED_SPACE, "B", 3, 40, "", tmp_path).read_text())
    assert bundled["fixed"]["lstm_units"] == 160 and bundled["fixed"]["onset_head"] is True
    assert bundled["note_eval_pieces"] == 24 and bundled["fixed"]["epochs"] == 3


def test_summary_rows_add_each_systems_worst_fold_and_mean(lopo):
    def result(piano, system, f1):
        mean = {key: f1 for key in lopo.SCORES}
        return {"piano": piano, "system": system, "mean": mean, "pieces": 2}

    rows = lopo.summary_rows([result("A", "x", 0.5), result("A", "y", 0.9), result("B", "x", 0.3)])
    assert [(r["piano"], r["system"], r["note_f1"], r["pieces"]) for r in rows] == [
        ("A", "x", 0.5, 2),
        ("A", "y", 0.9, 2),
        ("B", "x", 0.3, 2),
        ("worst: B", "x", 0.3, 2),
        ("worst: A", "y", 0.9, 2),
        ("mean of 2 folds", "x", pytest.approx(0.4), 4),
        ("mean of 1 folds", "y", 0.9, 2),
    ]
    table = lopo.markdown_table(rows).splitlines()
    assert table[0].startswith("| held-out piano | system | note F1 |") and len(table) == 2 + len(rows)
    assert table[-2] == "| mean of 2 folds | x | 40.0 | 40.0 | 40.0 | 40.0 | 40.0 | 40.0 | 4 |"


@pytest.mark.slow
def test_each_fold_tests_one_unheard_piano_on_the_same_music_and_is_reused(lopo, render, tmp_path, capsys):
    space = tmp_path / "tiny.yaml"
    space.write_text(TINY)
    work, out = tmp_path / "work", tmp_path / "lopo.json"
    common = ["--render", str(render), "--work", str(work), "--space", str(space), "--epochs", "1"]
    common += ["--steps-per-epoch", "2", "--skip-basic-pitch", "--workers", "1", "--verbose", "0"]
    lopo.main([*common, "--pianos", "Alpha", "Gamma", "--model", str(BUNDLED_MODEL), "--json", str(out)])
    record = json.loads(out.read_text())
    assert record["pianos"] == ["Alpha", "Gamma"] and [f["piano"] for f in record["folds"]] == ["Alpha", "Gamma"]

    test_groups = {group_of(name) for name in record["folds"][0]["test_pieces"]}
    assert len(test_groups) == 2  # 10% of 20 groups
    for fold in record["folds"]:
        piano = fold["piano"]
        # the test split: the same music in every fold, played on the held-out piano only
        assert sorted(fold["test_pieces"]) == sorted(f"{g}__{piano}" for g in test_groups)
        assert fold["heard"] == {
            "train": sorted(set(PIANOS) - {piano}),
            "validation": sorted(set(PIANOS) - {piano}),
            "test": [piano],
        }
        manifest = load_manifest(fold["dataset"])  # the dataset itself, not the benchmark's word for it
        names = {split: [p["name"] for p in manifest.pieces(split)] for split in SPLITS}
        assert sorted(names["test"]) == sorted(fold["test_pieces"])
        assert all(piano_of(n) != piano for n in names["train"] + names["validation"])
        assert not test_groups & {group_of(n) for n in names["train"] + names["validation"]}
        assert len(names["train"]) == 16 * 2 and len(names["validation"]) == 2 * 2
        assert manifest.config.splits.holdout_piano == piano and manifest.features == lopo.FEATURES
        assert not fold["model_reused"] and fold["dataset_status"] == "built"
        model = json.loads(Path(fold["model"]).with_suffix(".json").read_text())
        assert model["model"]["lstm_units"] == 8  # the space's architecture, trained on this fold
        systems = [s["system"] for s in fold["systems"]]
        assert systems == ["pianotx tiny.yaml, trained without it", "pianotx bundled (fixed)"]
        for scored in fold["systems"]:
            assert scored["piano"] == piano and scored["pieces"] == 2
            assert sorted(scored["per_piece"]) == sorted(fold["test_pieces"])
            for scores in [scored["mean"], *scored["per_piece"].values()]:
                values = np.array([scores[key] for key in lopo.SCORES])
                assert np.all(np.isfinite(values) & (values >= 0) & (values <= 1)), scores
    bundled = [s for f in record["folds"] for s in f["systems"] if s["system"] == "pianotx bundled (fixed)"]
    assert min(s["mean"]["note_f1"] for s in bundled) > 0.25  # it transcribes: about half of the notes found

    summary = [(r["piano"], r["system"]) for r in record["summary"]]
    assert summary[4:] == [
        (summary[4][0], "pianotx tiny.yaml, trained without it"),
        (summary[5][0], "pianotx bundled (fixed)"),
        ("mean of 2 folds", "pianotx tiny.yaml, trained without it"),
        ("mean of 2 folds", "pianotx bundled (fixed)"),
    ]
    assert summary[4][0] in ("worst: Alpha", "worst: Gamma") and summary[5][0] in ("worst: Alpha", "worst: Gamma")
    printed = capsys.readouterr().out.strip().splitlines()
    assert printed[-1].startswith("| mean of 2 folds | pianotx bundled (fixed) | ")
    recall = [i for i, line in enumerate(printed) if line.startswith("| note recall % | 1 onset | 2-3 onsets |")]
    assert recall and printed[recall[0] + 2].startswith("| reference notes | ")  # pooled over the folds
    assert printed[recall[0] + 3].startswith("| pianotx tiny.yaml, trained without it | ")

    # Again, one fold: its dataset is up to date and its model reused, nothing trained.
    lopo.main([*common, "--pianos", "Gamma", "--json", str(out)])
    (again,) = json.loads(out.read_text())["folds"]
    assert again["dataset_status"] == "up to date" and again["model_reused"]
    assert again["model"] == record["folds"][1]["model"]
    assert again["systems"][0]["mean"] == record["folds"][1]["systems"][0]["mean"]
