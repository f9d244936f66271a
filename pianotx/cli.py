"""The one command-line app. Each command parses its options and calls one function.

Heavy modules (TensorFlow, librosa, mlflow) are imported inside the commands, so
``pianotx --help`` answers at once.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from pianotx.config import (
    AlignConfig,
    BuildConfig,
    ChunkConfig,
    DecodingConfig,
    DistributedConfig,
    FeatureConfig,
    LabelConfig,
    SplitConfig,
    default_of,
    with_values,
)
from pianotx.errors import PianotxError
from pianotx.locations import MODEL_NAME, UI_PORT
from pianotx.render.corpus import RenderOptions
from pianotx.store import HELD_OUT_SPLIT
from pianotx.tuning.command import TRIALS_PER_PROCESS

app = typer.Typer(
    name="pianotx",
    help="Piano transcription research: build datasets, search models, transcribe audio to MIDI.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        from pianotx import __version__

        typer.echo(f"pianotx {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print pianotx's version and exit.")
    ] = False,
) -> None:
    """Piano transcription research: build datasets, search models, transcribe audio to MIDI."""


def _keras() -> None:
    """Import Keras now, its native start-up notices kept off the terminal."""
    from pianotx.quiet import import_keras_quietly

    import_keras_quietly()


data_app = typer.Typer(
    help="Render the default corpus and build datasets.",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(data_app, name="data")


def fail(message: str) -> NoReturn:
    """One clear error line on stderr, then exit 1."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(1)


@contextmanager
def user_errors(path: Path | None = None) -> Iterator[None]:
    """Turn pianotx's own errors and file-system errors into one line and exit 1.

    Args:
        path: named in an OSError's message when the error names no file itself.
    """
    try:
        yield
    except PianotxError as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"{exc.filename or path}: {exc.strerror or exc}")


def _default(cls: type, name: str) -> str:
    """``(default X)`` for a help text, X read from the config dataclass."""
    return f"(default {default_of(cls, name)})"


@data_app.command("render")
def data_render(
    out_dir: Annotated[Path, typer.Argument(help="Where NAME.wav + NAME.mid pairs and render.json go.")],
    pieces: Annotated[
        int | None, typer.Option(help=f"Scores taken from the corpus, 0: all {_default(RenderOptions, 'pieces')}.")
    ] = None,
    seconds: Annotated[
        float | None,
        typer.Option(
            help=f"Excerpt length per score and generated piece length, 0: whole {_default(RenderOptions, 'seconds')}."
        ),
    ] = None,
    corpus: Annotated[
        list[str] | None,
        typer.Option(
            help="music21 corpus prefix or MIDI folder (repeatable; default "
            f"{' and '.join(default_of(RenderOptions, 'corpus'))})."
        ),
    ] = None,
    piano: Annotated[
        list[str] | None,
        typer.Option(help="Piano name or .sf2 file (repeatable; default: every piano that can be had)."),
    ] = None,
    generated: Annotated[
        float | None, typer.Option(help=f"Generated pieces per score {_default(RenderOptions, 'generated')}.")
    ] = None,
    seed: Annotated[
        int | None,
        typer.Option(
            help=f"Seed of score choice, transposition, velocities, generated material {_default(RenderOptions, 'seed')}."
        ),
    ] = None,
    augment: Annotated[
        str | None,
        typer.Option(
            help="Room-and-sound augmentation preset: off, light, default, strong; each rendering is also written "
            f"augmented, for the training split {_default(RenderOptions, 'augment')}."
        ),
    ] = None,
    augment_variants: Annotated[
        int | None,
        typer.Option(help=f"Augmented copies per rendering {_default(RenderOptions, 'augment_variants')}."),
    ] = None,
) -> None:
    """Render the default corpus: music21 scores and generated material on sampled pianos."""
    from pianotx.render.corpus import render_corpus

    with user_errors(out_dir):
        options = with_values(
            RenderOptions,
            "render options",
            pieces=pieces,
            seconds=seconds,
            generated=generated,
            seed=seed,
            augment=augment,
            augment_variants=augment_variants,
            corpus=tuple(corpus) if corpus else None,
            pianos=tuple(piano) if piano else None,
        )
        report = _render_with_progress(render_corpus, out_dir, options)
    typer.echo(report.summary())


def _render_with_progress(render_corpus: Any, out_dir: Path, options: Any) -> Any:
    """``render_corpus`` with a bar over the renderings on a terminal; elsewhere (a log,
    CI) a ``rendered i/N`` line at every tenth of them, not one per file."""
    from rich.progress import Progress

    def say(line: str) -> None:
        print(line, file=sys.stderr, flush=True)  # above the bar while it is shown

    if sys.stderr.isatty():
        with Progress(transient=True) as bar:
            task = bar.add_task("rendering", total=None)

            def tick(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)

            return render_corpus(out_dir, options, progress=say, on_render=tick)

    def every_tenth(done: int, total: int) -> None:
        if done == total or done * 10 // total != (done - 1) * 10 // total:
            say(f"rendered {done}/{total}")

    return render_corpus(out_dir, options, progress=say, on_render=every_tenth)


@data_app.command("build")
def data_build(
    input_dir: Annotated[Path, typer.Argument(help="Folder of audio+MIDI pairs, or a MAESTRO v3 root.")],
    out_dir: Annotated[Path, typer.Argument(help="Where the dataset is written (new, empty, or an earlier dataset).")],
    hop_length: Annotated[
        int | None, typer.Option(help=f"CQT hop in samples {_default(FeatureConfig, 'hop_length')}.")
    ] = None,
    n_bins: Annotated[int | None, typer.Option(help=f"CQT bins from A0 {_default(FeatureConfig, 'n_bins')}.")] = None,
    bins_per_octave: Annotated[
        int | None, typer.Option(help=f"CQT bins per octave {_default(FeatureConfig, 'bins_per_octave')}.")
    ] = None,
    chunk_frames: Annotated[
        int | None, typer.Option(help=f"Frames per training chunk {_default(ChunkConfig, 'chunk_frames')}.")
    ] = None,
    sustain: Annotated[
        bool | None,
        typer.Option(
            "--sustain/--no-sustain",
            help="Extend notes while the sustain pedal (CC64) is down "
            f"(default {'on' if default_of(LabelConfig, 'sustain_pedal') else 'off'}).",
        ),
    ] = None,
    align_method: Annotated[
        str | None,
        typer.Option(
            help=f"Alignment signal: onsets (pitch-wise) or energy (the seed's) {_default(AlignConfig, 'method')}."
        ),
    ] = None,
    min_confidence: Annotated[
        float | None,
        typer.Option(
            help=f"Exclude pieces whose alignment peak strength is lower {_default(AlignConfig, 'min_confidence')}."
        ),
    ] = None,
    max_lag: Annotated[
        float | None,
        typer.Option(
            help=f"Largest audio-vs-MIDI offset searched, seconds {_default(AlignConfig, 'max_lag_seconds')}."
        ),
    ] = None,
    holdout_piano: Annotated[
        str | None,
        typer.Option(
            help=f"Piano kept for the test split: auto, none, or a name {_default(SplitConfig, 'holdout_piano')}."
        ),
    ] = None,
    validation_piano: Annotated[
        str | None,
        typer.Option(
            help="A second piano kept for the validation split, so that model selection hears unseen sound: "
            f"none or a name {_default(SplitConfig, 'validation_piano')}."
        ),
    ] = None,
    seed: Annotated[
        int | None, typer.Option(help=f"Seed of the split by piece {_default(SplitConfig, 'seed')}.")
    ] = None,
    workers: Annotated[int, typer.Option(help="Parallel processes (0: one per CPU).")] = 0,
    strict: Annotated[bool, typer.Option(help="Any bad input file is fatal.")] = False,
) -> None:
    """Align, label and chunk (audio, MIDI) pairs into a streamable dataset."""
    from pianotx.build import build_dataset

    with user_errors(out_dir):
        config = BuildConfig(
            features=with_values(FeatureConfig, hop_length=hop_length, n_bins=n_bins, bins_per_octave=bins_per_octave),
            labels=with_values(LabelConfig, sustain_pedal=sustain),
            align=with_values(AlignConfig, method=align_method, max_lag_seconds=max_lag, min_confidence=min_confidence),
            chunks=with_values(ChunkConfig, chunk_frames=chunk_frames),
            splits=with_values(SplitConfig, seed=seed, holdout_piano=holdout_piano, validation_piano=validation_piano),
        )
        result = build_dataset(
            input_dir, out_dir, config, strict=strict, workers=workers or None, progress=sys.stderr.isatty()
        )
    splits = result.manifest["splits"]
    summary = ", ".join(f"{k} {v['pieces']} pieces/{v['chunks']} chunks" for k, v in splits.items())
    excluded = sum(p["excluded"] for p in result.manifest["pieces"])
    typer.echo(f"{out_dir}: {result.status} ({summary}; {excluded} excluded)")


@app.command()
def search(
    space: Annotated[Path, typer.Argument(help="Search-space YAML file (see search_spaces/).")],
    data: Annotated[Path, typer.Option(help="Dataset folder built by `pianotx data build`.")] = Path("data/default"),
    tracking_uri: Annotated[
        str | None, typer.Option(help="MLflow store (default: MLFLOW_TRACKING_URI, else mlruns/).")
    ] = None,
    register_as: Annotated[str, typer.Option(help="Registered model name for the best trial.")] = MODEL_NAME,
    register: Annotated[
        bool, typer.Option(help="Register the best model (alias challenger; champion if --promote says so).")
    ] = True,
    promote: Annotated[
        str,
        typer.Option(
            help="When the best model becomes champion (stage Production, the model transcribe uses): "
            "if-better (it beats the champion on the dataset's validation split), always, never."
        ),
    ] = "if-better",
    init_from: Annotated[
        str | None,
        typer.Option(
            help="Fine-tune: every trial starts from this model (bundled, champion, models:/..., runs:/..., "
            "a .keras export) instead of from nothing; replaces the space file's init_from."
        ),
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Start the search afresh instead of resuming it.")] = False,
    note_eval_pieces: Annotated[
        int | None,
        typer.Option(
            help="Validation pieces scored with mir_eval per trial, 0: all (default: the space file's, else all)."
        ),
    ] = None,
    state_dir: Annotated[
        Path | None,
        typer.Option(help="Folder for Keras Tuner's state (default: beside a local store, else in the cache)."),
    ] = None,
    chief: Annotated[
        bool, typer.Option(help="Be the chief of a distributed search: serve the oracle, train nothing.")
    ] = False,
    worker: Annotated[
        str | None, typer.Option(help="Be worker ID (a number, or a name) of a distributed search.")
    ] = None,
    oracle: Annotated[str | None, typer.Option(help="A worker: the chief's HOST:PORT.")] = None,
    port: Annotated[
        int | None, typer.Option(help=f"The chief: its oracle's port {_default(DistributedConfig, 'port')}.")
    ] = None,
    bind: Annotated[
        str | None,
        typer.Option(
            help=f"The chief: the address it listens on (0.0.0.0: every network) {_default(DistributedConfig, 'bind')}."
        ),
    ] = None,
    worker_timeout: Annotated[
        float | None,
        typer.Option(
            help="The chief: seconds without a worker's heartbeat before its trial is retried "
            f"{_default(DistributedConfig, 'worker_timeout')}."
        ),
    ] = None,
    chief_poll: Annotated[
        float | None, typer.Option(hidden=True, help="The chief: seconds between its checks.")
    ] = None,
    trials_per_process: Annotated[
        int | None,
        typer.Option(
            min=0,
            help="Start a fresh process after this many trials (0: never): TensorFlow keeps 20-50 MB "
            f"of every model it trained until its process ends. One-process searches only (default "
            f"{TRIALS_PER_PROCESS}; 0 when the app is called from Python).",
        ),
    ] = None,
) -> None:
    """Run (or resume) a Keras Tuner search, every trial tracked in MLflow.

    One process by default; with --chief and --worker, one part of a distributed search.
    """
    from pianotx.tuning.command import SearchOptions, replace_this_process, search_command

    options = SearchOptions(
        space,
        data,
        tracking_uri,
        register_as if register else None,
        overwrite,
        note_eval_pieces,
        state_dir,
        chief,
        worker,
        oracle,
        with_values(DistributedConfig, port=port, bind=bind, worker_timeout=worker_timeout, chief_poll=chief_poll),
        trials_per_process,
        promote,
        init_from,
    )
    _keras()
    with user_errors():
        search_command(options, typer.echo, replace_this_process if sys.argv[1:2] == ["search"] else None)


@app.command("search-distributed")
def search_distributed(
    space: Annotated[Path, typer.Argument(help="Search-space YAML file (see search_spaces/).")],
    data: Annotated[Path, typer.Option(help="Dataset folder built by `pianotx data build`.")] = Path("data/default"),
    workers: Annotated[
        int | None,
        typer.Option(help=f"Workers to start (the chief trains nothing) {_default(DistributedConfig, 'workers')}."),
    ] = None,
    store_dir: Annotated[
        Path | None, typer.Option(help="Folder of the store the server serves (default: the project's mlruns/).")
    ] = None,
    port: Annotated[
        int | None, typer.Option(help=f"The chief's port (0: any free one) {_default(DistributedConfig, 'port')}.")
    ] = None,
    mlflow_port: Annotated[
        int | None,
        typer.Option(
            help=f"The MLflow server's (and UI's) port (0: any free one) {_default(DistributedConfig, 'mlflow_port')}."
        ),
    ] = None,
    logs: Annotated[
        Path | None, typer.Option(help="Folder for each process's log (default: STORE_DIR/logs/NAME-TIME).")
    ] = None,
    worker_timeout: Annotated[
        float | None,
        typer.Option(
            help="Seconds without a worker's heartbeat before its trial is retried "
            f"{_default(DistributedConfig, 'worker_timeout')}."
        ),
    ] = None,
    threads: Annotated[
        int | None,
        typer.Option(
            help=f"TensorFlow threads per worker (0: CPU cores / workers) {_default(DistributedConfig, 'threads')}."
        ),
    ] = None,
    gpus: Annotated[
        str | None, typer.Option(help="GPU ids, one per worker, e.g. 0,1 (CUDA_VISIBLE_DEVICES of each).")
    ] = None,
    worker_restarts: Annotated[
        int | None,
        typer.Option(
            help="Times a worker that fails is started again (it resumes its trial) "
            f"{_default(DistributedConfig, 'worker_restarts')}."
        ),
    ] = None,
    register_as: Annotated[str, typer.Option(help="Registered model name for the best trial.")] = MODEL_NAME,
    register: Annotated[bool, typer.Option(help="Register the best model.")] = True,
    promote: Annotated[
        str, typer.Option(help="When the best model becomes champion: if-better, always, never.")
    ] = "if-better",
    init_from: Annotated[
        str | None, typer.Option(help="Fine-tune: every trial starts from this model (see `pianotx search`).")
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Start the search afresh instead of resuming it.")] = False,
    note_eval_pieces: Annotated[
        int | None,
        typer.Option(
            help="Validation pieces scored with mir_eval per trial, 0: all (default: the space file's, else all)."
        ),
    ] = None,
    chief_poll: Annotated[
        float | None, typer.Option(hidden=True, help="The chief: seconds between its checks.")
    ] = None,
) -> None:
    """Run a search on this machine as a distributed one: an MLflow server, a chief and N workers."""
    from pianotx.tuning.launch import launch_cluster

    settings = with_values(
        DistributedConfig,
        port=port,
        worker_timeout=worker_timeout,
        chief_poll=chief_poll,
        workers=workers,
        mlflow_port=mlflow_port,
        threads=threads,
        worker_restarts=worker_restarts,
    )
    with user_errors():
        code = launch_cluster(
            space,
            data,
            settings,
            store_dir=store_dir,
            logs=logs,
            gpus=tuple(g.strip() for g in gpus.split(",")) if gpus else (),
            register_as=register_as if register else None,
            overwrite=overwrite,
            note_eval_pieces=note_eval_pieces,
            promote=promote,
            init_from=init_from,
            echo=lambda line: typer.echo(line, err=True),
        )
    if code:
        raise typer.Exit(code)


@app.command()
def ui(
    tracking_uri: Annotated[str | None, typer.Option(help="MLflow store (default: as for search).")] = None,
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1.")] = UI_PORT,
) -> None:
    """Open MLflow's UI over pianotx's store, on 127.0.0.1."""
    from pianotx.tracking import open_ui

    with user_errors():
        open_ui(tracking_uri, port, lambda line: typer.echo(line, err=True))


@app.command()
def transcribe(
    audio: Annotated[
        list[Path],
        typer.Argument(help="Audio files or folders (wav, flac, ogg, opus, mp3, aiff; m4a, aac, mp4 with ffmpeg)."),
    ],
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
        float | None,
        typer.Option(
            help=f"Frame probability for a key to be down (default: the model's; untuned {default_of(DecodingConfig, 'threshold')})."
        ),
    ] = None,
    onset_threshold: Annotated[
        float | None,
        typer.Option(
            help="Onset probability that starts a note, for models with an onset head "
            f"(default: the model's; untuned {default_of(DecodingConfig, 'onset_threshold')})."
        ),
    ] = None,
    min_duration: Annotated[
        float | None,
        typer.Option(
            help=f"Shortest note kept, seconds (default: the model's; untuned {default_of(DecodingConfig, 'min_duration')})."
        ),
    ] = None,
    velocity: Annotated[int | None, typer.Option(help="Fixed MIDI velocity 1..127; 0: from the activation.")] = None,
    overwrite: Annotated[
        bool, typer.Option(help="Replace MIDI files pianotx did not write (its own are always replaced).")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Say only what went wrong.")] = False,
) -> None:
    """Transcribe audio files to MIDI with one model loaded once.

    Each NAME.mid names the model in a text event. A NAME.mid that pianotx did not
    write is never replaced without --overwrite: that input is skipped, with a line.
    """
    from pianotx.transcribe import FileResult, Transcriber, transcribe_files

    # print(), not typer.echo: while the progress bars are shown, rich moves what goes
    # through sys.stdout / sys.stderr above them.
    def report(result: FileResult) -> None:
        if result.error:
            print(f"error: {result.audio}: {result.error}", file=sys.stderr, flush=True)
        elif result.skipped:
            print(f"skipped {result.audio}: {result.skipped} (--overwrite replaces it)", file=sys.stderr, flush=True)
        elif not quiet:
            line = f"{result.midi}: {result.notes} note{'s' if result.notes != 1 else ''}, {result.audio_seconds:.1f} s of audio in {result.seconds:.2f} s"
            print(line, flush=True)

    def announce(transcriber: Transcriber) -> None:
        if not quiet:
            print(f"transcribing with {transcriber.name}", file=sys.stderr, flush=True)

    decoding = {
        "threshold": threshold,
        "onset_threshold": onset_threshold,
        "min_duration": min_duration,
        "velocity": velocity,
    }
    _keras()
    with user_errors(out_dir):
        results = transcribe_files(
            audio,
            out_dir,
            model,
            tracking_uri,
            decoding,
            report=report,
            progress=sys.stderr.isatty() and not quiet,
            overwrite=overwrite,
            announce=announce,
        )
    failed, skipped = sum(bool(r.error) for r in results), sum(bool(r.skipped) for r in results)
    if (failed or skipped) and len(results) > 1:
        written = len(results) - failed - skipped
        parts = [f"{written} written"] + [f"{failed} failed"] * bool(failed) + [f"{skipped} skipped"] * bool(skipped)
        print(f"{len(results)} inputs: {', '.join(parts)}", file=sys.stderr)
    if failed or skipped:
        raise typer.Exit(1)


@app.command()
def evaluate(
    dataset: Annotated[Path, typer.Argument(help="Dataset folder built by `pianotx data build`.")],
    model: Annotated[str | None, typer.Option(help="Model URI or .keras export (default as for transcribe).")] = None,
    split: Annotated[str | None, typer.Option(help=f"train, validation or test (default {HELD_OUT_SPLIT}).")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write per-piece and mean scores here.")] = None,
    tracking_uri: Annotated[str | None, typer.Option(help="MLflow store for the evaluation run.")] = None,
    log: Annotated[bool, typer.Option(help="Log an evaluation run to MLflow.")] = True,
) -> None:
    """Frame, note, note-with-offset and note-with-velocity P/R/F1 (mir_eval) of a model on a dataset split."""
    from pianotx.evaluate import evaluate_model, format_table

    _keras()
    with user_errors(dataset):
        report, run_id = evaluate_model(dataset, model, split, json_out, tracking_uri, log)
    typer.echo(format_table(report["per_piece"], report["mean"]))
    if run_id is not None:
        typer.echo(f"logged evaluation run {run_id}", err=True)


@app.command()
def export(
    model: Annotated[str, typer.Argument(help="Model URI (models:/..., runs:/...) or .keras export.")],
    out_dir: Annotated[Path, typer.Argument(help="Folder for NAME.keras and NAME.json.")],
    name: Annotated[str, typer.Option(help="File stem.")] = MODEL_NAME,
    tracking_uri: Annotated[str | None, typer.Option(help="MLflow store.")] = None,
    tune_on: Annotated[
        Path | None,
        typer.Option(
            help="Dataset whose validation pieces the decoding is tuned on afresh first, as a "
            "search trial does (for a model trained before the decoding rules it will use)."
        ),
    ] = None,
    tune_pieces: Annotated[
        int, typer.Option(min=0, help="Validation pieces, spread over the split, for --tune-on (0: all).")
    ] = 24,
) -> None:
    """Write a model as a standalone .keras file with its feature and decoding config."""
    import json

    from pianotx.evaluate import export_model

    _keras()
    with user_errors(out_dir):
        path = export_model(model, out_dir, name, tracking_uri, tune_on, tune_pieces)
    decoding = json.loads(path.with_suffix(".json").read_text())["decoding"]
    typer.echo(f"{path}: {path.stat().st_size / 1e6:.2f} MB; decoding {decoding}")


def main() -> None:  # pragma: no cover - console entry for `python -m pianotx.cli`
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
