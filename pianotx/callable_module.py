"""Modules that are also the API's functions of the same name.

``pianotx.transcribe`` and ``pianotx.evaluate`` are modules of the package and functions
of its API (:mod:`pianotx.api`). Importing a submodule binds its name on the package, so
a package-level function of that name would be replaced by the module as soon as anything
imported it; instead the module itself is made callable, forwarding to the function, and
``pianotx.transcribe("song.wav")`` works whatever was imported before.
"""

from __future__ import annotations

import sys
import types
from typing import Any


def make_callable(module_name: str, function: str) -> None:
    """Make the module ``module_name`` callable as :mod:`pianotx.api`'s ``function``."""

    class _Module(types.ModuleType):
        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            from pianotx import api

            return getattr(api, function)(*args, **kwargs)

    sys.modules[module_name].__class__ = _Module
