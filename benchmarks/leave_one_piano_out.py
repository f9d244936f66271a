"""Generalisation to unseen pianos: each piano of a render folder held out in turn.

For every piano P of the render folder (or of ``--pianos``), one fold:

1. A dataset is built from the render folder with P held out
   (``SplitConfig(holdout_piano=P)``, the default dataset's features: 252 CQT bins, 36
   per octave): its test split holds only P's renderings of the test-group music; train
   and validation never hear P. The split is by music and seeded, so every fold tests the
   same music, each time on another piano. Datasets go to ``WORK/datasets/P`` and are
   reused while their fingerprint (inputs and config) is unchanged.
2. One model is trained from scratch on it: the fixed settings of ``--space`` (default
   ``search_spaces/bundled.yaml``, the bundled model's architecture and training
   settings) with the budget of the command line (``--epochs`` epochs of
   ``--steps-per-epoch`` batches) in place of the space's own. It is trained by
   ``pianotx search`` (:func:`pianotx.tuning.search.run_search`) as a one-trial search
   into a store of its own (``WORK/mlruns``), nothing registered, so its decoding
   thresholds are tuned on the fold's validation pieces exactly as a search tunes them;
   the model is then exported to ``WORK/models/NAME`` and reused by a later run with the
   same space, budget and dataset (an interrupted training resumes as a search does).
3. The fold model, Basic Pitch (unless ``--skip-basic-pitch``; run as in
   ``versus_basic_pitch.py``, in its own venv) and every ``--model`` transcribe the
   fold's test audio and are scored with :mod:`pianotx.evaluate` (mir_eval; per piece,
   then the mean).

A ``--model`` is fixed: the same model in every fold, labelled "(fixed)". It was not
trained without the fold's piano: the bundled model, say, was trained on the default
dataset, whose training split heard every piano but TimGM6mb (its held-out piano) and
none of the test music, so its rows on the other folds score a heard piano on unheard
music, a ceiling of sorts for the fold models.

    python benchmarks/leave_one_piano_out.py [--render data/render] [--work data/lopo]
        [--pianos P ...] [--epochs 3] [--steps-per-epoch 40] [--space FILE]
        [--model URI-or-.keras ...] [--skip-basic-pitch] [--json OUT]

Prints a line per system as each fold ends (stderr), then note recall by context (chord
size, velocity band, register) pooled over the folds, then a Markdown table last: one row
per fold and system, then each system's worst fold (by note F1) and its mean over folds.
``--json`` holds the folds (their pianos, pieces and timings) and every score, rewritten
after each fold.

Cost on the default corpus (1800 renderings, 5 pianos), one fold at the default budget
on a 2-core CPU shared with another job: 9.9 minutes (build 4.9, training with decoding
tuning and export 4.2, scoring with Basic Pitch and the bundled model 0.8); each fold
dataset takes 2.1 GB. A rerun reuses the datasets (and the models of an unchanged space
and budget), so a second space over the same folds pays only its training and scoring.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import re
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))  # when loaded by a test, not run
import versus_basic_pitch as versus  # noqa: E402 - the side-by-side benchmark beside this one

from pianotx.config import BuildConfig, FeatureConfig, SplitConfig  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
BUNDLED_SPACE = REPO / "search_spaces" / "bundled.yaml"
# The default dataset's features (the Makefile's FEATURES), those of the bundled model.
FEATURES = FeatureConfig(bins_per_octave=36, n_bins=252)
# What fits a 2-core CPU: a few minutes of training a fold for the bundled architecture.
DEFAULT_EPOCHS = 3
DEFAULT_STEPS = 40
SCORES = ("note_f1", "note_with_offset_f1", "frame_f1", "note_with_velocity_f1", "note_precision", "note_recall")


@dataclass(frozen=True)
class Fold:
    """One held-out piano's dataset and what each of its splits hears.

    ``heard`` maps each split to the sorted pianos of its pieces; ``test_pieces`` are the
    test split's piece names, in the dataset's order.
    """

    piano: str
    dataset: Path
    status: str  # build_dataset's: "built" or "up to date"
    fingerprint: str
    heard: dict[str, list[str]]
    test_pieces: list[str]
    seconds: float


# --- Folds: pianos and datasets ----------------------------------------------------------


def piano_of_pieces(render: Path) -> dict[str, str]:
    """Each piece's piano by name, as the dataset builder reads them (``render.json``)."""
    from pianotx.datasets import discover

    sources, _ = discover(render)
    return {s.name: s.piano for s in sources if s.piano}


def fold_pianos(render: Path, wanted: list[str] | None) -> list[str]:
    """The pianos to hold out: ``wanted`` (in its order, each once) or all of the render
    folder's, sorted.

    Raises:
        BenchmarkError: fewer than two pianos (holding one out would leave none to train
            on), or a wanted piano the folder does not have.
    """
    pianos = sorted(set(piano_of_pieces(render).values()))
    if len(pianos) < 2:
        found = f"only {pianos[0]}" if pianos else "no pieces naming a piano (no render.json?)"
        raise versus.BenchmarkError(f"{render}: leaving one piano out needs two pianos or more, found {found}")
    unknown = [p for p in wanted or [] if p not in pianos]
    if unknown:
        raise versus.BenchmarkError(f"{render}: no piano {', '.join(unknown)}; it has {', '.join(pianos)}")
    return list(dict.fromkeys(wanted)) if wanted else pianos


def folder_name(piano: str) -> str:
    """``piano`` as a file name (letters, digits, ``.``, ``_``, ``-``; the rest ``_``)."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", piano).lstrip(".-") or "piano"


def build_config(piano: str) -> BuildConfig:
    """The default dataset's build settings with ``piano`` held out for the test split."""
    return BuildConfig(features=FEATURES, splits=SplitConfig(holdout_piano=piano))


def build_fold(render: Path, work: Path, piano: str, workers: int | None, progress: bool = True) -> Fold:
    """Build (or find up to date) the fold dataset ``work/datasets/PIANO`` and check that
    it holds ``piano`` out: its test pieces are all on it, train and validation never.

    Raises:
        BenchmarkError: the dataset does not hold the piano out (it should never happen),
            or its test split is empty.
    """
    from pianotx.build import build_dataset
    from pianotx.store import SPLITS, load_manifest

    start = time.perf_counter()
    out = work / "datasets" / folder_name(piano)
    result = build_dataset(render, out, build_config(piano), workers=workers, progress=progress)
    manifest = load_manifest(out)
    piano_of = piano_of_pieces(render)
    heard = {split: sorted({piano_of[r["name"]] for r in manifest.pieces(split)}) for split in SPLITS}
    test = [r["name"] for r in manifest.pieces("test")]
    if not test:
        raise versus.BenchmarkError(f"{out}: the test split has no pieces on {piano}")
    if heard["test"] != [piano] or piano in heard["train"] + heard["validation"]:
        raise versus.BenchmarkError(f"{out}: does not hold {piano} out (pianos by split: {heard})")
    fingerprint = manifest.data["fingerprint"]
    return Fold(piano, out, result.status, fingerprint, heard, test, time.perf_counter() - start)


# --- Training: a one-trial search of fixed settings --------------------------------------


def read_space(path: Path) -> dict[str, Any]:
    """A space file of fixed settings (no ``hyperparameters``), from scratch.

    Raises:
        BenchmarkError: the file searches something, or starts from a model: a model that
            heard the held-out piano would defeat the fold.
    """
    try:
        space = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise versus.BenchmarkError(f"{path}: cannot read the space ({exc})") from None
    if not isinstance(space, dict):
        raise versus.BenchmarkError(f"{path}: a space file is a mapping (name, fixed, ...)")
    if space.get("hyperparameters"):
        raise versus.BenchmarkError(f"{path}: searches hyperparameters; each fold trains one fixed configuration")
    fixed = space.get("fixed") or {}
    if not isinstance(fixed, dict):
        raise versus.BenchmarkError(f"{path}: fixed must be a mapping")
    for where, value in (("init_from", space.get("init_from")), ("fixed init_from", fixed.get("init_from"))):
        if value not in (None, "none"):
            raise versus.BenchmarkError(f"{path}: {where} {value}; each fold trains from scratch")
    return space


def fold_space(base: Path, piano: str, epochs: int, steps: int, fingerprint: str, folder: Path) -> Path:
    """The one-trial space a fold trains with, written to ``folder``.

    It is ``base``'s fixed settings with ``epochs`` and ``steps_per_epoch`` replaced
    (every fold and space then trains for the same budget), its objective and
    ``note_eval_pieces`` (validation pieces decoding is tuned on), and a one-trial tuner.
    Its name, ``lopo-PIANO-DIGEST``, digests those settings and the fold dataset's
    fingerprint: the same fold again finds its search (and model); any change starts a
    new one.
    """
    space = read_space(base)
    fixed = dict(space.get("fixed") or {}) | {"epochs": epochs, "steps_per_epoch": steps}
    body: dict[str, Any] = {
        "description": f"{base.name}, {epochs} x {steps} batches, trained without {piano} "
        "(benchmarks/leave_one_piano_out.py)",
        "objective": space.get("objective", "val_note_f1"),
        "tuner": {"type": "random", "max_trials": 1, "seed": 0},
        "fixed": fixed,
    }
    if "note_eval_pieces" in space:
        body["note_eval_pieces"] = space["note_eval_pieces"]
    text = yaml.safe_dump(body, sort_keys=True)
    digest = hashlib.sha256(f"{text}\n{fingerprint}".encode()).hexdigest()[:10]
    name = f"lopo-{folder_name(piano)[:80]}-{digest}"
    path = folder / f"{name}.yaml"
    text = yaml.safe_dump({"name": name}) + text
    if not path.is_file() or path.read_text() != text:  # an unchanged file: a search resumes
        folder.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return path


def work_store(work: Path) -> Any:
    """The benchmark's own MLflow store, ``work/mlruns`` (Keras Tuner's state beside it)."""
    from pianotx.locations import resolve_store

    (work / "mlruns").mkdir(parents=True, exist_ok=True)
    return resolve_store(f"sqlite:///{(work / 'mlruns' / 'mlflow.db').resolve()}")


def train_fold(space: Path, fold: Fold, work: Path, verbose: int = 2) -> tuple[Path, bool]:
    """The fold's model: ``work/models/NAME/piano.keras``, trained now unless an earlier
    run left it. Returns (the model, whether it was reused).

    Raises:
        BenchmarkError: the trial did not complete.
    """
    import os

    from pianotx.files import discard, temp_sibling
    from pianotx.transcribe import export, load_transcriber
    from pianotx.tuning.search import run_search

    final = work / "models" / space.stem
    if (final / "piano.keras").is_file():
        return final / "piano.keras", True
    store = work_store(work)
    result = run_search(space, fold.dataset, store, register_as=None, verbose=verbose)
    if result.model_uri is None:
        raise versus.BenchmarkError(f"fold {fold.piano}: its training trial failed (see {store.tracking_uri})")
    tmp = temp_sibling(final)
    try:
        export(load_transcriber(result.model_uri, store.tracking_uri), tmp)
        os.replace(tmp, final)  # whole or not at all: a later run reuses only a complete export
    except BaseException:
        discard(tmp)
        raise
    return final / "piano.keras", False


# --- Scoring -----------------------------------------------------------------------------


def fold_system(space: Path) -> str:
    """The fold models' system name (the same in every fold)."""
    return f"pianotx {space.name}, trained without it"


def fixed_system(model: str) -> str:
    return f"{versus.system_name(model)} (fixed)"


def score_fold(
    fold: Fold, model: Path, system: str, fixed: list[str], basic_pitch: Path | None
) -> list[dict[str, Any]]:
    """Basic Pitch (its interpreter ``basic_pitch``; None: skipped), the fold model and
    each ``fixed`` model over the fold's test pieces: :func:`versus.score_run` each, with
    ``piano`` (the fold's)."""
    pieces = versus.load_pieces(fold.dataset, "test", 0)
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        warmup = versus.write_silence(Path(tmp) / "silence.wav")
        if basic_pitch is not None:
            runs.append(versus.run_basic_pitch(basic_pitch, pieces, warmup))
        runs.append(dataclasses.replace(versus.run_pianotx(str(model), pieces, warmup), name=system))
        for uri in fixed:
            runs.append(dataclasses.replace(versus.run_pianotx(uri, pieces, warmup), name=fixed_system(uri)))
    return [{"piano": fold.piano} | versus.score_run(run, pieces) for run in runs]


def score_row(piano: str, system: str, mean: dict[str, float], pieces: int) -> dict[str, Any]:
    return {"piano": piano, "system": system, **{key: float(mean[key]) for key in SCORES}, "pieces": pieces}


def summary_rows(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each :func:`score_fold` result as a row, then per system (in order of appearance)
    its worst fold by note F1 (``worst: PIANO``) and the mean of each score over its folds
    (``mean of N folds``; pieces: their sum)."""
    rows = [score_row(r["piano"], r["system"], r["mean"], r["pieces"]) for r in results]
    systems = list(dict.fromkeys(r["system"] for r in rows))
    worst = [min((r for r in rows if r["system"] == s), key=lambda r: r["note_f1"]) for s in systems]
    rows += [r | {"piano": f"worst: {r['piano']}"} for r in worst]
    for system in systems:
        mine = [r for r in rows[: len(results)] if r["system"] == system]
        mean = {key: sum(r[key] for r in mine) / len(mine) for key in SCORES}
        rows.append(score_row(f"mean of {len(mine)} folds", system, mean, sum(r["pieces"] for r in mine)))
    return rows


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The rows of :func:`summary_rows` as a Markdown table, scores in percent."""
    lines = [
        "| held-out piano | system | note F1 | note+offset F1 | frame F1 | note+velocity F1 "
        "| note P | note R | pieces |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        scores = " | ".join(f"{100.0 * r[key]:.1f}" for key in SCORES)
        lines.append(f"| {r['piano']} | {r['system']} | {scores} | {r['pieces']} |")
    return "\n".join(lines)


def pooled_contexts(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per system, ``found_by_context`` summed over its folds (for :func:`versus.context_table`)."""
    pooled: dict[str, dict[str, list[int]]] = {}
    for r in results:
        mine = pooled.setdefault(r["system"], {})
        for label, (found, total) in r["found_by_context"].items():
            before = mine.get(label, [0, 0])
            mine[label] = [before[0] + found, before[1] + total]
    return [{"system": system, "found_by_context": counts} for system, counts in pooled.items()]


def fold_line(scored: dict[str, Any]) -> str:
    """One line of progress: a fold's system and its mean scores (percent)."""
    mean = scored["mean"]
    return (
        f"{scored['piano']}: {scored['system']}: note F1 {100 * mean['note_f1']:.1f}, note+offset "
        f"{100 * mean['note_with_offset_f1']:.1f}, frame {100 * mean['frame_f1']:.1f} ({scored['pieces']} pieces)"
    )


# --- Command line ------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--render", type=Path, default=Path("data/render"), help="from `pianotx data render`")
    parser.add_argument("--work", type=Path, default=Path("data/lopo"), help="fold datasets, store and models")
    parser.add_argument("--pianos", nargs="+", default=None, help="hold out only these (default: every piano)")
    parser.add_argument("--space", type=Path, default=BUNDLED_SPACE, help="fixed settings to train each fold with")
    parser.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS, help="training epochs per fold")
    parser.add_argument(
        "--steps-per-epoch", type=int, default=DEFAULT_STEPS, help="training batches per epoch (0: the whole split)"
    )
    parser.add_argument(
        "--model", action="append", default=None, help="also score this fixed model (URI or .keras; repeatable)"
    )
    parser.add_argument("--skip-basic-pitch", action="store_true")
    parser.add_argument("--basic-pitch-venv", type=Path, default=versus.default_venv())
    parser.add_argument("--basic-pitch-python", default=versus.default_python(), help="interpreter for a new venv")
    parser.add_argument("--workers", type=int, default=None, help="dataset build processes (default: every core)")
    parser.add_argument("--verbose", type=int, default=2, choices=(0, 1, 2), help="Keras' training output")
    parser.add_argument("--json", type=Path, default=None, help="write the folds and every score here")
    args = parser.parse_args(argv)
    if args.epochs < 1 or args.steps_per_epoch < 0:
        parser.error("--epochs must be 1 or more and --steps-per-epoch 0 or more")
    return args


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Every fold: build, train, score; the whole record (``--json``'s), written after
    each fold."""
    from pianotx.config import to_dict
    from pianotx.files import write_json_atomic

    pianos = fold_pianos(args.render, args.pianos)
    read_space(args.space)  # refused now, not after the first build
    python = None
    if not args.skip_basic_pitch:
        python = versus.ensure_basic_pitch(args.basic_pitch_venv, args.basic_pitch_python)
    record: dict[str, Any] = {
        "render": str(args.render.resolve()),
        "work": str(args.work.resolve()),
        "space": str(args.space.resolve()),
        "epochs": args.epochs,
        "steps_per_epoch": args.steps_per_epoch,
        "features": to_dict(FEATURES),
        "pianos": pianos,
        "folds": [],
    }
    results: list[dict[str, Any]] = []
    for i, piano in enumerate(pianos, 1):
        print(f"fold {i}/{len(pianos)}: {piano} held out", file=sys.stderr)
        fold = build_fold(args.render, args.work, piano, args.workers, progress=args.verbose > 0)
        space = fold_space(args.space, piano, args.epochs, args.steps_per_epoch, fold.fingerprint, args.work / "spaces")
        start = time.perf_counter()
        model, reused = train_fold(space, fold, args.work, args.verbose)
        train_seconds = time.perf_counter() - start
        start = time.perf_counter()
        scored = score_fold(fold, model, fold_system(args.space), args.model or [], python)
        score_seconds = time.perf_counter() - start
        for s in scored:
            print(fold_line(s), file=sys.stderr)
        results += scored
        timing = {"build": fold.seconds, "train": train_seconds, "score": score_seconds}
        print(
            f"fold {piano}: dataset {fold.status} {timing['build']:.0f} s, model "
            f"{'reused' if reused else 'trained'} {train_seconds:.0f} s, scoring {score_seconds:.0f} s",
            file=sys.stderr,
        )
        record["folds"].append(
            {
                "piano": piano,
                "dataset": str(fold.dataset.resolve()),
                "dataset_status": fold.status,
                "dataset_fingerprint": fold.fingerprint,
                "heard": fold.heard,
                "test_pieces": fold.test_pieces,
                "space": str(space.resolve()),
                "model": str(model.resolve()),
                "model_reused": reused,
                "seconds": timing,
                "systems": scored,
            }
        )
        record["summary"] = summary_rows(results)
        if args.json is not None:
            write_json_atomic(args.json, record)
    return record


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.json is not None and not args.json.parent.is_dir():
        sys.exit(f"error: {args.json}: its folder does not exist")
    if not args.space.is_file():
        sys.exit(f"error: {args.space}: no such space file")
    from pianotx.errors import PianotxError

    try:
        record = run(args)
    except (versus.BenchmarkError, PianotxError, ValueError, FileNotFoundError) as exc:
        sys.exit(f"error: {exc}")
    results = [s for fold in record["folds"] for s in fold["systems"]]
    print(versus.context_table(pooled_contexts(results)) + "\n")
    print(markdown_table(record["summary"]))


if __name__ == "__main__":
    main()
