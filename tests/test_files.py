"""Nothing lost: atomic writes, and output folders that pianotx refuses to replace.

The command-line cases are the reproductions of the data-loss report: each must exit
non-zero with one line naming the path, and leave every file as it was.
"""

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pianotx.cli import app
from pianotx.files import OutputError, atomic_path, check_output_folder, swap_in, temp_sibling, write_json_atomic
from pianotx.transcribe import BUNDLED_MODEL

runner = CliRunner()


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


def test_write_json_atomic(tmp_path):
    write_json_atomic(tmp_path / "a.json", {"k": [1, 2]})
    assert (tmp_path / "a.json").read_text() == '{\n  "k": [\n    1,\n    2\n  ]\n}\n'


def test_check_output_folder_cases(tmp_path):
    check_output_folder(tmp_path / "new", "manifest.json")  # absent
    (tmp_path / "empty").mkdir()
    check_output_folder(tmp_path / "empty", "manifest.json")
    (tmp_path / "ours").mkdir()
    (tmp_path / "ours" / "manifest.json").write_text("{}")
    check_output_folder(tmp_path / "ours", "manifest.json")
    (tmp_path / "user").mkdir()
    (tmp_path / "user" / "important.txt").write_text("x")
    with pytest.raises(OutputError, match="files pianotx did not make"):
        check_output_folder(tmp_path / "user", "manifest.json")
    (tmp_path / "afile").write_text("hi")
    with pytest.raises(OutputError, match="a file is there"):
        check_output_folder(tmp_path / "afile", "manifest.json")
    with pytest.raises(OutputError, match="afile is a file, not a folder"):
        check_output_folder(tmp_path / "afile" / "x", "manifest.json")
    (tmp_path / "in" / "deep").mkdir(parents=True)
    for out in (tmp_path / "in", tmp_path):
        with pytest.raises(OutputError, match="its own input"):
            check_output_folder(out, "manifest.json", inputs=[tmp_path / "in" / "deep"])
    check_output_folder(tmp_path / "in" / "deep" / "ds", "manifest.json", inputs=[tmp_path / "in" / "deep"])


def test_swap_in_never_deletes_a_folder_that_is_not_ours(tmp_path):
    out = tmp_path / "ds"
    out.mkdir()
    (out / "manifest.json").write_text("old")
    tmp = temp_sibling(out)
    (tmp / "manifest.json").write_text("new")
    swap_in(tmp, out, "manifest.json")
    assert (out / "manifest.json").read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["ds"]
    (out / "manifest.json").unlink()
    (out / "mine.txt").write_text("x")
    tmp = temp_sibling(out)
    with pytest.raises(OutputError):
        swap_in(tmp, out, "manifest.json")
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
from pianotx.files import swap_in
def die(event, args):  # SIGKILL just before any rename onto the target
    if event == "os.rename" and os.fspath(args[1]) == sys.argv[2]:
        os.kill(os.getpid(), signal.SIGKILL)
sys.addaudithook(die)
swap_in(Path(sys.argv[1]), Path(sys.argv[2]), "manifest.json")
"""


def test_a_kill_during_swap_in_leaves_the_old_folder_or_the_new(tmp_path):
    out = tmp_path / "ds"
    out.mkdir()
    (out / "manifest.json").write_text("old")
    tmp = temp_sibling(out)
    (tmp / "manifest.json").write_text("new")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    subprocess.run([sys.executable, "-c", KILL_AT_SWAP, str(tmp), str(out)], env=env, check=False)
    assert (out / "manifest.json").read_text() in ("old", "new")
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
