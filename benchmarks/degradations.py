"""pianotx and Basic Pitch on degraded recordings: what lossy codecs, a distant microphone
and a quiet, noisy level cost each of them.

The material is the outside benchmark's (``outside.py``): the first ``--per-composer``
works of each composer pianotx reserves for outside evaluation, their first
``--seconds``, played on MuseScore General, a piano no pianotx training or tuning used.
They are rendered at ``--sample-rate`` (44.1 kHz by default, the rate lossy files are
made at) and every rendering is then heard under each condition:

- ``clean``: the rendering as it is;
- ``mp3-128``, ``mp3-64``: an MP3 at 128 or 64 kbit/s (mono), encoded by LAME
  (ffmpeg's ``libmp3lame``) and decoded by ffmpeg;
- ``ogg-128``, ``ogg-64``: Ogg Vorbis at 128 or 64 kbit/s (ffmpeg's ``libvorbis``);
- ``room-4m``: a room of 10 x 7 x 3.5 m (Sabine RT60 0.7 s) with the microphone 4 m
  from the piano, simulated by pyroomacoustics' image-source method
  (:func:`room_response`); the sound reaches the microphone 4 / 343 s (11.7 ms) late, as
  it does in a real room;
- ``quiet-20dB``: the level 20 dB lower;
- ``quiet-20dB-noise``: the same, over a white noise floor at -65 dBFS RMS (seeded per
  piece).

Codecs are decoded back to WAV at the rendering's rate (ffmpeg trims the encoders' delay
and padding, so the samples stay aligned with the notes), so both systems read the same
samples of every condition. Each system transcribes every file in one batch (Basic Pitch
in its own venv, as in ``versus_basic_pitch.py``) and is scored per condition by that
benchmark's scoring (mir_eval through :mod:`pianotx.evaluate`: note, note-with-offset
and frame F1 per piece, then the mean over pieces). The cost of a condition is its mean
minus the clean mean, in F1 points.

Needs ``fluidsynth``, ``ffmpeg`` (Debian: ``apt-get install fluidsynth ffmpeg
musescore-general-soundfont``) and pyroomacoustics (``pip install pyroomacoustics``;
without it the room condition is left out with a line on stderr).

    python benchmarks/degradations.py [--model URI-or-.keras] [--per-composer 1]
        [--seconds 60] [--conditions clean,mp3-64,...] [--skip-basic-pitch] [--json OUT]

Renders into a temporary folder; prints one Markdown table last: a row per condition,
each system's mean F1 with its cost against clean in brackets.
"""

from __future__ import annotations

import argparse
import math
import shutil
import subprocess
import sys
import tempfile
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # when loaded by a test, not run
import outside  # noqa: E402 - the outside benchmark beside this one: its works and piano
import versus_basic_pitch as versus  # noqa: E402 - its systems and scoring

CONDITIONS = ("clean", "mp3-128", "mp3-64", "ogg-128", "ogg-64", "room-4m", "quiet-20dB", "quiet-20dB-noise")
CODECS = {"mp3": ("libmp3lame", "mp3"), "ogg": ("libvorbis", "ogg")}  # ffmpeg encoder, file suffix
QUIET_DB = -20.0  # level change of the quiet conditions, dB
NOISE_FLOOR_DBFS = -65.0  # RMS of the noise floor, dB re full scale (1.0)
NOISE_SEED = 0
SPEED_OF_SOUND = 343.0  # m/s, pyroomacoustics' default too
ROOM = {"size": (10.0, 7.0, 3.5), "source": (2.6, 1.9, 1.1), "mic": (5.8, 4.3, 1.1), "rt60": 0.7}
"""The room of ``room-4m``: metres, the microphone 4.0 m from the piano at its height."""
PEAK = 0.99  # as the corpus writes WAV files: louder peaks are scaled down to this


# --- Degradations: numpy and scipy, except the codecs (ffmpeg) and the room's response ---


def rms_dbfs(audio: np.ndarray) -> float:
    """RMS level in dB re full scale (1.0): a full-scale square wave is 0 dBFS, a
    full-scale sine -3.0 dBFS; -inf for silence."""
    power = float(np.mean(np.square(audio, dtype=np.float64))) if audio.size else 0.0
    return 10.0 * math.log10(power) if power > 0 else -math.inf


def change_level(audio: np.ndarray, gain_db: float) -> np.ndarray:
    """``audio`` (float64) scaled by ``gain_db`` dB (amplitude ``10 ** (gain_db / 20)``)."""
    return np.asarray(audio, np.float64) * 10.0 ** (gain_db / 20.0)


def noise_floor(length: int, level_dbfs: float, seed: int | Sequence[int]) -> np.ndarray:
    """White Gaussian noise of ``length`` samples, standard deviation (the expected RMS)
    ``10 ** (level_dbfs / 20)``, drawn from ``numpy.random.default_rng(seed)``."""
    return np.random.default_rng(seed).standard_normal(length) * 10.0 ** (level_dbfs / 20.0)


def add_noise_floor(audio: np.ndarray, level_dbfs: float, seed: int | Sequence[int]) -> np.ndarray:
    """``audio`` (float64) plus :func:`noise_floor` of its length."""
    return np.asarray(audio, np.float64) + noise_floor(len(audio), level_dbfs, seed)


def codec_round_trip(audio: np.ndarray, sample_rate: int, codec: str, kbps: int) -> np.ndarray:
    """``audio`` (mono) encoded with ``codec`` (``mp3``: LAME; ``ogg``: Vorbis) at ``kbps``
    kbit/s by ffmpeg and decoded by ffmpeg at ``sample_rate``.

    Returns:
        float32 of ``audio``'s length (ffmpeg drops the encoder's delay and padding; what
        is left over is cut or padded with zeros at the end).

    Raises:
        versus.BenchmarkError: no ffmpeg, or ffmpeg fails (its last line).
    """
    import soundfile as sf

    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise versus.BenchmarkError("ffmpeg not found; install it: apt-get install ffmpeg")
    encoder, suffix = CODECS[codec]
    with tempfile.TemporaryDirectory() as tmp:
        source, encoded, decoded = Path(tmp) / "in.wav", Path(tmp) / f"coded.{suffix}", Path(tmp) / "out.wav"
        sf.write(source, np.asarray(audio, np.float32), sample_rate, subtype="FLOAT")  # nothing lost before the codec
        quiet = [ffmpeg, "-nostdin", "-y", "-loglevel", "error"]
        for command in (
            [*quiet, "-i", str(source), "-ac", "1", "-c:a", encoder, "-b:a", f"{kbps}k", str(encoded)],
            [*quiet, "-i", str(encoded), "-ac", "1", "-ar", str(sample_rate), "-c:a", "pcm_f32le", str(decoded)],
        ):
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode != 0:
                lines = done.stderr.strip().splitlines() or ["(no output)"]
                raise versus.BenchmarkError(f"ffmpeg ({codec} {kbps} kbit/s) failed: {lines[-1]}")
        out, rate = sf.read(decoded, dtype="float32", always_2d=True)
    if rate != sample_rate:
        raise versus.BenchmarkError(f"ffmpeg decoded {codec} at {rate} Hz, not {sample_rate}")
    out = out[:, 0]
    return np.pad(out, (0, max(len(audio) - len(out), 0)))[: len(audio)]


def room_response(
    sample_rate: int,
    size: Sequence[float] = ROOM["size"],
    source: Sequence[float] = ROOM["source"],
    mic: Sequence[float] = ROOM["mic"],
    rt60: float = ROOM["rt60"],
) -> np.ndarray:
    """Impulse response from ``source`` to ``mic`` in a shoebox room, by pyroomacoustics'
    image-source method: walls of one absorption and reflections up to the order that
    :func:`pyroomacoustics.inverse_sabine` gives for ``rt60`` (deterministic: no random
    parts, so no seed). Its high-pass filter is off, so the response is causal: the
    direct path peaks at sample ``round(distance / 343 * sample_rate)``, and everything
    before its fractional-delay filter (40 samples ahead of that) is exactly zero.

    Returns:
        (n,) float64, time 0 at sample 0 (pyroomacoustics' own 40-sample lead cut).
    """
    import pyroomacoustics as pra

    absorption, order = pra.inverse_sabine(rt60, list(size))
    hpf = pra.constants.get("rir_hpf_enable")
    pra.constants.set("rir_hpf_enable", False)
    try:
        room = pra.ShoeBox(list(size), fs=sample_rate, materials=pra.Material(absorption), max_order=order)
        room.add_source(list(source))
        room.add_microphone(list(mic))
        room.compute_rir()
    finally:
        pra.constants.set("rir_hpf_enable", hpf)
    return np.asarray(room.rir[0][0], np.float64)[pra.constants.get("frac_delay_length") // 2 :]


def reverberate(audio: np.ndarray, response: np.ndarray) -> np.ndarray:
    """``audio`` convolved with ``response``, cut to its length (the tail past the end goes,
    as a recording stops) and scaled to its RMS, so the room changes the sound, not the
    level (the quiet conditions measure level)."""
    from scipy.signal import oaconvolve

    x = np.asarray(audio, np.float64)
    wet = oaconvolve(x, response)[: len(x)]
    dry_power, wet_power = float(np.mean(x * x)), float(np.mean(wet * wet))
    return wet * math.sqrt(dry_power / wet_power) if wet_power > 0 else wet


def degrade(
    condition: str, audio: np.ndarray, sample_rate: int, seed: int | Sequence[int], response: np.ndarray | None
) -> np.ndarray:
    """``audio`` under one of :data:`CONDITIONS` (``response``: the room's, for
    ``room-4m``; ``seed``: the noise floor's), peaks above :data:`PEAK` scaled down."""
    if condition == "clean":
        out = np.asarray(audio, np.float64)
    elif condition.split("-")[0] in CODECS:
        codec, kbps = condition.split("-")
        out = codec_round_trip(audio, sample_rate, codec, int(kbps)).astype(np.float64)
    elif condition == "room-4m":
        if response is None:
            raise ValueError("room-4m needs the room's response")
        out = reverberate(audio, response)
    elif condition == "quiet-20dB":
        out = change_level(audio, QUIET_DB)
    elif condition == "quiet-20dB-noise":
        out = add_noise_floor(change_level(audio, QUIET_DB), NOISE_FLOOR_DBFS, seed)
    else:
        raise ValueError(f"unknown condition {condition!r}; expected one of {', '.join(CONDITIONS)}")
    peak = float(np.max(np.abs(out))) if out.size else 0.0
    return out * (PEAK / peak) if peak > PEAK else out


# --- The table ---------------------------------------------------------------------------

SCORES = (("note_f1", "note"), ("note_with_offset_f1", "note+offset"), ("frame_f1", "frame"))


def condition_table(results: dict[str, list[dict[str, Any]]]) -> str:
    """One row per condition, for each system its mean note, note+offset and frame F1
    (%), with the change against ``clean`` (the first condition) in brackets.

    Args:
        results: condition -> :func:`versus.score_run` results, systems in one order;
            ``clean`` first.
    """
    clean = results["clean"]
    head = ["condition"] + [f"{r['system']} {title}" for r in clean for _, title in SCORES]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for condition, scored in results.items():
        cells = [condition]
        for r, base in zip(scored, clean, strict=True):
            for key, _ in SCORES:
                value = 100.0 * r["mean"][key]
                cost = value - 100.0 * base["mean"][key]
                cells.append(f"{value:.1f}" if condition == "clean" else f"{value:.1f} ({cost:+.1f})")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# --- The material ------------------------------------------------------------------------


def render_pieces(
    soundfont: Path, per_composer: int, seconds: float, sample_rate: int, work: Path
) -> list[versus.Piece]:
    """The outside benchmark's works (:func:`outside.corpus_scores`, played by
    :func:`outside.played`) rendered on ``soundfont`` at ``sample_rate`` as the corpus
    renders (lag cut, no augmentation) into ``work``. A score music21 cannot read is
    skipped with a line on stderr."""
    from pianotx.render.common import Piece, safe_name
    from pianotx.render.corpus import RenderOptions, render_piece
    from pianotx.render.fluidsynth import SoundfontPiano, check_fluidsynth
    from pianotx.render.piano import measure_lag

    check_fluidsynth()
    options = RenderOptions(augment="off", sample_rate=sample_rate)
    # Not check_soundfont: that refuses this piano, which is the point here.
    piano = measure_lag(SoundfontPiano("musescore-general", soundfont), work, sample_rate, options.gain)
    print(f"{soundfont.name}: lag {1000 * piano.lag_seconds:.1f} ms", file=sys.stderr)
    pieces = []
    for rel, path in outside.corpus_scores(per_composer):
        name = safe_name(rel.rsplit(".", 1)[0])
        try:
            notes = outside.played(path, name, seconds)
        except Exception as exc:  # noqa: BLE001 - music21's errors are many; one line, go on
            print(f"{rel}: skipped ({type(exc).__name__}: {exc})", file=sys.stderr)
            continue
        [entry] = render_piece(Piece(name, "score", 0, notes), piano, options, work, work)
        pieces.append(versus.Piece(entry["name"], work / f"{entry['name']}.wav", entry["seconds"], notes))
    return pieces


def degraded_files(
    pieces: list[versus.Piece], conditions: list[str], sample_rate: int, work: Path, response: np.ndarray | None
) -> tuple[dict[str, list[versus.Piece]], dict[str, float]]:
    """Every piece under every condition, written as ``work/CONDITION/NAME.wav``.

    Returns:
        condition -> pieces named ``CONDITION/NAME`` (the references unchanged), and
        condition -> mean RMS level of its files, dBFS.
    """
    import soundfile as sf

    from pianotx.render.piano import write_wav

    files: dict[str, list[versus.Piece]] = {}
    levels: dict[str, float] = {}
    for condition in conditions:
        (work / condition).mkdir()
        files[condition], rms = [], []
        for piece in pieces:
            audio, rate = sf.read(piece.audio, dtype="float64")
            if rate != sample_rate:
                raise versus.BenchmarkError(f"{piece.audio}: {rate} Hz, not {sample_rate}")
            seed = [NOISE_SEED, zlib.crc32(piece.name.encode())]
            out = degrade(condition, audio, sample_rate, seed, response)
            path = work / condition / f"{piece.name}.wav"
            write_wav(path, out, sample_rate)
            rms.append(rms_dbfs(out))
            files[condition].append(
                versus.Piece(f"{condition}/{piece.name}", path, piece.audio_seconds, piece.reference)
            )
        levels[condition] = float(np.mean(rms))
    return files, levels


# --- Command line ------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--soundfont", type=Path, default=outside.default_soundfont(), help="the unseen piano")
    parser.add_argument("--per-composer", type=int, default=1, help="works per reserved composer's folder")
    parser.add_argument("--seconds", type=float, default=60.0, help="each work's first seconds (0: whole)")
    parser.add_argument("--sample-rate", type=int, default=44100, help="of the renderings and degraded files, Hz")
    parser.add_argument("--conditions", default=",".join(CONDITIONS), help="comma-separated; clean is always run")
    parser.add_argument("--model", default=None, help="pianotx model URI or .keras export (default: bundled)")
    parser.add_argument("--skip-basic-pitch", action="store_true")
    parser.add_argument("--basic-pitch-venv", type=Path, default=versus.default_venv())
    parser.add_argument("--basic-pitch-python", default=versus.default_python(), help="interpreter for a new venv")
    parser.add_argument("--json", type=Path, default=None, help="write per-piece scores per condition here")
    return parser.parse_args(argv)


def chosen_conditions(text: str) -> list[str]:
    """The conditions of ``--conditions`` in :data:`CONDITIONS` order, ``clean`` always."""
    asked = {name.strip() for name in text.split(",") if name.strip()}
    unknown = sorted(asked - set(CONDITIONS))
    if unknown:
        raise ValueError(f"unknown condition {', '.join(unknown)}; expected some of {', '.join(CONDITIONS)}")
    return [name for name in CONDITIONS if name in asked or name == "clean"]


def room_or_none(conditions: list[str], sample_rate: int) -> tuple[np.ndarray | None, list[str], dict[str, Any]]:
    """The room's response (None without pyroomacoustics or the room condition), the
    conditions that can run, and the room's description for the JSON."""
    if "room-4m" not in conditions:
        return None, conditions, {}
    try:
        import pyroomacoustics as pra
    except ImportError:
        print("room-4m: left out (pyroomacoustics missing: pip install pyroomacoustics)", file=sys.stderr)
        return None, [c for c in conditions if c != "room-4m"], {}
    response = room_response(sample_rate)
    measured = float(pra.experimental.measure_rt60(response, sample_rate))
    distance = float(np.linalg.norm(np.subtract(ROOM["mic"], ROOM["source"])))
    print(f"room: {distance:.2f} m, Sabine RT60 {ROOM['rt60']} s, measured RT60 {measured:.2f} s", file=sys.stderr)
    return (
        response,
        conditions,
        {**ROOM, "distance": distance, "measured_rt60": measured, "pyroomacoustics": pra.__version__},
    )


def run(args: argparse.Namespace) -> tuple[dict[str, list[dict[str, Any]]], dict[str, Any]]:
    """Render, degrade, transcribe every file with each system (Basic Pitch first), score
    per condition; returns the scores and what the JSON records besides."""
    from pianotx.transcribe import BUNDLED_MODEL

    conditions = chosen_conditions(args.conditions)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        pieces = render_pieces(args.soundfont, args.per_composer, args.seconds, args.sample_rate, work)
        if not pieces:
            raise versus.BenchmarkError("no score could be rendered")
        minutes = sum(p.audio_seconds for p in pieces) / 60
        notes = sum(len(p.reference) for p in pieces)
        print(f"{len(pieces)} pieces, {minutes:.1f} min, {notes} notes", file=sys.stderr)
        response, conditions, room = room_or_none(conditions, args.sample_rate)
        files, levels = degraded_files(pieces, conditions, args.sample_rate, work, response)
        print("mean RMS, dBFS: " + ", ".join(f"{c} {levels[c]:.1f}" for c in conditions), file=sys.stderr)
        every = [piece for condition in conditions for piece in files[condition]]
        warmup = versus.write_silence(work / "silence.wav")
        runs = []
        if not args.skip_basic_pitch:
            python = versus.ensure_basic_pitch(args.basic_pitch_venv, args.basic_pitch_python)
            runs.append(versus.run_basic_pitch(python, every, warmup))
        runs.append(versus.run_pianotx(args.model or str(BUNDLED_MODEL), every, warmup))
    results = {condition: [score_condition(run, files[condition]) for run in runs] for condition in conditions}
    extra = {
        "pieces": [p.name for p in pieces],
        "minutes": minutes,
        "notes": notes,
        "levels_dbfs": levels,
        "room": room,
    }
    return results, extra


def score_condition(run: versus.SystemRun, pieces: list[versus.Piece]) -> dict[str, Any]:
    """:func:`versus.score_run` on the files of one condition."""
    names = [p.name for p in pieces]
    part = versus.SystemRun(
        run.name, run.startup_seconds, {n: run.estimates[n] for n in names}, {n: run.seconds[n] for n in names}
    )
    return versus.score_run(part, pieces)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    outside.check_inputs(args)
    from pianotx.errors import PianotxError
    from pianotx.files import write_json_atomic

    try:
        results, extra = run(args)
    except (versus.BenchmarkError, PianotxError, ValueError, FileNotFoundError) as exc:
        sys.exit(f"error: {exc}")
    if args.json is not None:
        record = {"soundfont": str(args.soundfont), "seconds": args.seconds, "sample_rate": args.sample_rate}
        write_json_atomic(args.json, {**record, **extra, "conditions": results})
    print(condition_table(results))


if __name__ == "__main__":
    main()
