"""Exceptions with messages meant for people: the app and the CLI show them as they are.

Every error the engine raises on purpose is a ``HermesError``; video problems are a
``VideoError``. Anything else escaping the engine is a bug.
"""

from __future__ import annotations

import numbers


class HermesError(Exception):
    """A problem the user can fix (bad argument, bad file, missing model...)."""


class VideoError(HermesError):
    """A video file that cannot be read, with the reason in plain words."""


def check_number(name: str, value: object, low: float, high: float, *, whole: bool = False,
                 low_open: bool = False) -> None:
    """Raise HermesError naming `name` and its range unless `value` is a number in it
    (a whole number when `whole`; `low` itself excluded when `low_open`)."""
    kind = "a whole number" if whole else "a number"
    ok_type = isinstance(value, numbers.Integral if whole else numbers.Real)
    ok = ok_type and not isinstance(value, bool) and value == value  # NaN is not a number here
    if ok:
        ok = (low < value if low_open else low <= value) and value <= high
    if not ok:
        bracket = "(" if low_open else "["
        raise HermesError(f"{name} must be {kind} in {bracket}{_num(low)}, {_num(high)}], got {value!r}")


def _num(x: float) -> str:
    return "inf" if x == float("inf") else f"{x:g}" if abs(x) < 1e6 else f"{int(x):,}"


def check_choice(name: str, value: object, allowed: tuple) -> None:
    """Raise HermesError naming `name` and its choices unless `value` is one of them."""
    if value not in allowed:
        raise HermesError(f"{name} must be one of {allowed}, got {value!r}")


def check_flag(name: str, value: object) -> None:
    if not isinstance(value, bool):
        raise HermesError(f"{name} must be True or False, got {value!r}")
