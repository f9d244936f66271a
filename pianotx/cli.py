"""The one command-line app. Each command parses its options and calls one function.

Heavy modules (TensorFlow, librosa, mlflow) are imported inside the commands, so
``pianotx --help`` answers at once.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    name="pianotx",
    help="Piano transcription research: build datasets, search models, transcribe audio to MIDI.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
data_app = typer.Typer(help="Render the default corpus and build datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data")


def fail(message: str) -> None:
    """One clear error line on stderr, then exit 1."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(1)


@data_app.command("render")
def data_render(
    out_dir: Annotated[Path, typer.Argument(help="Where NAME.wav + NAME.mid pairs and render.json go.")],
    pieces: Annotated[int, typer.Option(help="Scores taken from the corpus (0: all).")] = 100,
    seconds: Annotated[float, typer.Option(help="Excerpt length per score, and generated piece length (0: whole).")] = 45.0,
    corpus: Annotated[list[str] | None, typer.Option(help="music21 corpus prefix or MIDI folder (repeatable; default bach/bwv and palestrina).")] = None,
    soundfont: Annotated[list[Path] | None, typer.Option(help="Piano .sf2 (repeatable; default FluidR3_GM and TimGM6mb).")] = None,
    generated: Annotated[float, typer.Option(help="Generated pieces (notes, chords, runs, repeats) per score.")] = 0.3,
    seed: Annotated[int, typer.Option(help="Seed of score choice, transposition, velocities, generated material.")] = 0,
) -> None:
    """Render the default corpus: music21 scores and generated material on sampled pianos."""
    from pianotx.config import ConfigError
    from pianotx.datasets.synthetic import RenderError, RenderOptions, render_corpus

    values: dict = {"pieces": pieces, "seconds": seconds, "generated": generated, "seed": seed}
    if corpus:
        values["corpus"] = tuple(corpus)
    if soundfont:
        values["soundfonts"] = tuple(str(p) for p in soundfont)
    try:
        report = render_corpus(out_dir, RenderOptions(**values), progress=lambda line: typer.echo(line, err=True))
    except (RenderError, ConfigError, ValueError) as exc:
        fail(str(exc))
    typer.echo(f"{out_dir}: {report.pieces} pieces, {report.seconds / 60:.1f} min of audio, "
               f"{report.keys_covered} keys covered, {len(report.skipped)} scores skipped")


@data_app.command("build")
def data_build(
    input_dir: Annotated[Path, typer.Argument(help="Folder of audio+MIDI pairs, or a MAESTRO v3 root.")],
    out_dir: Annotated[Path, typer.Argument(help="Where the dataset is written.")],
    hop_length: Annotated[int, typer.Option(help="CQT hop in samples at 16 kHz (512 = 31.25 frames/s).")] = 512,
    n_bins: Annotated[int, typer.Option(help="CQT bins, 12 per octave from A0 (27.5 Hz).")] = 84,
    chunk_frames: Annotated[int, typer.Option(help="Frames per training chunk.")] = 512,
    sustain: Annotated[bool, typer.Option(help="Extend notes while the sustain pedal (CC64) is down.")] = True,
    align_method: Annotated[str, typer.Option(help="Alignment signal: onsets (pitch-wise) or energy (the seed's).")] = "onsets",
    min_confidence: Annotated[float, typer.Option(help="Exclude pieces whose alignment peak strength is lower.")] = 4.0,
    max_lag: Annotated[float, typer.Option(help="Largest audio-vs-MIDI offset searched, seconds.")] = 2.0,
    holdout_piano: Annotated[str, typer.Option(help="Piano kept for the test split: auto, none, or a name.")] = "auto",
    seed: Annotated[int, typer.Option(help="Seed of the split by piece.")] = 0,
    workers: Annotated[int, typer.Option(help="Parallel processes (0: one per CPU).")] = 0,
    strict: Annotated[bool, typer.Option(help="Any bad input file is fatal.")] = False,
) -> None:
    """Align, label and chunk (audio, MIDI) pairs into a streamable dataset."""
    from pianotx.build import BuildError, build_dataset
    from pianotx.config import (
        AlignConfig,
        BuildConfig,
        ChunkConfig,
        FeatureConfig,
        LabelConfig,
        SplitConfig,
    )

    try:
        config = BuildConfig(
            features=FeatureConfig(hop_length=hop_length, n_bins=n_bins),
            labels=LabelConfig(sustain_pedal=sustain),
            align=AlignConfig(method=align_method, max_lag_seconds=max_lag, min_confidence=min_confidence),
            chunks=ChunkConfig(chunk_frames=chunk_frames),
            splits=SplitConfig(seed=seed, holdout_piano=holdout_piano),
        )
        result = build_dataset(input_dir, out_dir, config, strict=strict, workers=workers or None,
                               progress=sys.stderr.isatty())
    except (BuildError, ValueError) as exc:
        fail(str(exc))
    splits = result.manifest["splits"]
    summary = ", ".join(f"{k} {v['pieces']} pieces/{v['chunks']} chunks" for k, v in splits.items())
    excluded = sum(p["excluded"] for p in result.manifest["pieces"])
    typer.echo(f"{out_dir}: {result.status} ({summary}; {excluded} excluded)")


@app.command()
def search(
    space: Annotated[Path, typer.Argument(help="Search-space YAML file (see search_spaces/).")],
    data: Annotated[Path, typer.Option(help="Dataset folder built by `pianotx data build`.")] = Path("data/default"),
    tracking_uri: Annotated[str | None, typer.Option(help="MLflow store (default: MLFLOW_TRACKING_URI, else mlruns/).")] = None,
    register_as: Annotated[str, typer.Option(help="Registered model name for the best trial.")] = "piano",
    register: Annotated[bool, typer.Option(help="Register the best model (stage Production, alias production).")] = True,
    overwrite: Annotated[bool, typer.Option(help="Start the search afresh instead of resuming it.")] = False,
    note_eval_pieces: Annotated[int, typer.Option(help="Validation pieces scored with mir_eval per trial (0: all).")] = 0,
) -> None:
    """Run (or resume) a Keras Tuner search, every trial tracked in MLflow."""
    from pianotx.config import ConfigError
    from pianotx.store import DatasetError
    from pianotx.tracking import resolve_store

    if not space.is_file():
        fail(f"{space}: no such search-space file")
    store = resolve_store(tracking_uri)
    try:
        from pianotx.tuning.search import run_search

        result = run_search(space, data, store, register_as if register else None, overwrite,
                            note_eval_pieces=note_eval_pieces)
    except (ConfigError, DatasetError) as exc:
        fail(str(exc))
    if result.best_trial_id is None:
        fail(f"no trial of {space} completed ({result.failed} failed); see the runs in {store.tracking_uri}")
    typer.echo(
        f"{result.trials} trials done, {result.failed} failed; best trial {result.best_trial_id} "
        f"({result.best_value:.4f}), run {result.best_run_id}"
    )
    if result.registered_version is not None:
        typer.echo(f"registered {register_as} version {result.registered_version}: "
                   f"models:/{register_as}/Production and models:/{register_as}@production")


@app.command()
def ui(
    tracking_uri: Annotated[str | None, typer.Option(help="MLflow store (default: as for search).")] = None,
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1.")] = 5000,
) -> None:
    """Open MLflow's UI over pianotx's store, on 127.0.0.1."""
    import os

    from pianotx.tracking import resolve_store, ui_command

    cmd = ui_command(resolve_store(tracking_uri), port)
    typer.echo(" ".join(cmd), err=True)
    mlflow_bin = Path(sys.executable).with_name("mlflow")
    os.execv(str(mlflow_bin), [str(mlflow_bin), *cmd[1:]])


def main() -> None:  # pragma: no cover - console entry for `python -m pianotx.cli`
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
