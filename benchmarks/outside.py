"""pianotx and Basic Pitch on music and a piano that no training or tuning ever used.

The music: works by the composers pianotx reserves for outside evaluation
(:data:`pianotx.render.scores.RESERVED_COMPOSERS`) in music21's corpus, the first
``--per-composer`` scores of each composer's folder (MusicXML where a work also has a
Humdrum file): piano music, lieder and chamber music, all parts played on the piano.
Each is played as the corpus plays scores (:func:`pianotx.render.scores.score_notes`:
seeded tempo and velocities, seed 0), untransposed, its first ``--seconds``.

The piano: MuseScore General (Debian's ``musescore-general-soundfont``), a soundfont
pianotx refuses for training; its output lag is measured as for every piano and cut, so
the notes played are the reference. Each system then transcribes every rendering and is
scored as in ``versus_basic_pitch.py`` (mir_eval through :mod:`pianotx.evaluate`).

    python benchmarks/outside.py [--soundfont SF] [--per-composer 3] [--seconds 60]
        [--model URI-or-.keras ...] [--skip-basic-pitch] [--json OUT]

Renders into a temporary folder; prints note recall by register and velocity, note
recall by context (chord size, velocity band, register), then a Markdown table last, one
row per system.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pianotx.midi import Notes

sys.path.insert(0, str(Path(__file__).resolve().parent))  # when loaded by a test, not run
import versus_basic_pitch as versus  # noqa: E402 - the side-by-side benchmark beside this one

SOUNDFONTS = (
    Path("/usr/share/sounds/sf3/MuseScore_General_Full.sf3"),
    Path("/usr/share/sounds/sf3/MuseScore_General.sf3"),
    Path("/usr/share/sounds/sf2/MuseScore_General.sf2"),
)
SOUNDFONT_HINT = "install it: apt-get install musescore-general-soundfont, or pass --soundfont"


def choose_scores(paths: list[str], per_composer: int) -> list[str]:
    """The first ``per_composer`` works of each reserved composer's folder.

    Args:
        paths: corpus-relative paths (``composer/work.ext``), any order.
        per_composer: works per folder.

    Returns:
        Sorted paths; a work with several files (``x.krn`` and ``x.mxl``) counts once,
        by its first file in :data:`pianotx.render.scores.SCORE_SUFFIXES` order.
    """
    from pianotx.render.scores import SCORE_SUFFIXES, reserved_composer

    rank = {suffix: i for i, suffix in enumerate(SCORE_SUFFIXES)}
    works: dict[str, str] = {}
    for path in sorted(paths):
        stem, _, suffix = path.rpartition(".")
        if reserved_composer(path) is None or f".{suffix.lower()}" not in rank:
            continue
        if stem not in works or rank[f".{suffix.lower()}"] < rank["." + works[stem].rpartition(".")[2].lower()]:
            works[stem] = path
    chosen: dict[str, list[str]] = {}
    for stem in sorted(works):
        folder = chosen.setdefault(stem.split("/", 1)[0], [])
        if len(folder) < per_composer:
            folder.append(works[stem])
    return sorted(path for folder in chosen.values() for path in folder)


def corpus_scores(per_composer: int) -> list[tuple[str, Path]]:
    """(corpus-relative path, file) of :func:`choose_scores` in music21's corpus."""
    from music21 import corpus
    from music21.common.pathTools import getCorpusFilePath

    root = Path(getCorpusFilePath())
    files = {path.relative_to(root).as_posix(): path for path in corpus.getCorePaths()}
    return [(rel, files[rel]) for rel in choose_scores(list(files), per_composer)]


def played(path: Path, source: str, seconds: float) -> Notes:
    """The score as the corpus plays it (seed 0, untransposed), its first ``seconds``."""
    from pianotx.render.common import finish, piece_rng
    from pianotx.render.scores import excerpt, score_events, score_notes, transpose_into_range

    notes = score_notes(score_events(path, refuse_reserved=False), piece_rng(0, source))
    pitches, _ = transpose_into_range(notes.pitches, 0)  # parts beyond the keyboard folded in
    return finish(excerpt(Notes.from_lists(notes.intervals, pitches, notes.velocities), seconds))


def render_pieces(soundfont: Path, per_composer: int, seconds: float, work: Path) -> Iterator[versus.Piece]:
    """Each chosen score played on ``soundfont`` and rendered as the corpus renders
    (lag cut, no augmentation): a benchmark piece in ``work``. A score music21 cannot
    read is skipped with a line on stderr."""
    from pianotx.render.common import Piece, safe_name
    from pianotx.render.corpus import RenderOptions, render_piece
    from pianotx.render.fluidsynth import SoundfontPiano, check_fluidsynth
    from pianotx.render.piano import measure_lag

    check_fluidsynth()
    options = RenderOptions(augment="off")  # the default corpus's sample rate and gain
    # Not check_soundfont: that refuses this piano, which is the point here.
    piano = measure_lag(SoundfontPiano("musescore-general", soundfont), work, options.sample_rate, options.gain)
    print(f"{soundfont.name}: lag {1000 * piano.lag_seconds:.1f} ms", file=sys.stderr)
    for rel, path in corpus_scores(per_composer):
        name = safe_name(rel.rsplit(".", 1)[0])
        try:
            notes = played(path, name, seconds)
        except Exception as exc:  # noqa: BLE001 - music21's errors are many; one line, go on
            print(f"{rel}: skipped ({type(exc).__name__}: {exc})", file=sys.stderr)
            continue
        [entry] = render_piece(Piece(name, "score", 0, notes), piano, options, work, work)
        yield versus.Piece(entry["name"], work / f"{entry['name']}.wav", entry["seconds"], notes)


def default_soundfont() -> Path | None:
    return next((path for path in SOUNDFONTS if path.is_file()), None)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--soundfont", type=Path, default=default_soundfont(), help="the unseen piano")
    parser.add_argument("--per-composer", type=int, default=3, help="works per reserved composer's folder")
    parser.add_argument("--seconds", type=float, default=60.0, help="each work's first seconds (0: whole)")
    parser.add_argument("--model", action="append", default=None, help="as in versus_basic_pitch.py")
    parser.add_argument("--skip-basic-pitch", action="store_true")
    parser.add_argument("--basic-pitch-venv", type=Path, default=versus.default_venv())
    parser.add_argument("--basic-pitch-python", default=versus.default_python(), help="interpreter for a new venv")
    parser.add_argument("--json", type=Path, default=None, help="write per-piece scores and timings here")
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Render the pieces, then every system over them, scored; Basic Pitch first."""
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        pieces = list(render_pieces(args.soundfont, args.per_composer, args.seconds, work))
        if not pieces:
            raise versus.BenchmarkError("no score could be rendered")
        minutes = sum(p.audio_seconds for p in pieces) / 60
        notes = sum(len(p.reference) for p in pieces)
        print(f"{len(pieces)} pieces, {minutes:.1f} min, {notes} notes", file=sys.stderr)
        warmup = versus.write_silence(work / "silence.wav")
        if not args.skip_basic_pitch:
            python = versus.ensure_basic_pitch(args.basic_pitch_venv, args.basic_pitch_python)
            results.append(versus.score_run(versus.run_basic_pitch(python, pieces, warmup), pieces))
        for model in args.model or versus.default_models():
            results.append(versus.score_run(versus.run_pianotx(model, pieces, warmup), pieces))
    return results


def check_inputs(args: argparse.Namespace) -> None:
    """Exit with one line when the soundfont is missing or ``--json``'s folder is."""
    if args.soundfont is None or not args.soundfont.is_file():
        sys.exit(f"error: {args.soundfont or 'MuseScore General'}: no such soundfont; {SOUNDFONT_HINT}")
    if args.json is not None and not args.json.parent.is_dir():
        sys.exit(f"error: {args.json}: its folder does not exist")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    check_inputs(args)
    from pianotx.errors import PianotxError
    from pianotx.files import write_json_atomic

    try:
        results = run(args)
    except (versus.BenchmarkError, PianotxError, ValueError, FileNotFoundError) as exc:
        sys.exit(f"error: {exc}")
    if args.json is not None:
        write_json_atomic(args.json, {"soundfont": str(args.soundfont), "seconds": args.seconds, "systems": results})
    print(versus.recall_table(results) + "\n")
    print(versus.context_table(results) + "\n")
    print(versus.markdown_table([versus.table_row(r) for r in results]))


if __name__ == "__main__":
    main()
