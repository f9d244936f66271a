"""Every use of Keras Tuner's private modules (``keras_tuner.src``), in one place.

pianotx needs four things Keras Tuner does not export: the JSON writer its state goes
through (made atomic by :func:`pianotx.tuning.tuner.write_state_atomically`), the gRPC
protocol of its distributed oracle, the oracle servicer (subclassed so idle workers wait)
with the chief's exit, and the per-oracle lock its ``synchronized`` methods take.
``tests/test_tuning_private.py`` pins what each is relied on to be, so that a Keras
Tuner upgrade that moves or changes one fails there first, naming it.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any


def state_utils() -> Any:
    """``keras_tuner.src.utils``: its ``save_json(path, obj)`` writes every state file."""
    from keras_tuner.src import utils

    return utils


def protos() -> ModuleType:
    """``keras_tuner.src.protos``: ``get_service()`` (messages) and ``get_service_grpc()``
    (``OracleStub``) of the distributed oracle."""
    from keras_tuner.src import protos as module

    return module


def oracle_servicer() -> type:
    """``OracleServicer``: the chief's gRPC servicer over an oracle (``.oracle``,
    ``.stop_triggered``, ``CreateTrial(request, context)``)."""
    from keras_tuner.src.distribute.oracle_chief import OracleServicer

    return OracleServicer


def exit_chief(*args: Any) -> Any:
    """``oracle_chief.exit_chief(oracle)``: whether the chief may stop serving (every
    worker has been told to stop); it takes the oracle's lock."""
    from keras_tuner.src.distribute.oracle_chief import exit_chief as function

    return function(*args)


def oracle_locks() -> tuple[dict[Any, Any], dict[Any, Any]]:
    """``(LOCKS, THREADS)`` of ``keras_tuner.src.engine.oracle``: the re-entrant lock each
    oracle's ``synchronized`` methods hold, and the name of the thread holding it."""
    from keras_tuner.src.engine.oracle import LOCKS, THREADS

    return LOCKS, THREADS
