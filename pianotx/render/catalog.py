"""The pianos the corpus renderer knows by name, and how each is had.

========================  ==========  ==================================================
name                      kind        from
========================  ==========  ==================================================
``FluidR3_GM``            fluidsynth  Debian ``fluid-soundfont-gm`` (Yamaha grand samples)
``TimGM6mb``              fluidsynth  Debian ``timgm6mb-soundfont``
``Salamander``            fluidsynth  Salamander Grand V3 (Yamaha C5), built once by
                                      :mod:`pianotx.render.salamander`
``FreePats-Grand``        timidity    Debian ``freepats``, program 0 (Acoustic Grand)
``FreePats-Bright``       timidity    Debian ``freepats``, program 1 (Bright)
========================  ==========  ==================================================

:func:`open_pianos` opens the pianos a render asks for. A named piano that cannot be
had (its program or files missing, the Salamander build impossible offline) is skipped
with one warning line saying how to get it; a render needs at least one. Any other
entry is a soundfont file, played by FluidSynth and named by its stem; a missing or
reserved file is an error, not a skip.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from pianotx.render import salamander
from pianotx.render.common import RenderError
from pianotx.render.fluidsynth import SOUNDFONT_DIR, check_fluidsynth, check_soundfont
from pianotx.render.piano import Piano
from pianotx.render.timidity import DECAY, check_timidity_piano

Say = Callable[[str], None]
SOUNDFONT_SUFFIXES = (".sf2", ".sf3")


def _debian_soundfont(file: str) -> Callable[[Say], Piano]:
    def opener(_say: Say) -> Piano:
        piano = check_soundfont(SOUNDFONT_DIR / file)
        check_fluidsynth()
        return piano

    return opener


def _salamander(say: Say) -> Piano:
    check_fluidsynth()
    path = salamander.ensure_soundfont(say)
    return check_soundfont(path, name=salamander.NAME, hint=salamander.INSTALL_HINT)


# TiMidity volumes (percent) that put a velocity-127 C4 near FluidR3_GM's level.
KNOWN: dict[str, Callable[[Say], Piano]] = {
    "FluidR3_GM": _debian_soundfont("FluidR3_GM.sf2"),
    "TimGM6mb": _debian_soundfont("TimGM6mb.sf2"),
    salamander.NAME: _salamander,
    "FreePats-Grand": lambda _say: check_timidity_piano(
        "FreePats-Grand", 0, "Tone_000/000_Acoustic_Grand_Piano.pat", f"amp=120 pan=center {DECAY}", level=60.0
    ),
    "FreePats-Bright": lambda _say: check_timidity_piano(
        "FreePats-Bright", 1, "Tone_000/001_Acoustic_Brite_Piano.pat", DECAY, level=84.0
    ),
}
DEFAULT_PIANOS = tuple(KNOWN)


def open_piano(entry: str, say: Say) -> Piano:
    """The piano ``entry`` names: a known name, or a soundfont file.

    Raises:
        RenderError: the piano cannot be had (the message says how to get it), the
            soundfont is reserved, or ``entry`` is neither a known name nor a soundfont.
    """
    if entry in KNOWN:
        return KNOWN[entry](say)
    if Path(entry).suffix.lower() not in SOUNDFONT_SUFFIXES:
        raise RenderError(f"unknown piano {entry!r}: expected one of {', '.join(KNOWN)} or a .sf2 file")
    piano = check_soundfont(entry)
    check_fluidsynth()
    return piano


def open_pianos(entries: tuple[str, ...], say: Say) -> list[Piano]:
    """Every piano of ``entries`` that can be had; each named one that cannot is skipped
    with one ``warning:`` line through ``say``.

    Raises:
        RenderError: a soundfont file missing or reserved, an unknown name, two pianos
            with one name, or no piano at all (the message gives each one's reason).
    """
    pianos: list[Piano] = []
    missing: list[tuple[str, str]] = []
    for entry in entries:
        try:
            pianos.append(open_piano(entry, say))
        except RenderError as exc:
            if entry not in KNOWN:
                raise
            missing.append((entry, str(exc)))
            say(f"warning: piano {entry} skipped: {exc}")
    if not pianos:
        if len(missing) == 1:
            raise RenderError(missing[0][1])
        raise RenderError("no piano can be had: " + "; ".join(f"{name}: {why}" for name, why in missing))
    names = [p.name for p in pianos]
    for name in sorted({n for n in names if names.count(n) > 1}):
        raise RenderError(f"two pianos are named {name}; rename a soundfont file")
    return pianos
