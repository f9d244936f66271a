"""What every piano of the corpus renderer is, and what is done to all their renderings.

A piano (:class:`Piano`) has a name, a kind (the program that plays it), a way to render
a MIDI file to mono float32 audio, and an output lag: the time its audio trails the
MIDI. :func:`measure_lag` measures the lag on a probe of isolated notes,
:func:`trim_audio` cuts it from the start of a rendering along with all but
:data:`RELEASE` seconds of the silent tail, and :func:`write_wav` writes the result.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from pianotx.files import atomic_path
from pianotx.midi import Notes, write_midi
from pianotx.render.common import RenderError, quantise

RELEASE = 1.0  # seconds of audio kept after the last note-off, at most
SILENCE = 1.0e-4  # |sample| below this (-80 dBFS) counts as silence when trimming


class Piano(Protocol):
    """A piano the corpus can be rendered on (a frozen dataclass with these members).

    Attributes:
        name: stable, file-name-safe name; it ends every rendering's name.
        kind: the program that plays it ("fluidsynth", "timidity").
        lag_seconds: measured output lag, cut from every rendering (0 until measured).
    """

    @property
    def name(self) -> str: ...

    @property
    def kind(self) -> str: ...

    @property
    def lag_seconds(self) -> float: ...

    def render(self, midi: Path, wav: Path, sample_rate: int, gain: float) -> np.ndarray:
        """Render ``midi`` through the scratch file ``wav`` (removed after reading).

        Args:
            midi: the MIDI file to play.
            wav: a scratch path for the raw rendering.
            sample_rate: Hz.
            gain: level; at 1.0 a velocity-127 C4 is at -20 to -23 dB RMS on every
                default piano.

        Returns:
            (n,) float32 mono audio, as rendered (lag not cut, tail not trimmed).

        Raises:
            RenderError: the renderer failed (the message names ``midi`` and the reason).
        """
        ...

    def describe(self) -> dict[str, Any]:
        """The piano's render.json entry: name, kind, what it plays from, lag_seconds."""
        ...


# ---------------------------------------------------------------- lag


def probe_notes() -> Notes:
    """Twelve isolated notes over the keyboard at varied positions in a 64-sample block
    (onsets 0.5 + 1.2 k s + 5 k/16000 s), for measuring a piano's lag."""
    keys = (33, 40, 45, 52, 57, 60, 64, 69, 72, 76, 81, 88)
    starts = [0.5 + 1.2 * k + 5 * k / 16000 for k in range(len(keys))]
    return quantise(Notes.from_lists([(s, s + 0.3) for s in starts], list(keys), [100] * len(keys)))


def note_onsets(audio: np.ndarray, onsets: np.ndarray, sample_rate: int) -> np.ndarray:
    """Delay, seconds, from each onset to the first sample above 1% of the peak in the
    0.3 s after it (searched from 50 ms before it); NaN where that stretch is silent.

    Args:
        audio: (n,) samples; onsets: (k,) seconds of isolated notes.

    Returns:
        (k,) float64 delays.
    """
    delays = np.full(len(onsets), np.nan)
    for i, onset in enumerate(onsets):
        a = max(int((onset - 0.05) * sample_rate), 0)
        segment = np.abs(audio[a : int((onset + 0.3) * sample_rate)])
        if segment.size and segment.max() > SILENCE:
            first = int(np.argmax(segment > 0.01 * segment.max()))
            delays[i] = (a + first) / sample_rate - onset
    return delays


def onset_lag(audio: np.ndarray, onsets: np.ndarray, sample_rate: int) -> float:
    """Median of :func:`note_onsets` over the notes that sound, seconds.

    Raises:
        RenderError: no note sounds.
    """
    delays = note_onsets(audio, onsets, sample_rate)
    if np.isnan(delays).all():
        raise RenderError("the piano plays no sound for a piano note")
    return float(np.nanmedian(delays))


def measure_lag(piano: Piano, work: Path, sample_rate: int, gain: float) -> Piano:
    """``piano`` with its measured lag (seconds, clipped at 0) from rendering the probe.

    Args:
        piano: a piano dataclass.
        work: scratch folder.
        sample_rate: Hz; gain: as for :meth:`Piano.render`.
    """
    probe = probe_notes()
    midi = work / f"probe-{piano.name}.mid"
    write_midi(probe, midi)
    audio = piano.render(midi, work / f"probe-{piano.name}.wav", sample_rate, gain)
    lag = max(onset_lag(audio, probe.intervals[:, 0], sample_rate), 0.0)
    return dataclasses.replace(piano, lag_seconds=round(lag, 6))  # type: ignore[type-var]


# ---------------------------------------------------------------- audio


def trim_audio(audio: np.ndarray, lag: int, end_seconds: float, sample_rate: int) -> np.ndarray:
    """Align a rendering with its MIDI and trim the renderer's silent tail.

    Args:
        audio: (n,) float32 samples as rendered.
        lag: samples the audio lags the MIDI by; cut from the start.
        end_seconds: the last note-off, seconds.
        sample_rate: Hz.

    Returns:
        (m,) float32: from ``lag`` on, ending after the last sample louder than
        :data:`SILENCE`, but never before the last note-off nor more than
        :data:`RELEASE` s after it (zero-padded if the rendering stops earlier).
    """
    x = audio[lag:]
    last_off = int(math.ceil(end_seconds * sample_rate))
    limit = last_off + int(RELEASE * sample_rate)
    x = np.pad(x, (0, max(0, last_off - len(x))))[:limit]
    loud = np.flatnonzero(np.abs(x[last_off:]) > SILENCE)
    return x[: last_off + (int(loud[-1]) + 1 if len(loud) else 0)]


def read_mono(wav: Path) -> np.ndarray:
    """(n,) float32 channel mean of ``wav``, which is then removed."""
    import soundfile

    try:
        audio, _ = soundfile.read(str(wav), dtype="float32", always_2d=True)
    finally:
        wav.unlink(missing_ok=True)
    return audio.mean(axis=1)


def write_wav(path: Path, audio: np.ndarray, sample_rate: int) -> None:
    """16-bit WAV written atomically; peaks above 0.99 are scaled down to 0.99."""
    import soundfile

    peak = float(np.abs(audio).max()) if audio.size else 0.0
    if peak > 0.99:
        audio = audio * (0.99 / peak)
    with atomic_path(path) as tmp:
        soundfile.write(str(tmp), audio, sample_rate, subtype="PCM_16", format="WAV")
