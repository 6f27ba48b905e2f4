"""Exceptions with messages meant for people: the app and the CLI show them as they are.

Every error the engine raises on purpose is a ``HermesError``; video problems are a
``VideoError``. Anything else escaping the engine is a bug.
"""

from __future__ import annotations


class HermesError(Exception):
    """A problem the user can fix (bad argument, bad file, missing model...)."""


class VideoError(HermesError):
    """A video file that cannot be read, with the reason in plain words."""
