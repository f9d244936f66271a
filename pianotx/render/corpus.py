"""The default training corpus: real scores and generated material on sampled pianos.

No dataset can be downloaded, so the corpus is made the way MAPS was made: scores from
music21's corpus (Bach chorales and Palestrina by default) plus generated material over
the whole keyboard (isolated notes, usual and random chords, fast runs, repeated notes),
each piece rendered on every piano given (:mod:`pianotx.render.catalog`: FluidSynth
soundfonts, the Salamander grand, TiMidity's freepats pianos).

:func:`render_corpus` writes into its output folder, for each piece and piano,
``NAME.wav`` (mono, ``sample_rate`` Hz, 16-bit) and ``NAME.mid`` (one piano track, the
exact notes the audio was rendered from, absolute seconds), then ``render.json``::

    {"version": 1, "sample_rate": 16000, "seed": 0, "options": {...RenderOptions...},
     "pianos": [{"name": "FluidR3_GM", "kind": "fluidsynth", "path": "...", "lag_seconds": 0.0065},
                {"name": "FreePats-Grand", "kind": "timidity", "config": "...", "program": 0,
                 "patch": "...", "options": "...", "lag_seconds": 0.0003}],
     "keys_covered": 88, "total_seconds": 4321.0,
     "pieces": [{"name": "bach-bwv66.6__t+2__FluidR3_GM", "source": "bach-bwv66.6",
                 "kind": "score", "piano": "FluidR3_GM", "transpose": 2, "seconds": 31.2}]}

``source`` is shared by the renderings of one score (or generated piece) on each piano:
the dataset builder splits by it. ``kind`` is ``"score"`` or a generated kind; a
generated piece's name has no ``__t..`` part. ``seconds`` is the audio length.

Audio and MIDI agree in time: each piano's output lag, measured on a probe of isolated
notes, is cut from the start of every rendering, and the silent tail is trimmed to at
most :data:`pianotx.render.piano.RELEASE` seconds after the last note-off.

Music reserved for outside evaluation is refused: MuseScore's General soundfont (and
GeneralUser, which it shares samples with) and music21's works by the composers in
:data:`pianotx.render.scores.RESERVED_COMPOSERS`. A folder of the user's own MIDI files
is not checked.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pianotx.files import atomic_path, check_output_folder, discard, swap_in, temp_sibling, write_json_atomic
from pianotx.midi import write_midi
from pianotx.render.augment import augment, preset, variant_rng
from pianotx.render.catalog import DEFAULT_PIANOS, KNOWN, open_pianos
from pianotx.render.common import RENDER_FOLDER, RENDER_MANIFEST, RENDER_VERSION, Piece, RenderError
from pianotx.render.generated import generated_pieces, parse_kinds
from pianotx.render.piano import Piano, measure_lag, trim_audio, write_wav
from pianotx.render.scores import check_corpus, load_scores

__all__ = ["RenderError", "RenderOptions", "RenderReport", "check_options", "render_corpus"]


@dataclass(frozen=True)
class RenderOptions:
    """What to render. Every field is plain data, so ``config.from_dict`` builds it.

    Defaults give 100 scores (50 Bach chorales, 50 Palestrina movements, first 45 s of
    each) plus 80 generated 45-s pieces, each on every piano that can be had: about 126
    minutes of audio per piano, ~half of it generated. 80 pieces give every kind at least
    four (4 per unit of weight), so a random 80/10/10 split by piece leaves no kind out
    of training: with 30 (1-3 per kind) both repeated-note pieces and the one block-chord
    piece landed in the test split, and the model never trained on such writing.

    Attributes:
        corpus: music21 corpus path prefixes ("bach/bwv" matches bach/bwv66.6.mxl) or
            folders of .mid/.midi files (searched recursively). Scores are taken from the
            entries in turn (round robin), each entry's list in a seeded order.
        pianos: piano names (:data:`pianotx.render.catalog.DEFAULT_PIANOS`, all by
            default; one that cannot be had is skipped with a warning) or .sf2 files
            (named by their stem); every piece is rendered on each.
        pieces: number of scores taken; 0 = every score the corpus entries match.
        seconds: excerpt length per score (its first ``seconds``), and the length of each
            generated piece; 0 = whole scores and 45-s generated pieces.
        generated: generated pieces per score taken: ``ceil(scores * generated)``;
            0 = none. pieces=2 gives 1 generated piece.
        kinds: "kind:weight" entries over :data:`pianotx.render.generated.KINDS`; the
            generated pieces are shared out in proportion to the weights (largest
            remainder, ties to the earlier kind). The default weighs the piano textures
            of :mod:`pianotx.render.textures` (two thirds) over the drills (isolated
            notes, chords, runs, repeats: a third); of 80 pieces, 8 isolated-note
            pieces play all 88 keys.
        transpose: each score is shifted by a seeded number of semitones in
            [-transpose, +transpose], then by whole octaves where needed to fit MIDI
            21..108; notes still outside (a score wider than the keyboard) are folded in.
        seed: seeds score choice, transpositions, tempi, velocities and generated material.
        sample_rate: audio sample rate, Hz.
        gain: output level (0 < gain < 10): FluidSynth's master gain, TiMidity's
            volume scaled alike; at 1.0 a velocity-127 C4 is at -20 to -23 dB RMS on
            every default piano.
        augment: a room-and-sound augmentation preset
            (:data:`pianotx.render.augment.PRESETS`: off, light, default, strong). Not
            "off": each rendering is also written ``augment_variants`` times augmented,
            as ``NAME__augK.wav`` with its MIDI, each recording what was applied.
        augment_variants: augmented copies per rendering.
    """

    corpus: tuple[str, ...] = ("bach/bwv", "palestrina")
    pianos: tuple[str, ...] = DEFAULT_PIANOS
    pieces: int = 100
    seconds: float = 45.0
    generated: float = 0.8
    kinds: tuple[str, ...] = (
        "notes:2", "chords:1", "random_chords:1", "runs:1", "repeats:1",
        "alberti:1", "waltz:1", "stride:1", "arpeggios:1", "parallel_scales:1",
        "block_chords:1", "counterpoint:1", "trills_tremolos:1", "repeated_chords:1",
        "melody_accompaniment:1", "piano:4",
    )  # fmt: skip
    transpose: int = 3
    seed: int = 0
    sample_rate: int = 16000
    gain: float = 1.0
    augment: str = "default"
    augment_variants: int = 1

    def __post_init__(self) -> None:
        for name in ("corpus", "pianos", "kinds"):
            value = getattr(self, name)
            object.__setattr__(self, name, (value,) if isinstance(value, str) else tuple(value))
        for name, kind in (("pieces", int), ("seconds", float), ("generated", float),
                           ("transpose", int), ("seed", int), ("sample_rate", int),
                           ("gain", float), ("augment_variants", int)):  # fmt: skip
            object.__setattr__(self, name, kind(getattr(self, name)))
        if self.pieces < 0 or self.seconds < 0 or self.generated < 0 or self.transpose < 0:
            raise ValueError("pieces, seconds, generated and transpose must be >= 0")
        if self.sample_rate <= 0 or not 0 < self.gain < 10:
            raise ValueError("sample_rate must be positive and gain in (0, 10)")
        if not self.corpus or not self.pianos:
            raise ValueError("corpus and pianos must not be empty")
        if self.augment_variants < 1:
            raise ValueError("augment_variants must be >= 1")
        parse_kinds(self.kinds)
        preset(self.augment)


@dataclass(frozen=True)
class RenderReport:
    """What :func:`render_corpus` wrote.

    Attributes:
        out_dir: the output folder.
        pieces: (wav, mid) pairs written (pieces x pianos).
        seconds: total audio written, seconds.
        lags: piano name -> measured output lag, seconds (cut from every file).
        skipped: (score, one-line reason) for each score that could not be used.
        keys_covered: distinct MIDI keys played over the whole corpus (of 88).
        pianos_skipped: names of the requested pianos that could not be had.
        scores: pieces of music played (scores and generated pieces).
        pianos: pianos each was played on.
        augmented: of ``pieces``, the augmented copies (the rest are renderings as played).
    """

    out_dir: Path
    pieces: int
    seconds: float
    lags: dict[str, float]
    skipped: tuple[tuple[str, str], ...]
    keys_covered: int
    pianos_skipped: tuple[str, ...] = ()
    scores: int = 0
    pianos: int = 0
    augmented: int = 0

    def summary(self) -> str:
        """One line: what was written, e.g. ``data/render: 1800 pairs (180 pieces on 5
        pianos, and 900 augmented copies), 612.0 min of audio, 88 keys covered, 0 scores
        skipped``."""
        copies = f", and {self.augmented} augmented copies" if self.augmented else ""
        return (
            f"{self.out_dir}: {self.pieces} pairs ({self.scores} pieces on {self.pianos} "
            f"piano{'s' if self.pianos != 1 else ''}{copies}), {self.seconds / 60:.1f} min of audio, "
            f"{self.keys_covered} keys covered, {len(self.skipped)} scores skipped"
        )


# ---------------------------------------------------------------- checks and options


def check_options(options: RenderOptions, say: Callable[[str], None] | None = None) -> list[Piano]:
    """Refuse reserved inputs before any work is done; open the pianos.

    Args:
        options: what to render.
        say: gets one ``warning:`` line per named piano that cannot be had (skipped).

    Raises:
        RenderError: a corpus entry naming a reserved composer, a reserved or missing
            soundfont file, an unknown piano, two pianos with one name, or no piano
            that can be had.
    """
    check_corpus(options.corpus)
    return open_pianos(options.pianos, say or (lambda _line: None))


# ---------------------------------------------------------------- pieces


def plan_pieces(
    options: RenderOptions, say: Callable[[str], None] | None = None
) -> tuple[list[Piece], list[tuple[str, str]]]:
    """Every piece to render (scores, then generated material), and the skipped scores."""
    o = options
    scores, skipped = load_scores(o.corpus, o.pieces, o.seed, o.transpose, o.seconds, say)
    count = math.ceil(len(scores) * o.generated)
    return scores + generated_pieces(o.seed, o.seconds, o.kinds, count), skipped


def piece_name(piece: Piece, piano: Piano) -> str:
    """``SOURCE__t+2__PIANO`` for scores, ``SOURCE__PIANO`` for generated material."""
    middle = f"__t{piece.transpose:+d}" if piece.kind == "score" else ""
    return f"{piece.source}{middle}__{piano.name}"


def render_piece(piece: Piece, piano: Piano, options: RenderOptions, out_dir: Path, work: Path) -> list[dict[str, Any]]:
    """Write ``NAME.wav`` and ``NAME.mid`` for one piece on one piano (and its augmented
    copies); their render.json entries."""
    name = piece_name(piece, piano)
    midi = out_dir / f"{name}.mid"
    write_midi(piece.notes, midi, pedal=piece.pedal)
    audio = piano.render(midi, work / f"{name}.raw.wav", options.sample_rate, options.gain)
    lag = int(round(piano.lag_seconds * options.sample_rate))
    audio = trim_audio(audio, lag, piece.end_time, options.sample_rate)
    write_wav(out_dir / f"{name}.wav", audio, options.sample_rate)
    entry = {
        "name": name, "source": piece.source, "kind": piece.kind, "piano": piano.name,
        "transpose": piece.transpose, "seconds": round(len(audio) / options.sample_rate, 4),
    }  # fmt: skip
    return [entry, *_augmented(entry, audio, midi, options, out_dir)]


def _augmented(
    entry: dict[str, Any], audio: np.ndarray, midi: Path, options: RenderOptions, out_dir: Path
) -> list[dict[str, Any]]:
    """The augmented copies of one rendering: ``NAME__augK.wav`` beside a copy of its
    MIDI, each entry recording what was applied (:func:`pianotx.render.augment.apply_record`
    redoes it from the dry rendering)."""
    config = preset(options.augment)
    if not config.enabled:
        return []
    entries = []
    for k in range(1, options.augment_variants + 1):
        name = f"{entry['name']}__aug{k}"
        wet, record = augment(audio, options.sample_rate, variant_rng(options.seed, entry["name"], k), config)
        write_wav(out_dir / f"{name}.wav", wet, options.sample_rate)
        with atomic_path(out_dir / f"{name}.mid") as tmp:
            shutil.copyfile(midi, tmp)
        entries.append(entry | {"name": name, "augment": record})
    return entries


# ---------------------------------------------------------------- the corpus


def _render_all(
    jobs: list[tuple[Piece, Piano]],
    options: RenderOptions,
    out_dir: Path,
    work: Path,
    say: Callable[[str], None],
    on_render: Callable[[int, int], None] | None = None,
) -> list[dict[str, Any]]:
    """Render every (piece, piano) job, ``os.cpu_count()`` renderer processes at once;
    after each, ``on_render(done, total)`` when given, else a ``rendered i/N`` line."""
    entries: list[dict[str, Any]] = []
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        futures = [pool.submit(render_piece, p, f, options, out_dir, work) for p, f in jobs]
        try:
            for i, future in enumerate(futures, 1):
                entries += future.result()
                if on_render is not None:
                    on_render(i, len(jobs))
                else:
                    say(f"rendered {i}/{len(jobs)} {entries[-1]['name']}")
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    return entries


def render_corpus(
    out_dir: Path,
    options: RenderOptions,
    progress: Callable[[str], None] | None = None,
    on_render: Callable[[int, int], None] | None = None,
) -> RenderReport:
    """Render the corpus described by ``options`` into ``out_dir`` (see module docstring).

    The corpus is rendered into a hidden temporary folder beside ``out_dir`` and renamed
    into place when complete (``render.json`` written last), so a folder with a
    ``render.json`` is always a complete render. ``out_dir`` must be new, empty or an
    earlier render holding only the files its ``render.json`` lists: anything else is
    refused before any work.

    Args:
        out_dir: output folder, created if needed.
        options: what to render.
        progress: called with one line per step (skipped pianos, lags, skipped scores,
            and each rendering unless ``on_render`` is given).
        on_render: called with (renderings done, renderings in all) after each (piece,
            piano) rendering and its augmented copies are written, e.g. for a bar.

    Raises:
        RenderError: a reserved or missing input, no piano, or a failed render.
        OutputError: ``out_dir`` is not a place a corpus may be written.
    """
    say = progress or (lambda _line: None)
    out_dir = Path(out_dir)
    check_output_folder(out_dir, RENDER_FOLDER, inputs=[c for c in options.corpus if Path(c).is_dir()], what="corpus")
    pianos = check_options(options, say)
    target = temp_sibling(out_dir)
    try:
        entries, pianos, pieces, skipped = _render_into(target, options, pianos, say, progress, on_render)
        _write_manifest(target, options, pianos, pieces, entries)
        swap_in(target, out_dir, RENDER_FOLDER)
    except BaseException:
        discard(target)
        raise
    total = round(sum(e["seconds"] for e in entries), 3)
    keys = _keys_covered(pieces)
    return RenderReport(
        out_dir, len(entries), total, {p.name: p.lag_seconds for p in pianos},
        tuple(skipped), keys, _skipped_pianos(options, pianos),
        scores=len(pieces), pianos=len(pianos), augmented=sum("augment" in e for e in entries),
    )  # fmt: skip


def _skipped_pianos(options: RenderOptions, pianos: list[Piano]) -> tuple[str, ...]:
    had = {p.name for p in pianos}
    return tuple(name for name in options.pianos if name in KNOWN and name not in had)


def _render_into(
    target: Path,
    options: RenderOptions,
    pianos: list[Piano],
    say: Callable[[str], None],
    progress: Callable[[str], None] | None,
    on_render: Callable[[int, int], None] | None = None,
) -> tuple[list[dict[str, Any]], list[Piano], list[Piece], list[tuple[str, str]]]:
    """Measure each piano's lag, plan the pieces and render them all into ``target``."""
    with tempfile.TemporaryDirectory(prefix=".work-", dir=target) as tmp:
        work = Path(tmp)
        pianos = [measure_lag(piano, work, options.sample_rate, options.gain) for piano in pianos]
        for piano in pianos:
            say(f"{piano.name}: lag {piano.lag_seconds * 1000:.1f} ms")
        pieces, skipped = plan_pieces(options, progress)
        say(f"rendering {len(pieces)} pieces on {len(pianos)} piano(s)")
        entries = _render_all([(p, q) for p in pieces for q in pianos], options, target, work, say, on_render)
    return entries, pianos, pieces, skipped


def _keys_covered(pieces: list[Piece]) -> int:
    return len(set().union(*(set(p.notes.pitches.tolist()) for p in pieces))) if pieces else 0


def _write_manifest(
    target: Path, options: RenderOptions, pianos: list[Piano], pieces: list[Piece], entries: list[dict[str, Any]]
) -> None:
    keys = _keys_covered(pieces)
    total = round(sum(e["seconds"] for e in entries), 3)
    write_json_atomic(target / RENDER_MANIFEST, {
        "version": RENDER_VERSION, "sample_rate": options.sample_rate, "seed": options.seed,
        "options": asdict(options),
        "pianos": [piano.describe() for piano in pianos],
        "keys_covered": keys, "total_seconds": total, "pieces": entries,
    })  # fmt: skip
