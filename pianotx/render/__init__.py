"""The default corpus: scores and generated material rendered on sampled pianos.

:mod:`~pianotx.render.corpus` is the entry (``RenderOptions``, ``render_corpus``);
:mod:`~pianotx.render.common` holds what the other modules share; each source of music
(:mod:`~pianotx.render.scores`, :mod:`~pianotx.render.generated`) and each way of
playing it (:mod:`~pianotx.render.fluidsynth`) has a module of its own, taking plain values.
"""
