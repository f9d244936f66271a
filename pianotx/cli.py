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


@app.callback()
def _quiet_tensorflow() -> None:
    """Keep TensorFlow's C++ start-up chatter off the terminal (set before it is imported)."""
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


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
    seconds: Annotated[
        float, typer.Option(help="Excerpt length per score, and generated piece length (0: whole).")
    ] = 45.0,
    corpus: Annotated[
        list[str] | None,
        typer.Option(help="music21 corpus prefix or MIDI folder (repeatable; default bach/bwv and palestrina)."),
    ] = None,
    piano: Annotated[
        list[str] | None,
        typer.Option(help="Piano name or .sf2 file (repeatable; default: every piano that can be had)."),
    ] = None,
    generated: Annotated[float, typer.Option(help="Generated pieces (notes, chords, runs, repeats) per score.")] = 0.3,
    seed: Annotated[int, typer.Option(help="Seed of score choice, transposition, velocities, generated material.")] = 0,
) -> None:
    """Render the default corpus: music21 scores and generated material on sampled pianos."""
    from pianotx.config import ConfigError
    from pianotx.render.corpus import RenderError, RenderOptions, render_corpus

    values: dict = {"pieces": pieces, "seconds": seconds, "generated": generated, "seed": seed}
    if corpus:
        values["corpus"] = tuple(corpus)
    if piano:
        values["pianos"] = tuple(piano)
    try:
        report = render_corpus(out_dir, RenderOptions(**values), progress=lambda line: typer.echo(line, err=True))
    except (RenderError, ConfigError, ValueError) as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"{exc.filename or out_dir}: {exc.strerror or exc}")
    typer.echo(
        f"{out_dir}: {report.pieces} pieces, {report.seconds / 60:.1f} min of audio, "
        f"{report.keys_covered} keys covered, {len(report.skipped)} scores skipped"
    )


@data_app.command("build")
def data_build(
    input_dir: Annotated[Path, typer.Argument(help="Folder of audio+MIDI pairs, or a MAESTRO v3 root.")],
    out_dir: Annotated[Path, typer.Argument(help="Where the dataset is written.")],
    hop_length: Annotated[int, typer.Option(help="CQT hop in samples at 16 kHz (512 = 31.25 frames/s).")] = 512,
    n_bins: Annotated[int, typer.Option(help="CQT bins, 12 per octave from A0 (27.5 Hz).")] = 84,
    chunk_frames: Annotated[int, typer.Option(help="Frames per training chunk.")] = 512,
    sustain: Annotated[bool, typer.Option(help="Extend notes while the sustain pedal (CC64) is down.")] = True,
    align_method: Annotated[
        str, typer.Option(help="Alignment signal: onsets (pitch-wise) or energy (the seed's).")
    ] = "onsets",
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
        result = build_dataset(
            input_dir, out_dir, config, strict=strict, workers=workers or None, progress=sys.stderr.isatty()
        )
    except (BuildError, ValueError) as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"{exc.filename or out_dir}: {exc.strerror or exc}")
    splits = result.manifest["splits"]
    summary = ", ".join(f"{k} {v['pieces']} pieces/{v['chunks']} chunks" for k, v in splits.items())
    excluded = sum(p["excluded"] for p in result.manifest["pieces"])
    typer.echo(f"{out_dir}: {result.status} ({summary}; {excluded} excluded)")


def _interrupt_on_sigterm() -> None:
    import signal

    def handler(signum: int, frame: object) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second signal must not cut the clean-up
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, handler)


@app.command()
def search(
    space: Annotated[Path, typer.Argument(help="Search-space YAML file (see search_spaces/).")],
    data: Annotated[Path, typer.Option(help="Dataset folder built by `pianotx data build`.")] = Path("data/default"),
    tracking_uri: Annotated[
        str | None, typer.Option(help="MLflow store (default: MLFLOW_TRACKING_URI, else mlruns/).")
    ] = None,
    register_as: Annotated[str, typer.Option(help="Registered model name for the best trial.")] = "piano",
    register: Annotated[
        bool, typer.Option(help="Register the best model (stage Production, alias production).")
    ] = True,
    overwrite: Annotated[bool, typer.Option(help="Start the search afresh instead of resuming it.")] = False,
    note_eval_pieces: Annotated[
        int, typer.Option(help="Validation pieces scored with mir_eval per trial (0: all).")
    ] = 0,
) -> None:
    """Run (or resume) a Keras Tuner search, every trial tracked in MLflow."""
    from pianotx.config import ConfigError
    from pianotx.store import DatasetError
    from pianotx.tracking import resolve_store

    if not space.is_file():
        fail(f"{space}: no such search-space file")
    store = resolve_store(tracking_uri)
    _interrupt_on_sigterm()  # a killed search still closes its MLflow runs
    try:
        from pianotx.tuning.search import run_search

        result = run_search(
            space, data, store, register_as if register else None, overwrite, note_eval_pieces=note_eval_pieces
        )
    except (ConfigError, DatasetError) as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        fail("search interrupted; run the same command again to resume it")
    except Exception as exc:  # Keras Tuner, MLflow, the store: one line, not a traceback
        fail(f"search failed: {type(exc).__name__}: {exc}")
    if result.best_trial_id is None:
        fail(f"no trial of {space} completed ({result.failed} failed); see the runs in {store.tracking_uri}")
    typer.echo(
        f"{result.trials} trials done, {result.failed} failed; best trial {result.best_trial_id} "
        f"({result.best_value:.4f}), run {result.best_run_id}"
    )
    if result.registered_version is not None:
        typer.echo(
            f"registered {register_as} version {result.registered_version}: "
            f"models:/{register_as}/Production and models:/{register_as}@production"
        )


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
    if not mlflow_bin.is_file():
        fail(f"{mlflow_bin}: MLflow's command is missing; run `make install`")
    os.execv(str(mlflow_bin), [str(mlflow_bin), *cmd[1:]])


def _decoding_overrides(threshold: float | None, min_duration: float | None, velocity: int | None) -> dict:
    values = {"threshold": threshold, "min_duration": min_duration, "velocity": velocity}
    return {k: v for k, v in values.items() if v is not None}


def _load(model: str | None, tracking_uri: str | None, overrides: dict):
    """The transcriber for ``model`` (see pianotx.transcribe.load_transcriber), with
    decoding settings overridden; one error line and exit 1 when it cannot load."""
    import dataclasses

    from pianotx.tracking import TrackingError, resolve_store
    from pianotx.transcribe import load_transcriber

    store = resolve_store(tracking_uri)
    try:
        loaded = load_transcriber(model, store)
        return dataclasses.replace(loaded, decoding=dataclasses.replace(loaded.decoding, **overrides)), store
    except (TrackingError, FileNotFoundError, ValueError) as exc:
        fail(str(exc))


@app.command()
def transcribe(
    audio: Annotated[list[Path], typer.Argument(help="Audio files or folders (wav, flac, ogg, mp3).")],
    out_dir: Annotated[
        Path | None, typer.Option("--out-dir", "-o", help="Where NAME.mid goes (default: beside each input).")
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            help="models:/NAME/STAGE, models:/NAME@ALIAS, runs:/..., or a .keras export. Default: models:/piano/Production if registered, else the bundled model."
        ),
    ] = None,
    tracking_uri: Annotated[
        str | None, typer.Option(help="MLflow store (default: MLFLOW_TRACKING_URI, else mlruns/).")
    ] = None,
    threshold: Annotated[
        float | None, typer.Option(help="Frame probability for a key to be down (default: the model's, 0.5).")
    ] = None,
    min_duration: Annotated[
        float | None, typer.Option(help="Shortest note kept, seconds (default: the model's, 0.05).")
    ] = None,
    velocity: Annotated[int | None, typer.Option(help="Fixed MIDI velocity 1..127; 0: from the activation.")] = None,
) -> None:
    """Transcribe audio files to MIDI with one model loaded once."""
    from rich.progress import Progress

    from pianotx.transcribe import expand_inputs, transcribe_file

    if out_dir is not None:
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            fail(f"{out_dir}: cannot create output folder ({exc.strerror})")
    transcriber, _ = _load(model, tracking_uri, _decoding_overrides(threshold, min_duration, velocity))
    files = expand_inputs(audio)
    if not files:
        fail("no audio files found in " + ", ".join(map(str, audio)))
    failed, targets = 0, set()
    with Progress(transient=True, disable=not sys.stderr.isatty()) as bar:
        task = bar.add_task("transcribing", total=len(files))
        for path in files:
            target = ((out_dir or path.parent) / f"{path.stem}.mid").resolve()
            if target in targets:
                failed += 1
                typer.echo(f"error: {path}: {target} is already written by another input of this batch", err=True)
                continue
            targets.add(target)
            result = transcribe_file(transcriber, path, out_dir)
            bar.advance(task)
            if result.error:
                failed += 1
                typer.echo(f"error: {path}: {result.error}", err=True)
            else:
                typer.echo(
                    f"{result.midi}: {result.notes} notes, {result.audio_seconds:.1f} s of audio "
                    f"in {result.seconds:.2f} s"
                )
    if failed:
        raise typer.Exit(1)


@app.command()
def evaluate(
    dataset: Annotated[Path, typer.Argument(help="Dataset folder built by `pianotx data build`.")],
    model: Annotated[str | None, typer.Option(help="Model URI or .keras export (default as for transcribe).")] = None,
    split: Annotated[str, typer.Option(help="train, validation or test.")] = "test",
    json_out: Annotated[Path | None, typer.Option("--json", help="Write per-piece and mean scores here.")] = None,
    tracking_uri: Annotated[str | None, typer.Option(help="MLflow store for the evaluation run.")] = None,
    log: Annotated[bool, typer.Option(help="Log an evaluation run to MLflow.")] = True,
) -> None:
    """Frame, note and note-with-offset P/R/F1 (mir_eval) of a model on a dataset split."""
    from pianotx.evaluate import evaluate_split, format_table
    from pianotx.store import DatasetError, load_manifest

    try:
        load_manifest(dataset)
    except DatasetError as exc:
        fail(str(exc))
    if json_out is not None and not json_out.parent.is_dir():
        fail(f"{json_out}: its folder does not exist")
    transcriber, store = _load(model, tracking_uri, {})
    try:
        per_piece, mean = evaluate_split(
            transcriber.probabilities, dataset, split, transcriber.decoding, features=transcriber.features
        )
    except (DatasetError, ValueError) as exc:
        fail(str(exc))
    if not per_piece:
        fail(f"{dataset}: the {split} split has no pieces")
    typer.echo(format_table(per_piece, mean))
    from pianotx.evaluate import write_report

    report = write_report(per_piece, mean, dataset, split, transcriber.source, json_out)
    if log:
        from pianotx import tracking

        run_id = tracking.log_evaluation(store, report)
        typer.echo(f"logged evaluation run {run_id} in {store.tracking_uri}", err=True)


@app.command()
def export(
    model: Annotated[str, typer.Argument(help="Model URI (models:/..., runs:/...) or .keras export.")],
    out_dir: Annotated[Path, typer.Argument(help="Folder for NAME.keras and NAME.json.")],
    name: Annotated[str, typer.Option(help="File stem.")] = "piano",
    tracking_uri: Annotated[str | None, typer.Option(help="MLflow store.")] = None,
) -> None:
    """Write a model as a standalone .keras file with its feature and decoding config."""
    from pianotx.transcribe import export as export_model

    transcriber, _ = _load(model, tracking_uri, {})
    try:
        path = export_model(transcriber, out_dir, name)
    except ValueError as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"{out_dir}: cannot write the model ({exc.strerror or exc})")
    typer.echo(f"{path}: {path.stat().st_size / 1e6:.2f} MB")


def main() -> None:  # pragma: no cover - console entry for `python -m pianotx.cli`
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
