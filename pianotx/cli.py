"""The one command-line app. Each command parses its options and calls one function.

Heavy modules (TensorFlow, librosa, mlflow) are imported inside the commands, so
``pianotx --help`` answers at once.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

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


@data_app.command("build")
def data_build(
    input_dir: Annotated[Path, typer.Argument(help="Folder of audio+MIDI pairs, or a MAESTRO v3 root.")],
    out_dir: Annotated[Path, typer.Argument(help="Where the dataset is written.")],
    hop_length: Annotated[int, typer.Option(help="CQT hop in samples at 16 kHz (512 = 31.25 frames/s).")] = 512,
    n_bins: Annotated[int, typer.Option(help="CQT bins, 12 per octave from A0 (27.5 Hz).")] = 84,
    chunk_frames: Annotated[int, typer.Option(help="Frames per training chunk.")] = 512,
    sustain: Annotated[bool, typer.Option(help="Extend notes while the sustain pedal (CC64) is down.")] = True,
    min_confidence: Annotated[float, typer.Option(help="Exclude pieces aligned with less confidence.")] = 0.3,
    max_lag: Annotated[float, typer.Option(help="Largest audio-vs-MIDI offset searched, seconds.")] = 2.0,
    holdout_piano: Annotated[str, typer.Option(help="Piano kept for the test split: auto, none, or a name.")] = "auto",
    seed: Annotated[int, typer.Option(help="Seed of the split by piece.")] = 0,
    workers: Annotated[int, typer.Option(help="Parallel processes (0: one per CPU).")] = 0,
    strict: Annotated[bool, typer.Option(help="Any bad input file is fatal.")] = False,
) -> None:
    """Align, label and chunk (audio, MIDI) pairs into a streamable dataset."""
    from pianotx.build import BuildError, build_dataset
    from pianotx.config import AlignConfig, BuildConfig, ChunkConfig, FeatureConfig, LabelConfig, SplitConfig

    try:
        config = BuildConfig(
            features=FeatureConfig(hop_length=hop_length, n_bins=n_bins),
            labels=LabelConfig(sustain_pedal=sustain),
            align=AlignConfig(max_lag_seconds=max_lag, min_confidence=min_confidence),
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


def main() -> None:  # pragma: no cover - console entry for `python -m pianotx.cli`
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
