"""The base of every error pianotx reports to its user as one line.

Each module raises its own subclass (``ConfigError``, ``DatasetError``, ...), which also
derives from the built-in it specialises (ValueError, RuntimeError). Its message names
the file or value and the reason; the command line prints it after ``error:`` and exits 1.
"""

from __future__ import annotations


class PianotxError(Exception):
    """An error with a message fit for the user (names the file or value and the reason)."""
