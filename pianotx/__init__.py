"""pianotx: piano transcription research with a CQT + LSTM model, Keras Tuner and MLflow.

The Python API (:mod:`pianotx.api`), loaded on first use so that ``import pianotx``
imports neither TensorFlow nor MLflow::

    import pianotx
    notes = pianotx.transcribe("song.wav")
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Dataset", "__version__", "evaluate", "load_model", "transcribe"]

if TYPE_CHECKING:
    from pianotx.api import Dataset, load_model


def __getattr__(name: str) -> Any:
    if name in ("Dataset", "load_model"):
        from pianotx import api

        return getattr(api, name)
    if name in ("evaluate", "transcribe"):  # modules that are also the functions: callable_module
        import importlib

        return importlib.import_module(f"pianotx.{name}")
    raise AttributeError(f"module 'pianotx' has no attribute {name!r}")
