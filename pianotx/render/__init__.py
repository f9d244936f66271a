"""The default corpus: scores and generated material rendered on sampled pianos.

:mod:`~pianotx.render.corpus` is the entry (``RenderOptions``, ``render_corpus``);
:mod:`~pianotx.render.common` holds what the other modules share; each source of music
(:mod:`~pianotx.render.scores`, :mod:`~pianotx.render.generated`) has a module of its
own, taking plain values. Pianos: :mod:`~pianotx.render.piano` says what one is (and
measures its lag), :mod:`~pianotx.render.catalog` names the known ones, and each way of
playing them has a module (:mod:`~pianotx.render.fluidsynth`,
:mod:`~pianotx.render.timidity`; :mod:`~pianotx.render.salamander` builds the Salamander
grand's soundfont).
"""
