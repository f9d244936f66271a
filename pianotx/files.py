"""Writing without losing anything: atomic files, and output folders pianotx may replace.

Every file pianotx writes goes to a temporary name beside its target and is renamed
into place when complete (:func:`atomic_path`), so a crash never leaves half a file;
the result gets the usual permissions (``0o666`` less the umask), not a temporary
file's private ones.

Whole folders (a dataset, a rendered corpus) are made in a hidden temporary sibling
(:func:`temp_sibling`) and swapped in (:func:`swap_in`): on Linux the two folders trade
places in one atomic step, so a kill at any moment leaves the old folder or the new one;
elsewhere a kill between two renames leaves the old one aside, and the next
:func:`temp_sibling` puts it back (it also clears what a killed process left). Before
any work, :func:`check_output_folder` makes sure the target is something pianotx may
replace: nothing yet, an empty folder, or a folder pianotx made itself. A folder is
recognised as pianotx's by its manifest's content (:class:`OwnedFolder`: the format
pianotx writes, and the files it lists), never by a file name alone, and it may hold
nothing its manifest does not list. Anything else, or a target that is or contains an
input, is refused with one line naming the path and the reason, and nothing is touched.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pianotx.errors import PianotxError


class OutputError(PianotxError, ValueError):
    """An output path pianotx must not write to (the message names it and why)."""


def _file_mode() -> int:
    """``0o666`` less the process umask: the mode ``open()`` would give a new file."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; renamed over ``path`` on success.

    The temporary file keeps ``path``'s suffixes (``.x.mid.tmp-ab12.mid``,
    ``.w.weights.h5.tmp-ab12.weights.h5``), so libraries that choose a format by suffix
    write the right one. On an exception it is removed and ``path`` is left as it was.

    Yields:
        The temporary path (it exists, empty).
    """
    path = Path(path)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.tmp-", suffix="".join(path.suffixes), dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, _file_mode())
        _fsync_file(tmp)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _fsync_file(path: Path) -> None:
    """Flush ``path``'s data to the disk, so the rename that follows never exposes an
    empty or partial file after a power cut."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(folder: Path) -> None:
    """Flush ``folder``'s entries (a rename into it) to the disk; skipped where the
    system cannot open a folder (Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def remove_inside(path: str | Path, owner: str | Path, what: str = "folder") -> None:
    """Remove the file or folder ``path``, which must lie strictly inside ``owner``.

    Every folder pianotx deletes goes through here: the check runs on the resolved paths
    (symbolic links followed) before anything is removed, so a name that climbs out
    (``..``, an absolute path, a link) can never delete what pianotx does not own. A
    symbolic link itself is removed, never what it points to.

    Args:
        path: what to remove (missing: nothing to do).
        owner: the folder pianotx owns, which ``path`` must lie inside (not equal).
        what: what ``path`` is, for the message ("search state").

    Raises:
        OutputError: ``path`` is ``owner`` or lies outside it (nothing is removed).
    """
    path, root = Path(path), Path(owner).resolve()
    target = path.parent.resolve() / path.name if path.is_symlink() else path.resolve()
    if target == root or root not in target.parents:
        raise OutputError(f"{path}: the {what} lies outside {owner}, which pianotx owns; nothing was removed")
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json_atomic(path: str | Path, data: Any) -> None:
    """Write ``data`` as indented JSON to ``path`` atomically."""
    write_text_atomic(path, json.dumps(data, indent=2) + "\n")


def _contains(folder: Path, other: Path) -> bool:
    """Whether ``other`` is ``folder`` or lies inside it (both resolved)."""
    return other == folder or folder in other.parents


@dataclass(frozen=True)
class OwnedFolder:
    """How pianotx recognises a folder it made (a dataset, a rendered corpus).

    Attributes:
        marker: the manifest's file name, written last into the folder
            (``manifest.json``).
        listed: from the manifest's parsed JSON, every file pianotx wrote into the
            folder (paths relative to it, ``/``-separated, the manifest included), or
            None when the JSON is not a manifest of this kind (another program's file of
            the same name).
    """

    marker: str
    listed: Callable[[Any], Iterable[str] | None]

    def unexpected(self, folder: Path) -> str | None:
        """Why ``folder`` (which exists) is not one pianotx may replace, or None.

        The reason names the manifest that is missing or foreign, or one entry (file,
        folder or link) that the manifest does not list.
        """
        path = folder / self.marker
        if not path.is_file():
            return f"the folder holds files pianotx did not make (no {self.marker})"
        try:
            files = self.listed(json.loads(path.read_text()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError):  # unreadable, or another schema
            files = None
        if files is None:
            return f"its {self.marker} is not one pianotx wrote"
        files = {str(f) for f in files}
        folders = {str(parent) for f in files for parent in Path(f).parents if str(parent) != "."}
        for entry in _entries(folder):
            relative = entry.relative_to(folder).as_posix()
            if entry.is_symlink():
                return f"{relative} is a symbolic link, which pianotx never makes"
            if not (entry.is_file() or entry.is_dir()):
                return f"{relative} is neither a file nor a folder, which pianotx never makes"
            if relative not in (files if entry.is_file() else folders):
                return f"{relative} is there, which its {self.marker} does not list"
        return None


def _entries(folder: Path) -> Iterator[Path]:
    """Everything under ``folder``, depth first in sorted order; links are not followed."""
    for entry in sorted(folder.iterdir()):
        yield entry
        if entry.is_dir() and not entry.is_symlink():
            yield from _entries(entry)


def check_output_folder(
    out: str | Path, owned: OwnedFolder, inputs: Sequence[str | Path] = (), what: str = "output"
) -> None:
    """Refuse an output folder pianotx must not replace.

    Allowed: ``out`` does not exist, is an empty folder, or is a folder pianotx made:
    its manifest is one ``owned`` recognises, and it holds nothing else than what that
    manifest lists (and the folders those files lie in).

    Args:
        out: the folder to be written or replaced.
        owned: how a folder pianotx made is recognised.
        inputs: paths the command reads; ``out`` may not be one of them or contain one.
        what: what pianotx would write there, for the message ("dataset").

    Raises:
        OutputError: ``out`` is a file, is under a file, is or contains an input, or is a
            folder with other content (the message names one unexpected entry).
    """
    out = Path(out)
    target = out.resolve()
    for parent in target.parents:
        if parent.exists() and not parent.is_dir():
            raise OutputError(f"{out}: {parent} is a file, not a folder")
    for source in inputs:
        if _contains(target, Path(source).resolve()):
            raise OutputError(f"{out}: the {what} would replace its own input {source}; choose another folder")
    if not target.exists():
        return
    if not target.is_dir():
        raise OutputError(f"{out}: a file is there; the {what} needs a folder (remove it or choose another path)")
    if not any(target.iterdir()):
        return
    reason = owned.unexpected(target)
    if reason is not None:
        raise OutputError(f"{out}: {reason}; choose a new or empty folder for the {what}")


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this host (one of another user's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clear_stale_siblings(out: Path) -> None:
    """Remove the folders ``.NAME.tmp-PID`` and ``.NAME.old-PID`` beside ``out`` that a
    killed process left (its pid no longer running), except that an old folder moved
    aside by a swap killed before the new one arrived is put back as ``out``. Those of
    a running process are left alone."""
    if not out.parent.is_dir():
        return
    for stale in sorted(out.parent.glob(f".{out.name}.*-*")):
        kind, _, pid = stale.name.removeprefix(f".{out.name}.").partition("-")
        if kind not in ("tmp", "old") or stale.is_symlink() or not stale.is_dir():
            continue
        if not pid.isdigit() or pid_alive(int(pid)):
            continue
        if kind == "old" and not out.exists():
            os.replace(stale, out)
        else:
            discard(stale)


def temp_sibling(out: Path) -> Path:
    """A new hidden folder ``.NAME.tmp-PID`` beside ``out``, for building it whole
    (after :func:`clear_stale_siblings`)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    clear_stale_siblings(out)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    discard(tmp)
    tmp.mkdir()
    return tmp


def discard(folder: Path) -> None:
    """Remove ``folder``, a temporary sibling pianotx made (:func:`remove_inside` its
    parent folder), ignoring what cannot be removed (a folder being cleaned up after an
    error must not hide that error)."""
    with suppress(OSError):
        remove_inside(folder, folder.parent, "temporary folder")


def _exchange(a: Path, b: Path) -> bool:
    """Swap the paths ``a`` and ``b`` in one atomic step (Linux ``renameat2`` with
    ``RENAME_EXCHANGE``); False where the system or the file system cannot."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    return bool(renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0)


def swap_in(tmp: Path, out: Path, owned: OwnedFolder) -> None:
    """Replace ``out`` by the complete folder ``tmp`` with renames only.

    ``out`` is replaced only when it is empty or a folder pianotx made (``owned``; checked
    again here, so a folder that changed since :func:`check_output_folder` is never
    deleted). On Linux the two folders trade places in one atomic step and the old one
    is removed from ``tmp``'s name; elsewhere ``out`` is moved aside first, so a kill
    between the two renames leaves it as ``.NAME.old-PID`` (put back by
    :func:`temp_sibling`).

    Raises:
        OutputError: ``out`` now holds something pianotx did not make (``tmp`` is kept).
    """
    check_output_folder(out, owned)
    if out.exists() and _exchange(tmp, out):
        discard(tmp)  # the previous folder, now at tmp's name
        return
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    if out.exists():
        os.replace(out, old)
    os.replace(tmp, out)
    discard(old)
