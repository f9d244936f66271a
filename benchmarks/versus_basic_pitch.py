"""pianotx models side by side with Spotify's Basic Pitch on one dataset split.

Every system transcribes the audio of each piece of the split and is scored by
pianotx's own evaluation (:mod:`pianotx.evaluate`: mir_eval frame, note and
note-with-offset F1, per piece, then the mean) against the same aligned reference notes.

Basic Pitch (``basic-pitch==0.4.0``, default thresholds, its TensorFlow backend on CPU)
pins TensorFlow 2.15 and Python <= 3.11, so it lives in a venv of its own, created on
first use under ``${XDG_CACHE_HOME:-~/.cache}/pianotx/basic-pitch-venv`` (under a minute
from a warm pip cache; ~2.1 GB), and runs there as one subprocess for the whole batch
(``_basic_pitch_runner.py``), its model loaded once. Its notes are read from its note
events: the times, pitches and velocities its MIDI file gets, without tick rounding.
pianotx models run in this process through the library.

Timing, for both: start-up (imports, model load and one warm-up prediction on a second
of silence) apart; then, per piece, audio loading, features (Basic Pitch: its own
input), the network and decoding. The batch real-time factor is the sum of those
seconds over the sum of the audio's seconds.

    python benchmarks/versus_basic_pitch.py [--data data/default] [--split test]
        [--model URI-or-.keras ...] [--limit N] [--skip-basic-pitch] [--json OUT]

Prints note recall by register and velocity (where each system misses notes), note
recall by context (chord size, velocity band, register), then a Markdown table last: one
row per system.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pianotx.midi import Notes

BASIC_PITCH_REQUIREMENT = "basic-pitch==0.4.0"
RUNNER = Path(__file__).resolve().with_name("_basic_pitch_runner.py")
INSTALLED_MARKER = "pianotx-installed.txt"


class BenchmarkError(RuntimeError):
    """The benchmark cannot go on (one line saying why)."""


@dataclass(frozen=True)
class Piece:
    """One piece of the split: its audio and aligned reference notes."""

    name: str
    audio: Path
    audio_seconds: float
    reference: Notes


@dataclass(frozen=True)
class SystemRun:
    """One system's transcriptions of the split, with its timings.

    ``estimates`` maps piece name to notes; ``seconds`` to processing seconds.
    """

    name: str
    startup_seconds: float
    estimates: dict[str, Notes]
    seconds: dict[str, float]


# --- Pure parts: reading Basic Pitch's notes, scoring, the table --------------------------


def notes_from_events(events: list[list[float]]) -> Notes:
    """Basic Pitch's note events as :class:`Notes` on the piano's 88 keys.

    Args:
        events: ``[start_s, end_s, midi_pitch, amplitude]`` per note, amplitude in
            [0, 1] (Basic Pitch's velocity is ``round(127 * amplitude)``).

    Returns:
        Notes sorted by onset then pitch; only MIDI 21..108 and positive durations;
        velocities ``round(127 * amplitude)`` clipped to 1..127.
    """
    if not events:
        return Notes.empty()
    table = np.asarray(events, np.float64).reshape(-1, 4)
    velocities = np.clip(np.round(127.0 * table[:, 3]), 1, 127).astype(np.int64)
    notes = Notes.from_lists(table[:, :2], table[:, 2].astype(np.int64), velocities).in_piano_range()
    keep = notes.intervals[:, 1] > notes.intervals[:, 0]
    return Notes(notes.intervals[keep], notes.pitches[keep], notes.velocities[keep])


def real_time_factor(seconds: dict[str, float], pieces: list[Piece]) -> float:
    """Processing seconds over audio seconds, summed over ``pieces``."""
    audio = sum(p.audio_seconds for p in pieces)
    return sum(seconds[p.name] for p in pieces) / audio if audio > 0 else float("nan")


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The comparison as a Markdown table, one row per system.

    Args:
        rows: ``{"system", "note_f1", "note_with_offset_f1", "frame_f1",
            "note_with_velocity_f1", "rtf", "startup_seconds", "pieces"}`` each; F1 in
            [0, 1], shown in percent (note+velocity: mir_eval's transcription_velocity,
            offsets ignored).

    Returns:
        Lines joined by newlines (no trailing newline).
    """
    lines = [
        "| system | note F1 | note+offset F1 | frame F1 | note+velocity F1 | real-time factor | start-up s | pieces |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        keys = ("note_f1", "note_with_offset_f1", "frame_f1", "note_with_velocity_f1")
        scores = " | ".join(f"{100.0 * r[key]:.1f}" for key in keys)
        lines.append(f"| {r['system']} | {scores} | {r['rtf']:.4f} | {r['startup_seconds']:.1f} | {r['pieces']} |")
    return "\n".join(lines)


# Where the missed notes are: reference notes by register and by MIDI velocity.
BANDS = (
    ("pitch", 21, 47, "A0-B2"), ("pitch", 48, 59, "C3-B3"), ("pitch", 60, 71, "C4-B4"),
    ("pitch", 72, 83, "C5-B5"), ("pitch", 84, 95, "C6-B6"), ("pitch", 96, 108, "C7-C8"),
    ("velocity", 1, 49, "vel 1-49"), ("velocity", 50, 69, "vel 50-69"),
    ("velocity", 70, 89, "vel 70-89"), ("velocity", 90, 127, "vel 90-127"),
)  # fmt: skip


def found_by_band(pieces: list[Piece], estimates: dict[str, Notes]) -> dict[str, list[int]]:
    """``{band label: [reference notes found, reference notes]}`` over all pieces, for
    each of :data:`BANDS` (found: matched on onset and pitch, as note recall counts)."""
    from pianotx.evaluate import found_references

    found = np.concatenate([found_references(p.reference, estimates[p.name]) for p in pieces])
    values = {
        "pitch": np.concatenate([p.reference.pitches for p in pieces]),
        "velocity": np.concatenate([p.reference.velocities for p in pieces]),
    }
    counts = {}
    for key, low, high, label in BANDS:
        inside = (values[key] >= low) & (values[key] <= high)
        counts[label] = [int(found[inside].sum()), int(inside.sum())]
    return counts


def recall_table(results: list[dict[str, Any]]) -> str:
    """Note recall (%) by register and velocity, one row per system (at least one), over
    all notes of the split (not per piece); the first row counts the reference notes."""
    return _recall_lines(results, "found_by_band", [label for *_, label in BANDS])


def _recall_lines(results: list[dict[str, Any]], key: str, labels: list[str]) -> str:
    """The recall table of ``results[i][key]`` (``{label: [found, total]}``) over ``labels``."""
    lines = ["| note recall % | " + " | ".join(labels) + " |", "|---|" + "---:|" * len(labels)]
    totals = results[0][key]
    lines.append("| reference notes | " + " | ".join(str(totals[label][1]) for label in labels) + " |")
    for r in results:
        cells = [r[key][label] for label in labels]
        lines.append(f"| {r['system']} | " + " | ".join(f"{100 * f / n:.1f}" if n else "-" for f, n in cells) + " |")
    return "\n".join(lines)


# The context a reference note is played in: how many notes start with it (itself
# included: onsets within the note scores' 50 ms onset tolerance of its own), its MIDI
# velocity, and its register (C3 is MIDI 48, C6 MIDI 84; both ends inside the middle band).
CONTEXTS = (
    ("chord", 1, 1, "1 onset"), ("chord", 2, 3, "2-3 onsets"), ("chord", 4, 128, "4+ onsets"),
    ("velocity", 1, 59, "vel <60"), ("velocity", 60, 90, "vel 60-90"), ("velocity", 91, 127, "vel >90"),
    ("pitch", 0, 47, "below C3"), ("pitch", 48, 84, "C3-C6"), ("pitch", 85, 127, "above C6"),
)  # fmt: skip
CHORD_WINDOW = 0.05  # seconds: mir_eval's onset tolerance in the note scores


def chord_sizes(notes: Notes, window: float = CHORD_WINDOW) -> np.ndarray:
    """(n,) int: for each note, the notes whose onset lies within ``window`` seconds of
    its own (inclusive), itself included: 1 for a note played alone."""
    mine = notes.intervals[:, 0]
    onsets = np.sort(mine)
    high, low = np.searchsorted(onsets, mine + window, "right"), np.searchsorted(onsets, mine - window, "left")
    return (high - low).astype(np.int64)


def found_by_context(pieces: list[Piece], estimates: dict[str, Notes]) -> dict[str, list[int]]:
    """``{context label: [reference notes found, reference notes]}`` over all pieces, for
    each of :data:`CONTEXTS`. Found is mir_eval's matching on onset (50 ms) and pitch (50
    cents), ``mir_eval.transcription.match_notes`` through
    :func:`pianotx.evaluate.found_references`: the notes note recall counts."""
    from pianotx.evaluate import found_references

    found = np.concatenate([found_references(p.reference, estimates[p.name]) for p in pieces])
    values = {
        "chord": np.concatenate([chord_sizes(p.reference) for p in pieces]),
        "pitch": np.concatenate([p.reference.pitches for p in pieces]),
        "velocity": np.concatenate([p.reference.velocities for p in pieces]),
    }
    counts = {}
    for key, low, high, label in CONTEXTS:
        inside = (values[key] >= low) & (values[key] <= high)
        counts[label] = [int(found[inside].sum()), int(inside.sum())]
    return counts


def context_table(results: list[dict[str, Any]]) -> str:
    """Note recall (%) by chord size, velocity band and register (:data:`CONTEXTS`), one
    row per system, over all notes (not per piece); the first row counts the notes."""
    return _recall_lines(results, "found_by_context", [label for *_, label in CONTEXTS])


def score_run(run: SystemRun, pieces: list[Piece]) -> dict[str, Any]:
    """A system's per-piece and mean scores, recall by band and by context, real-time
    factor and start-up, as plain data."""
    from pianotx.evaluate import evaluate_piece, mean_scores

    per_piece = {p.name: evaluate_piece(p.reference, run.estimates[p.name]) for p in pieces}
    return {
        "found_by_band": found_by_band(pieces, run.estimates),
        "found_by_context": found_by_context(pieces, run.estimates),
        "system": run.name,
        "startup_seconds": run.startup_seconds,
        "processing_seconds": sum(run.seconds.values()),
        "audio_seconds": sum(p.audio_seconds for p in pieces),
        "rtf": real_time_factor(run.seconds, pieces),
        "pieces": len(pieces),
        "mean": mean_scores(list(per_piece.values())),
        "per_piece": per_piece,
        "seconds": run.seconds,
    }


def table_row(scored: dict[str, Any]) -> dict[str, Any]:
    """The row of :func:`markdown_table` for one :func:`score_run` result."""
    mean = scored["mean"]
    return {
        "system": scored["system"],
        "note_f1": mean["note_f1"],
        "note_with_offset_f1": mean["note_with_offset_f1"],
        "frame_f1": mean["frame_f1"],
        "note_with_velocity_f1": mean["note_with_velocity_f1"],
        "rtf": scored["rtf"],
        "startup_seconds": scored["startup_seconds"],
        "pieces": scored["pieces"],
    }


# --- The split ---------------------------------------------------------------------------


def load_pieces(dataset: Path, split: str, limit: int) -> list[Piece]:
    """The split's pieces (the first ``limit``; 0: all) with audio lengths and references."""
    import soundfile as sf

    from pianotx.store import DatasetError, SplitArrays, load_manifest

    manifest = load_manifest(dataset)
    arrays = SplitArrays(manifest, split)
    pieces = []
    for record in manifest.pieces(split)[: limit or None]:
        try:
            audio = manifest.input_path(record)
        except DatasetError as exc:
            raise BenchmarkError(str(exc)) from exc
        pieces.append(Piece(record["name"], audio, sf.info(str(audio)).duration, arrays.notes(record["name"])))
    if not pieces:
        raise BenchmarkError(f"{dataset}: the {split} split has no pieces")
    return pieces


def write_silence(path: Path, seconds: float = 1.0, sample_rate: int = 16000) -> Path:
    """A silent wav for warm-up predictions."""
    import soundfile as sf

    sf.write(path, np.zeros(int(seconds * sample_rate), np.float32), sample_rate)
    return path


# --- pianotx models ----------------------------------------------------------------------


def default_models() -> list[str]:
    """The bundled model, and ``models:/piano/Production`` when the store has it."""
    from pianotx.locations import resolve_store
    from pianotx.tracking import has_model
    from pianotx.transcribe import BUNDLED_MODEL, DEFAULT_URI

    models = [str(BUNDLED_MODEL)]
    if has_model(resolve_store(None), DEFAULT_URI):
        models.append(DEFAULT_URI)
    return models


def system_name(model: str) -> str:
    """``pianotx bundled`` for the bundled model, else ``pianotx <model>``."""
    from pianotx.transcribe import BUNDLED_MODEL

    return "pianotx bundled" if Path(model).resolve() == BUNDLED_MODEL else f"pianotx {model}"


def pianotx_transcribe_fn(model: str, warmup: Path) -> tuple[Callable[[Path], Notes], float]:
    """Load ``model`` and warm it up on ``warmup``; returns (audio path -> notes, start-up s)."""
    from pianotx.audio import load_audio
    from pianotx.features import compute_features
    from pianotx.transcribe import load_transcriber

    start = time.perf_counter()
    transcriber = load_transcriber(model)
    config = transcriber.features

    def transcribe(audio: Path) -> Notes:
        features = compute_features(load_audio(audio, config.sample_rate), config)
        return transcriber.notes(features)

    transcribe(warmup)
    return transcribe, time.perf_counter() - start


def run_pianotx(model: str, pieces: list[Piece], warmup: Path) -> SystemRun:
    """One pianotx model over every piece, each timed from audio file to notes."""
    transcribe, startup = pianotx_transcribe_fn(model, warmup)
    estimates, seconds = {}, {}
    for piece in pieces:
        start = time.perf_counter()
        estimates[piece.name] = transcribe(piece.audio)
        seconds[piece.name] = time.perf_counter() - start
    return SystemRun(system_name(model), startup, estimates, seconds)


# --- Basic Pitch -------------------------------------------------------------------------


def default_venv() -> Path:
    """``${XDG_CACHE_HOME:-~/.cache}/pianotx/basic-pitch-venv``."""
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "pianotx" / "basic-pitch-venv"


def default_python() -> str:
    """An interpreter TensorFlow 2.15 has wheels for (3.9-3.11): this one, or python3.11."""
    if sys.version_info[:2] <= (3, 11):
        return sys.executable
    return shutil.which("python3.11") or sys.executable


def ensure_basic_pitch(venv: Path, python: str) -> Path:
    """The venv's interpreter, after creating the venv and installing Basic Pitch if needed.

    A folder without the install marker is replaced only when it is a venv (it has
    ``pyvenv.cfg``): a failed earlier install; anything else there is left alone.

    Raises:
        BenchmarkError: the folder is something else, or venv creation or pip fails.
    """
    marker = venv / INSTALLED_MARKER
    if marker.is_file() and marker.read_text().strip() == BASIC_PITCH_REQUIREMENT:
        return venv / "bin" / "python"
    if venv.exists():
        if not (venv / "pyvenv.cfg").is_file():
            raise BenchmarkError(f"{venv}: exists and is not a venv; remove it or pass --basic-pitch-venv")
        shutil.rmtree(venv)
    print(f"installing {BASIC_PITCH_REQUIREMENT} into {venv} (once)", file=sys.stderr)
    _check_call([python, "-m", "venv", str(venv)], f"{venv}: cannot create a venv with {python}")
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", BASIC_PITCH_REQUIREMENT]
    _check_call(pip, f"{venv}: pip cannot install {BASIC_PITCH_REQUIREMENT}")
    marker.write_text(BASIC_PITCH_REQUIREMENT + "\n")
    return venv / "bin" / "python"


def _check_call(command: list[str], message: str) -> None:
    """Run ``command``; on failure raise ``message`` with the last line of its output."""
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines() or ["(no output)"]
        raise BenchmarkError(f"{message}: {lines[-1]}")


def call_runner(python: Path, audio: list[Path], warmup: Path, out: Path) -> tuple[dict[str, Any], float]:
    """Run Basic Pitch over ``audio`` in one subprocess; returns (its result, wall seconds)."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    start = time.perf_counter()
    done = subprocess.run(
        [str(python), str(RUNNER), str(out), str(warmup)],
        input="".join(f"{path}\n" for path in audio),
        capture_output=True,
        text=True,
        env=env,
    )
    wall = time.perf_counter() - start
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines() or ["(no output)"]
        raise BenchmarkError(f"{RUNNER.name} failed (exit {done.returncode}): {lines[-1]}")
    return json.loads(out.read_text()), wall


def run_basic_pitch(python: Path, pieces: list[Piece], warmup: Path) -> SystemRun:
    """Basic Pitch over every piece; start-up is the subprocess's wall time less its files'."""
    with tempfile.TemporaryDirectory() as tmp:
        result, wall = call_runner(python, [p.audio for p in pieces], warmup, Path(tmp) / "basic-pitch.json")
    estimates, seconds = {}, {}
    for piece, file in zip(pieces, result["files"], strict=True):
        if file["error"]:
            raise BenchmarkError(f"{piece.audio}: Basic Pitch failed ({file['error']})")
        estimates[piece.name] = notes_from_events(file["notes"])
        seconds[piece.name] = file["seconds"]
    name = f"Basic Pitch {result['version']} ({result['backend'].lower()})"
    return SystemRun(name, wall - sum(seconds.values()), estimates, seconds)


# --- Command line ------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("data/default"), help="dataset from `pianotx data build`")
    parser.add_argument("--split", default="test", help="train, validation or test")
    parser.add_argument(
        "--model",
        action="append",
        default=None,
        help="pianotx model URI or .keras export (repeatable; default: bundled, and models:/piano/Production "
        "when registered)",
    )
    parser.add_argument("--limit", type=int, default=0, help="only the first N pieces (0: all)")
    parser.add_argument("--skip-basic-pitch", action="store_true")
    parser.add_argument("--basic-pitch-venv", type=Path, default=default_venv())
    parser.add_argument("--basic-pitch-python", default=default_python(), help="interpreter for a new venv")
    parser.add_argument("--json", type=Path, default=None, help="write per-piece scores and timings here")
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every system over the split, scored; Basic Pitch first."""
    pieces = load_pieces(args.data, args.split, args.limit)
    print(f"{len(pieces)} pieces of {args.data} ({args.split})", file=sys.stderr)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        warmup = write_silence(Path(tmp) / "silence.wav")
        if not args.skip_basic_pitch:
            python = ensure_basic_pitch(args.basic_pitch_venv, args.basic_pitch_python)
            results.append(score_run(run_basic_pitch(python, pieces, warmup), pieces))
        for model in args.model or default_models():
            results.append(score_run(run_pianotx(model, pieces, warmup), pieces))
    return results


def write_json(path: Path, args: argparse.Namespace, results: list[dict[str, Any]]) -> None:
    from pianotx.files import write_json_atomic
    from pianotx.store import load_manifest

    write_json_atomic(
        path,
        {
            "dataset": str(args.data.resolve()),
            "dataset_fingerprint": load_manifest(args.data).data["fingerprint"],
            "split": args.split,
            "systems": results,
        },
    )


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.json is not None and not args.json.parent.is_dir():
        sys.exit(f"error: {args.json}: its folder does not exist")
    from pianotx.tracking import TrackingError

    try:
        results = run(args)
    except (BenchmarkError, TrackingError, ValueError, FileNotFoundError) as exc:
        sys.exit(f"error: {exc}")
    if args.json is not None:
        write_json(args.json, args, results)
    print(recall_table(results) + "\n")
    print(context_table(results) + "\n")
    print(markdown_table([table_row(r) for r in results]))


if __name__ == "__main__":
    main()
