"""Nothing lost: atomic writes, and output folders that pianotx refuses to replace.

The command-line cases are the reproductions of the data-loss report: each must exit
non-zero with one line naming the path, and leave every file as it was.
"""

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pianotx.cli import app
from pianotx.files import (
    OutputError,
    OwnedFolder,
    atomic_path,
    check_output_folder,
    remove_inside,
    swap_in,
    temp_sibling,
    write_json_atomic,
)
from pianotx.render.common import RENDER_FOLDER
from pianotx.store import DATASET_FOLDER
from pianotx.transcribe import BUNDLED_MODEL

runner = CliRunner()
# A folder kind for the helpers' tests: {"toy": 1, "files": [...]} lists what it holds.
TOY = OwnedFolder("manifest.json", lambda data: data["files"] if data.get("toy") == 1 else None)


def _toy(folder, *names):
    """``folder`` made as a TOY folder holding ``names`` (and its manifest)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(name)
    (folder / "manifest.json").write_text(json.dumps({"toy": 1, "files": ["manifest.json", *names]}))


def _snapshot(folder):
    """Every file under ``folder`` with its bytes."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _one_error_line(result, *needles):
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    for needle in needles:
        assert needle in lines[0], lines[0]


# ---------------------------------------------------------------- helpers


def test_atomic_path_renames_on_success_and_follows_the_umask(tmp_path):
    target = tmp_path / "x.mid"
    old = os.umask(0o022)
    try:
        with atomic_path(target) as tmp:
            assert tmp.parent == tmp_path and tmp.suffix == ".mid" and tmp.name.startswith(".x.mid.tmp-")
            tmp.write_bytes(b"new")
            assert not target.exists()
    finally:
        os.umask(old)
    assert target.read_bytes() == b"new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["x.mid"]


def test_atomic_path_keeps_every_suffix_for_libraries_that_read_them(tmp_path):
    with atomic_path(tmp_path / "backup.weights.h5") as tmp:  # Keras' save_weights needs .weights.h5
        assert tmp.name.startswith(".backup.weights.h5.tmp-") and tmp.name.endswith(".weights.h5")
        tmp.write_bytes(b"w")
    assert [p.name for p in tmp_path.iterdir()] == ["backup.weights.h5"]


def test_atomic_path_keeps_the_old_file_on_failure(tmp_path):
    target = tmp_path / "x.json"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_atomic_path_flushes_the_file_and_then_its_folder_to_the_disk(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync

    def recording_fsync(fd):
        synced.append(Path(os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    with atomic_path(tmp_path / "x.mid") as tmp:
        tmp.write_bytes(b"new")
    assert synced == [tmp, tmp_path]  # the data before the rename, the rename after it
    synced.clear()
    with pytest.raises(RuntimeError), atomic_path(tmp_path / "y.mid"):
        raise RuntimeError("crash")
    assert synced == []


def test_remove_inside_removes_what_lies_inside_its_owner(tmp_path):
    owner = tmp_path / "owner"
    (owner / "state" / "deep").mkdir(parents=True)
    (owner / "state" / "deep" / "f").write_text("x")
    (owner / "file").write_text("x")
    remove_inside(owner / "state", owner)
    remove_inside(owner / "file", owner)
    remove_inside(owner / "missing", owner)  # nothing there: nothing to do
    assert list(owner.iterdir()) == []


@pytest.mark.parametrize("where", ["parent", "owner", "absolute", "sibling"])
def test_remove_inside_refuses_a_path_outside_its_owner(tmp_path, where):
    owner = tmp_path / "owner"
    owner.mkdir()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "keep.txt").write_text("x")
    path = {
        "parent": owner / "..",
        "owner": owner,
        "absolute": tmp_path / "mine",
        "sibling": owner / ".." / "mine",
    }[where]
    with pytest.raises(OutputError) as caught:
        remove_inside(path, owner, "search state")
    expected = f"{path}: the search state lies outside {owner}, which pianotx owns; nothing was removed"
    assert str(caught.value) == expected
    assert (tmp_path / "mine" / "keep.txt").read_text() == "x" and owner.is_dir()


def test_remove_inside_removes_a_link_never_what_it_points_to(tmp_path):
    owner = tmp_path / "owner"
    owner.mkdir()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "keep.txt").write_text("x")
    (owner / "link").symlink_to(tmp_path / "mine", target_is_directory=True)
    remove_inside(owner / "link", owner)
    assert list(owner.iterdir()) == [] and (tmp_path / "mine" / "keep.txt").read_text() == "x"


def test_write_json_atomic(tmp_path):
    write_json_atomic(tmp_path / "a.json", {"k": [1, 2]})
    assert (tmp_path / "a.json").read_text() == '{\n  "k": [\n    1,\n    2\n  ]\n}\n'


def test_check_output_folder_cases(tmp_path):
    check_output_folder(tmp_path / "new", TOY)  # absent
    (tmp_path / "empty").mkdir()
    check_output_folder(tmp_path / "empty", TOY)
    _toy(tmp_path / "ours", "a.bin", "sub/b.bin")
    check_output_folder(tmp_path / "ours", TOY)
    (tmp_path / "ours" / "sub" / "b.bin").unlink()  # a listed file missing: still ours
    check_output_folder(tmp_path / "ours", TOY)
    (tmp_path / "user").mkdir()
    (tmp_path / "user" / "important.txt").write_text("x")
    with pytest.raises(OutputError, match="files pianotx did not make"):
        check_output_folder(tmp_path / "user", TOY)
    (tmp_path / "afile").write_text("hi")
    with pytest.raises(OutputError, match="a file is there"):
        check_output_folder(tmp_path / "afile", TOY)
    with pytest.raises(OutputError, match="afile is a file, not a folder"):
        check_output_folder(tmp_path / "afile" / "x", TOY)
    (tmp_path / "in" / "deep").mkdir(parents=True)
    for out in (tmp_path / "in", tmp_path):
        with pytest.raises(OutputError, match="its own input"):
            check_output_folder(out, TOY, inputs=[tmp_path / "in" / "deep"])
    check_output_folder(tmp_path / "in" / "deep" / "ds", TOY, inputs=[tmp_path / "in" / "deep"])


def _refusal(out, owned=TOY, what="output"):
    with pytest.raises(OutputError) as caught:
        check_output_folder(out, owned, what=what)
    return str(caught.value)


def test_a_folder_is_ours_by_its_manifests_content_never_by_its_name(tmp_path):
    out = tmp_path / "ext"  # a web extension: its own manifest.json
    out.mkdir()
    expected = f"{out}: its manifest.json is not one pianotx wrote; choose a new or empty folder for the output"
    (out / "manifest.json").write_text('{"manifest_version": 3, "name": "my extension"}')
    assert _refusal(out) == expected
    (out / "manifest.json").write_text("not json")
    assert _refusal(out) == expected
    (out / "manifest.json").write_text("[1, 2]")  # JSON of another shape: no error but a refusal
    assert _refusal(out) == expected


@pytest.mark.parametrize(
    ("extra", "named"),
    [("notes.txt", "notes.txt"), ("sub/notes.txt", "sub/notes.txt"), ("other/x", "other"), ("a.bin/x", "a.bin")],
)
def test_a_folder_of_ours_holding_anything_unlisted_is_refused(tmp_path, extra, named):
    out = tmp_path / "ours"
    _toy(out, "a.bin", "sub/b.bin")
    if extra.startswith("a.bin/"):  # a folder where the manifest lists a file
        (out / "a.bin").unlink()
    (out / extra).parent.mkdir(parents=True, exist_ok=True)
    (out / extra).write_text("the user's")
    assert _refusal(out) == (
        f"{out}: {named} is there, which its manifest.json does not list; choose a new or empty folder for the output"
    )


def test_a_link_in_a_folder_of_ours_is_refused(tmp_path):
    out = tmp_path / "ours"
    _toy(out, "a.bin")
    (out / "a.bin").unlink()
    (out / "a.bin").symlink_to(tmp_path / "elsewhere")  # even under a listed name
    assert _refusal(out) == (
        f"{out}: a.bin is a symbolic link, which pianotx never makes; choose a new or empty folder for the output"
    )


def _dataset_manifest(**change):
    data = {
        "version": 3,
        "source": "/in",
        "config": {},
        "splits": {
            "train": {"pieces": 1, "chunks": 2, "shards": [{"index": 0, "chunks": 2}]},
            "validation": {"pieces": 0, "chunks": 0, "shards": []},
            "test": {"pieces": 0, "chunks": 0, "shards": []},
        },
        "pieces": [],
        "problems": [],
        "fingerprint": "ab",
    }
    return data | change


def test_the_dataset_manifest_lists_every_file_of_its_dataset():
    assert DATASET_FOLDER.listed(_dataset_manifest()) == [
        "manifest.json",
        "train/notes.npz",
        "train/features-000.npy",
        "train/frames-000.npy",
        "train/onsets-000.npy",
        "validation/notes.npz",
        "test/notes.npz",
    ]
    assert DATASET_FOLDER.listed(_dataset_manifest(version=1)) is not None  # earlier pianotx datasets
    for foreign in (
        _dataset_manifest(version=4),
        _dataset_manifest(version=True),
        _dataset_manifest(fingerprint=None),
        _dataset_manifest(splits={"elsewhere": {"shards": []}}),
        _dataset_manifest(splits={"train": {"shards": [{"index": "../x"}]}}),
        {"manifest_version": 3, "name": "my extension"},
        [],
    ):
        assert DATASET_FOLDER.listed(foreign) is None, foreign


def test_the_render_manifest_lists_every_file_of_its_corpus():
    data = {"version": 1, "sample_rate": 16000, "seed": 0, "options": {}, "pianos": [], "pieces": [{"name": "a__P"}]}
    assert RENDER_FOLDER.listed(data) == ["render.json", "a__P.wav", "a__P.mid"]
    earlier = data | {"soundfonts": []}  # renders before TiMidity's pianos named them soundfonts
    del earlier["pianos"]
    assert RENDER_FOLDER.listed(earlier) == ["render.json", "a__P.wav", "a__P.mid"]
    for foreign in (
        {"title": "my document", "pieces": [{"name": "x"}]},
        data | {"version": 2},
        data | {"pieces": [{"name": "../../x"}]},
        data | {"pieces": [{"name": ".hidden"}]},
        data | {"pieces": ["x"]},
    ):
        assert RENDER_FOLDER.listed(foreign) is None, foreign


def test_swap_in_never_deletes_a_folder_that_is_not_ours(tmp_path):
    out = tmp_path / "ds"
    _toy(out, "old.bin")
    tmp = temp_sibling(out)
    _toy(tmp, "new.bin")
    swap_in(tmp, out, TOY)
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "new.bin"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]
    (out / "mine.txt").write_text("x")  # added since the check before the work
    tmp = temp_sibling(out)
    with pytest.raises(OutputError, match="mine.txt is there"):
        swap_in(tmp, out, TOY)
    assert (out / "mine.txt").read_text() == "x" and tmp.is_dir()


def test_temp_sibling_removes_only_dead_processes_folders(tmp_path):
    out = tmp_path / "ds"
    dead = tmp_path / ".ds.tmp-999999999"
    alive = tmp_path / f".ds.tmp-{os.getppid()}"
    dead.mkdir()
    alive.mkdir()
    tmp = temp_sibling(out)
    assert tmp.name == f".ds.tmp-{os.getpid()}" and not dead.exists() and alive.is_dir()


KILL_AT_SWAP = """
import os, signal, sys
from pathlib import Path
from pianotx.files import OwnedFolder, swap_in
def die(event, args):  # SIGKILL just before any rename onto the target
    if event == "os.rename" and os.fspath(args[1]) == sys.argv[2]:
        os.kill(os.getpid(), signal.SIGKILL)
sys.addaudithook(die)
swap_in(Path(sys.argv[1]), Path(sys.argv[2]), OwnedFolder("manifest.json", lambda data: ["manifest.json"]))
"""


def test_a_kill_during_swap_in_leaves_the_old_folder_or_the_new(tmp_path):
    out = tmp_path / "ds"
    out.mkdir()
    (out / "manifest.json").write_text('"old"')
    tmp = temp_sibling(out)
    (tmp / "manifest.json").write_text('"new"')
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    subprocess.run([sys.executable, "-c", KILL_AT_SWAP, str(tmp), str(out)], env=env, check=False)
    assert (out / "manifest.json").read_text() in ('"old"', '"new"')
    temp_sibling(out)  # the next build clears what the killed one left
    assert sorted(p.name for p in tmp_path.iterdir()) == [".ds.tmp-" + str(os.getpid()), "ds"]


def test_temp_sibling_puts_back_a_folder_a_killed_swap_moved_aside(tmp_path):
    out = tmp_path / "ds"
    aside = tmp_path / ".ds.old-999999999"  # moved aside by a process that is gone
    aside.mkdir()
    (aside / "manifest.json").write_text("old")
    temp_sibling(out)
    assert (out / "manifest.json").read_text() == "old" and not aside.exists()
    aside.mkdir()  # and where the new folder did arrive, the old one is removed
    temp_sibling(out)
    assert not aside.exists() and (out / "manifest.json").read_text() == "old"


# ---------------------------------------------------------------- the reproductions


@pytest.mark.parametrize("where", ["file", "user_folder", "input_itself", "parent_of_input", "under_a_file"])
def test_data_build_refuses_and_touches_nothing(where, pairs_dir, tmp_path):
    before = _snapshot(tmp_path)
    out = {
        "file": tmp_path / "afile",
        "user_folder": tmp_path / "userdir",
        "input_itself": pairs_dir,
        "parent_of_input": tmp_path,
        "under_a_file": tmp_path / "afile" / "x",
    }[where]
    if where in ("file", "under_a_file"):
        (tmp_path / "afile").write_text("hi\n")
    if where == "user_folder":
        out.mkdir()
        (out / "important.txt").write_text("x\n")
    before = _snapshot(tmp_path)
    result = runner.invoke(app, ["data", "build", str(pairs_dir), str(out), "--workers", "1"])
    _one_error_line(result, str(out))
    assert _snapshot(tmp_path) == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_data_build_replaces_its_own_dataset(pairs_dir, tmp_path):
    out = tmp_path / "ds"
    assert runner.invoke(app, ["data", "build", str(pairs_dir), str(out), "--workers", "1"]).exit_code == 0
    result = runner.invoke(app, ["data", "build", str(pairs_dir), str(out), "--workers", "1", "--seed", "3"])
    assert result.exit_code == 0 and "built" in result.output


def test_data_build_refuses_a_folder_that_merely_holds_a_manifest_json(pairs_dir, tmp_path):
    out = tmp_path / "extension"  # a web extension: manifest.json beside its index.html
    out.mkdir()
    (out / "manifest.json").write_text('{"manifest_version": 3, "name": "my extension"}\n')
    (out / "index.html").write_text("<html></html>\n")
    before = _snapshot(out)
    result = runner.invoke(app, ["data", "build", str(pairs_dir), str(out), "--workers", "1"])
    assert result.output == (
        f"error: {out}: its manifest.json is not one pianotx wrote; choose a new or empty folder for the dataset\n"
    )
    assert result.exit_code == 1 and _snapshot(out) == before


def test_data_build_refuses_its_own_dataset_once_it_holds_a_users_file(pairs_dir, tmp_path):
    out = tmp_path / "ds"
    assert runner.invoke(app, ["data", "build", str(pairs_dir), str(out), "--workers", "1"]).exit_code == 0
    (out / "train" / "my-notes.txt").write_text("mine\n")
    before = _snapshot(out)
    result = runner.invoke(app, ["data", "build", str(pairs_dir), str(out), "--workers", "1", "--seed", "3"])
    assert result.output == (
        f"error: {out}: train/my-notes.txt is there, which its manifest.json does not list; "
        "choose a new or empty folder for the dataset\n"
    )
    assert result.exit_code == 1 and _snapshot(out) == before


def test_data_render_refuses_a_folder_with_a_foreign_render_json(tmp_path):
    out = tmp_path / "docs"
    out.mkdir()
    (out / "render.json").write_text('{"renderer": "my site", "pages": ["index"]}\n')
    (out / "thesis.tex").write_text("my document\n")
    result = runner.invoke(app, ["data", "render", str(out), "--pieces", "1", "--seconds", "2"])
    assert result.output == (
        f"error: {out}: its render.json is not one pianotx wrote; choose a new or empty folder for the corpus\n"
    )
    assert result.exit_code == 1
    foreign = b'{"renderer": "my site", "pages": ["index"]}\n'
    assert _snapshot(out) == {"render.json": foreign, "thesis.tex": b"my document\n"}


def test_an_earlier_render_is_recognised_by_its_render_json(tmp_path):
    out = tmp_path / "render"
    out.mkdir()
    manifest = {"version": 1, "sample_rate": 16000, "seed": 0, "options": {}, "pianos": [], "pieces": []}
    manifest["pieces"] = [{"name": "a__P"}, {"name": "a__P__aug1"}]
    (out / "render.json").write_text(json.dumps(manifest))
    for name in ("a__P", "a__P__aug1"):
        (out / f"{name}.wav").write_bytes(b"")
        (out / f"{name}.mid").write_bytes(b"")
    check_output_folder(out, RENDER_FOLDER, what="corpus")  # an earlier render may be replaced
    (out / "thesis.tex").write_text("my document\n")
    assert _refusal(out, RENDER_FOLDER, "corpus") == (
        f"{out}: thesis.tex is there, which its render.json does not list; choose a new or empty folder for the corpus"
    )


def test_data_render_refuses_a_user_folder(tmp_path):
    out = tmp_path / "userdir"
    out.mkdir()
    (out / "important.txt").write_text("x\n")
    result = runner.invoke(app, ["data", "render", str(out), "--pieces", "1", "--seconds", "2"])
    _one_error_line(result, str(out), "render.json")
    assert _snapshot(out) == {"important.txt": b"x\n"}


def test_export_refuses_to_overwrite_a_file_it_did_not_write(tmp_path):
    (tmp_path / "piano.keras").write_bytes(b"my own model")
    result = runner.invoke(app, ["export", str(BUNDLED_MODEL), str(tmp_path)])
    _one_error_line(result, "piano.keras", "not a pianotx export")
    assert _snapshot(tmp_path) == {"piano.keras": b"my own model"}
    result = runner.invoke(app, ["export", str(BUNDLED_MODEL), str(tmp_path), "--name", "other"])
    assert result.exit_code == 0, result.output
    again = runner.invoke(app, ["export", str(BUNDLED_MODEL), str(tmp_path), "--name", "other"])
    assert again.exit_code == 0, again.output  # an earlier export of the same name is replaced
    assert sorted(_snapshot(tmp_path)) == ["other.json", "other.keras", "piano.keras"]
