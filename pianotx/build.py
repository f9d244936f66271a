"""``pianotx data build``: (audio, MIDI) pieces -> aligned, chunked, split dataset.

Per piece (in parallel processes): load audio, compute features (the one feature
function), read the MIDI's notes (sustain pedal applied), estimate the audio-vs-MIDI
offset, shift the notes by it, draw frame and onset rolls, cut chunks. Then the chunks
are gathered into per-split shards (see :mod:`pianotx.store`).

The whole build happens in a temporary sibling folder renamed into place at the end:
an interrupted build leaves the previous dataset (or none) untouched. The same inputs
and config again give "up to date" without work.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pianotx.config import BuildConfig, to_dict
from pianotx.datasets import PieceSource, Problem, discover
from pianotx.errors import PianotxError
from pianotx.files import (
    check_output_folder,
    clear_stale_siblings,
    discard,
    remove_inside,
    swap_in,
    temp_sibling,
    write_json_atomic,
)
from pianotx.store import DATASET_FOLDER, MANIFEST, MANIFEST_VERSION, SPLITS, chunk, load_manifest, write_split

Log = Callable[[str], None]


class BuildError(PianotxError, RuntimeError):
    """The build cannot produce a dataset (nothing usable, or --strict and a bad piece)."""


@dataclass(frozen=True)
class BuildResult:
    status: str  # "built" or "up to date"
    root: Path
    manifest: dict[str, Any]


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr)


def file_hash(path: Path) -> str:
    h = hashlib.blake2b(digest_size=16)
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fingerprint(config: BuildConfig, sources: list[PieceSource]) -> str:
    """Hash of the dataset format, the config and every input's name, split, group,
    piano and content."""
    h = hashlib.sha256(json.dumps([MANIFEST_VERSION, to_dict(config)], sort_keys=True).encode())
    for s in sorted(sources, key=lambda s: s.name):
        meta = [s.name, s.split, s.group, s.piano, s.augmented, s.aligned, file_hash(s.audio), file_hash(s.midi)]
        h.update(json.dumps(meta).encode())
    return h.hexdigest()


def assign_splits(sources: list[PieceSource], config: BuildConfig) -> tuple[dict[str, str], dict[str, str]]:
    """Split by group (the same music never spans splits), seeded.

    A source's own split (MAESTRO) wins. When pieces name their piano and
    ``holdout_piano`` is not "none", that piano ("auto": the last name in sorted order)
    is held out: test holds only its renderings of test-group music, train and
    validation never hear it, and its renderings of other music are excluded.
    ``validation_piano`` (not "none") holds a second piano out in the same way for the
    validation split. Augmented copies of renderings serve training only: validation
    and test hear the pianos as rendered.

    Returns:
        (split of each included piece by name, exclusion reason by name).
    """
    cfg = config.splits
    groups = sorted({s.group for s in sources if s.split is None})
    rng = np.random.default_rng(cfg.seed)
    rng.shuffle(groups)
    n = len(groups)
    n_test = int(round(n * cfg.test_fraction)) if n < 3 else max(1, int(round(n * cfg.test_fraction)))
    n_val = int(round(n * cfg.validation_fraction)) if n < 3 else max(1, int(round(n * cfg.validation_fraction)))
    group_split = {g: "test" for g in groups[:n_test]}
    group_split.update({g: "validation" for g in groups[n_test : n_test + n_val]})
    held = _held_pianos(sources, cfg.holdout_piano, cfg.validation_piano)
    splits, excluded = {}, {}
    for s in sources:
        split = s.split or group_split.get(s.group, "train")
        reason = _held_out_reason(s, split, held)
        if reason:
            excluded[s.name] = reason
        else:
            splits[s.name] = split
    return splits, excluded


def _held_pianos(sources: list[PieceSource], test: str, validation: str) -> dict[str, str]:
    """The held-out piano of each split that has one: ``{"test": name, "validation": name}``."""
    pianos = sorted({s.piano for s in sources if s.piano})
    held = {}
    if test != "none" and len(pianos) >= 2:
        held["test"] = pianos[-1] if test == "auto" else test
    if validation != "none":
        held["validation"] = validation
    for split, piano in held.items():
        if piano not in pianos:
            known = f"is not among {', '.join(pianos)}" if pianos else "cannot be held out: the pieces name no piano"
            raise BuildError(f"{'holdout' if split == 'test' else split} piano {piano!r} {known}")
    if validation != "none" and validation == held.get("test"):
        raise BuildError(f"validation piano {validation!r} is already held out for the test split")
    if held and len(set(held.values())) >= len(pianos):
        raise BuildError(f"holding out {' and '.join(held.values())} leaves no piano to train on")
    return held


def _held_out_reason(source: PieceSource, split: str, held: dict[str, str]) -> str | None:
    """Why ``source`` (of music in ``split``) stays out of the dataset, or None."""
    if source.augmented and split != "train":
        return "augmented copies are for training only"
    if source.split is not None:  # a source's own split (MAESTRO) has no held-out pianos
        return None
    for held_split, piano in held.items():
        if source.piano == piano and split != held_split:
            return f"piano {piano} is held out for the {held_split} split"
        if source.piano != piano and split == held_split:
            return f"{held_split} music is played on the held-out piano {piano} only"
    return None


def process_piece(source: PieceSource, config: BuildConfig, out_file: Path) -> dict[str, Any]:
    """Features, alignment and labels of one piece, chunks saved to ``out_file`` (.npz).

    Returns the piece's manifest record; a bad piece gives ``excluded`` and ``reason``
    instead of raising, an unexpected error included.
    """
    try:
        return _process_piece(source, config, out_file)
    except Exception as exc:  # one bad piece must not sink the build
        record = {"name": source.name, "audio": str(source.audio), "midi": str(source.midi)}
        return {**record, "excluded": True, "reason": f"{type(exc).__name__}: {exc}", "bad_file": str(source.audio)}


def _process_piece(source: PieceSource, config: BuildConfig, out_file: Path) -> dict[str, Any]:
    from pianotx.align import estimate_offset, implausible_pair
    from pianotx.audio import AudioError, load_audio
    from pianotx.features import compute_features
    from pianotx.labels import notes_to_rolls
    from pianotx.midi import MidiError, read_notes

    fc = config.features
    record: dict[str, Any] = {"name": source.name, "audio": str(source.audio), "midi": str(source.midi)}
    try:
        notes = read_notes(source.midi, config.labels.sustain_pedal, config.labels.pedal_threshold)
    except MidiError as exc:
        return {**record, "excluded": True, "reason": str(exc), "bad_file": str(source.midi)}
    warnings: list[str] = []
    try:
        samples = load_audio(source.audio, fc.sample_rate, warn=warnings.append)
    except AudioError as exc:
        return {**record, "excluded": True, "reason": str(exc), "bad_file": str(source.audio)}
    if warnings:
        record["warnings"] = warnings
    seconds = len(samples) / fc.sample_rate
    fault = implausible_pair(notes, seconds, fc.frame_rate)
    if fault is not None:
        which, reason = fault
        return {**record, "excluded": True, "reason": reason, "bad_file": str(getattr(source, which))}
    features = compute_features(samples, fc)
    alignment = estimate_offset(features, notes, fc, config.align)
    offset = 0 if source.aligned else alignment.offset_frames
    record.update(
        n_frames=len(features),
        seconds=round(seconds, 3),
        offset_frames=offset,
        offset_seconds=round(offset / fc.frame_rate, 4),
        alignment_confidence=round(alignment.confidence, 4),
        alignment_correlation=round(alignment.correlation, 4),
        aligned_by="render" if source.aligned else config.align.method,
    )
    if not source.aligned and alignment.confidence < config.align.min_confidence:
        reason = f"alignment confidence {alignment.confidence:.2f} < {config.align.min_confidence}"
        return {**record, "excluded": True, "reason": reason, "bad_file": str(source.audio)}
    aligned = notes.shifted(offset / fc.frame_rate).from_zero()
    frames, onsets = notes_to_rolls(aligned, len(features), fc.frame_rate)
    arrays: dict[str, Any] = {
        "features": chunk(features, config.chunks),
        "frames": chunk(frames, config.chunks),
        "onsets": chunk(onsets, config.chunks),
        **{f"notes/{k}": v for k, v in aligned.save_npz().items()},
    }
    np.savez(out_file, **arrays)
    return {**record, "excluded": False, "reason": ""}


def die_with_parent() -> None:
    """Worker initializer: the kernel ends this process when the build dies (Linux's
    ``PR_SET_PDEATHSIG``), so a killed build leaves no worker behind."""
    import ctypes
    import signal

    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: workers end when they find the pipe closed
        return
    if os.getppid() == 1:  # the build died before the signal was armed
        os._exit(1)


def _process_all(
    sources: list[PieceSource], config: BuildConfig, work: Path, workers: int, progress: bool
) -> list[dict[str, Any]]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    records: list[dict[str, Any] | None] = [None] * len(sources)
    columns = ("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, disable=not progress, transient=False) as bar:
        task = bar.add_task("building", total=len(sources))
        if workers <= 1:
            for i, s in enumerate(sources):
                records[i] = process_piece(s, config, work / f"{i:06d}.npz")
                bar.advance(task)
        else:
            with ProcessPoolExecutor(max_workers=workers, initializer=die_with_parent) as pool:
                futures = {
                    pool.submit(process_piece, s, config, work / f"{i:06d}.npz"): i for i, s in enumerate(sources)
                }
                for future in as_completed(futures):
                    records[futures[future]] = future.result()
                    bar.advance(task)
    return [r for r in records if r is not None]


def _gather(
    records: list[dict[str, Any]], splits: dict[str, str], work: Path, tmp: Path, config: BuildConfig
) -> dict[str, Any]:
    """Write split shards and notes from the per-piece files; fill chunk indices.

    Also records the training split's per-bin feature mean and standard deviation
    (over real frames, not padding) as ``split_info["train"]["feature_stats"]``.
    """
    split_info: dict[str, Any] = {}
    n_bins = config.features.n_bins
    total, total_sq, count = np.zeros(n_bins), np.zeros(n_bins), 0
    for split in SPLITS:
        members = [(i, r) for i, r in enumerate(records) if not r["excluded"] and r["split"] == split]
        files = [work / f"{i:06d}.npz" for i, _ in members]
        shards = write_split(tmp / split, files, config.chunks.shard_chunks)
        start, notes = 0, {}
        for (_, r), f in zip(members, files):
            with np.load(f) as z:
                r["chunk_start"], r["n_chunks"] = start, int(z["features"].shape[0])
                notes.update({f"{r['name']}/{k[6:]}": z[k] for k in z.files if k.startswith("notes/")})
                if split == "train":
                    frames = z["features"].reshape(-1, n_bins)[: r["n_frames"]].astype(np.float64)
                    total, total_sq, count = total + frames.sum(0), total_sq + (frames**2).sum(0), count + len(frames)
            start += r["n_chunks"]
        np.savez(tmp / split / "notes.npz", **notes)
        split_info[split] = {
            "pieces": len(members),
            "chunks": start,
            "frames": int(sum(r["n_frames"] for _, r in members)),
            "shards": shards,
        }
    mean = total / max(count, 1)
    std = np.sqrt(np.maximum(total_sq / max(count, 1) - mean**2, 0.0))
    split_info["train"]["feature_stats"] = {"mean": mean.round(6).tolist(), "std": std.round(6).tolist()}
    return split_info


def build_dataset(
    input_dir: str | Path,
    out_dir: str | Path,
    config: BuildConfig | None = None,
    strict: bool = False,
    workers: int | None = None,
    progress: bool = True,
    log: Log = _stderr,
) -> BuildResult:
    """Build (or confirm up to date) the dataset of ``input_dir`` in ``out_dir``.

    ``out_dir`` must be new, empty, or an earlier pianotx dataset holding only the files
    its manifest lists, and may not be or contain ``input_dir``: anything else is refused
    before any work.

    Raises:
        BuildError: no usable piece, or ``strict`` and any bad input.
        OutputError: ``out_dir`` is not a place a dataset may be written.
    """
    config = config or BuildConfig()
    root, out = Path(input_dir), Path(out_dir)
    if root.is_file():
        raise BuildError(f"{root}: the input is a file, not a folder (give the folder of audio and MIDI pairs)")
    if not root.is_dir():
        raise BuildError(f"{root}: input folder does not exist")
    check_output_folder(out, DATASET_FOLDER, inputs=[root], what="dataset")
    sources, problems = discover(root)
    for p in problems:
        log(f"skipped {p.path}: {p.reason}")
    if strict and problems:
        raise BuildError(f"{problems[0].path}: {problems[0].reason} (--strict)")
    if not sources:
        raise BuildError(f"{root}: no (audio, MIDI) pairs found")
    try:
        _held_pianos(sources, config.splits.holdout_piano, config.splits.validation_piano)
    except BuildError as exc:
        raise BuildError(f"{root}: {exc}") from None
    fp = fingerprint(config, sources)
    clear_stale_siblings(out)  # what a killed build left, even when nothing is to be built
    if (out / MANIFEST).is_file():
        try:
            existing = load_manifest(out).data
            if existing.get("fingerprint") == fp:
                return BuildResult("up to date", out, existing)
        except ValueError:
            pass  # unreadable or old manifest: rebuild
    return _build(_Plan(root, out, sources, problems, fp, config), strict, workers, progress, log)


@dataclass(frozen=True)
class _Plan:
    """What a build works from, decided before any piece is processed."""

    root: Path
    out: Path
    sources: list[PieceSource]
    problems: list[Problem]
    fingerprint: str
    config: BuildConfig


def _build(plan: _Plan, strict: bool, workers: int | None, progress: bool, log: Log) -> BuildResult:
    tmp = temp_sibling(plan.out)
    work = tmp / "pieces"
    work.mkdir(parents=True)
    try:
        splits, held_out = assign_splits(plan.sources, plan.config)
        records = _included_records(plan, splits, work, strict, workers or os.cpu_count() or 1, progress, log)
        records += [_held_out_record(s, held_out[s.name]) for s in plan.sources if s.name in held_out]
        manifest = _manifest(plan, records, _gather(records, splits, work, tmp, plan.config))
        for split in ("train", "validation"):
            if not manifest["splits"][split]["pieces"]:
                log(f"warning: the {split} split is empty; `pianotx search` needs train and validation pieces")
        remove_inside(work, tmp, "work folder")
        write_json_atomic(tmp / MANIFEST, manifest)
        swap_in(tmp, plan.out, DATASET_FOLDER)
    except BaseException:
        discard(tmp)
        raise
    return BuildResult("built", plan.out, manifest)


def _included_records(
    plan: _Plan, splits: dict[str, str], work: Path, strict: bool, workers: int, progress: bool, log: Log
) -> list[dict[str, Any]]:
    """Process every piece that has a split; report (or, strict, refuse) the bad ones.

    Raises:
        BuildError: no usable piece, or ``strict`` and a bad one (naming its bad file).
    """
    todo = [s for s in plan.sources if s.name in splits]
    records = _process_all(todo, plan.config, work, workers, progress)
    for s, r in zip(todo, records):
        r["split"] = splits[s.name]
        for line in r.pop("warnings", []):
            log(f"warning: {line}")
        if r["excluded"]:
            bad = r.pop("bad_file")
            log(f"skipped {bad}: {r['reason']}")
            if strict:
                raise BuildError(f"{bad}: {r['reason']} (--strict)")
    if not any(not r["excluded"] for r in records):
        raise BuildError(f"{plan.root}: no usable piece ({len(records)} tried, all skipped)")
    return records


def _held_out_record(source: PieceSource, reason: str) -> dict[str, Any]:
    return {
        "name": source.name,
        "audio": str(source.audio),
        "midi": str(source.midi),
        "split": None,
        "excluded": True,
        "reason": reason,
    }


def _manifest(plan: _Plan, records: list[dict[str, Any]], split_info: dict[str, Any]) -> dict[str, Any]:
    out = plan.out.resolve()
    for r in records:
        r.pop("bad_file", None)
        for key in ("audio", "midi"):  # relative to the dataset: the two can move together
            r[key] = os.path.relpath(Path(r[key]).resolve(), out)
    return {
        "version": MANIFEST_VERSION,
        "source": str(plan.root.resolve()),
        "built_in": str(out),  # where input paths are relative to when the dataset is copied alone
        "config": to_dict(plan.config),
        "splits": split_info,
        "pieces": records,
        "problems": [{"path": str(p.path), "reason": p.reason} for p in plan.problems],
        "fingerprint": plan.fingerprint,
    }
