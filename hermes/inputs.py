"""Checks on what callers hand the engine: frames, timestamps, questions.

Each returns the input in the form the engine uses, or raises ``HermesError`` with a
sentence a person can act on (the app shows it as it is).
"""

from __future__ import annotations

import itertools
import math
import numbers
import unicodedata
from collections.abc import Sequence

import numpy as np

from hermes.errors import HermesError

MAX_QUESTION_CHARS = 2000


def check_frames(frames: np.ndarray) -> np.ndarray:
    """uint8 (T, H, W, 3), or one (H, W, 3) frame -> (T, H, W, 3)."""
    if not isinstance(frames, np.ndarray):
        raise HermesError(f"frames must be a numpy uint8 array (T, H, W, 3), got {type(frames).__name__}")
    if frames.ndim == 3:
        frames = frames[None]
    if frames.ndim != 4 or frames.shape[-1] != 3 or 0 in frames.shape:
        raise HermesError(f"frames must have shape (T, H, W, 3) with T, H, W > 0, got {frames.shape}")
    if frames.dtype != np.uint8:
        raise HermesError(f"frames must be uint8 RGB (0-255), got dtype {frames.dtype}")
    return frames


def check_times(timestamps: Sequence[float] | np.ndarray | None, n: int, last_time: float | None, fps: float
                ) -> list[float]:
    """Seconds for n frames after `last_time`: the given ones, checked, or one every 1 / fps."""
    if timestamps is None:
        start = 0.0 if last_time is None else last_time + 1.0 / fps
        return [start + i / fps for i in range(n)]
    times = [float(t) for t in np.asarray(timestamps, dtype=np.float64).reshape(-1)]
    if len(times) != n:
        raise HermesError(f"got {n} frames but {len(times)} timestamps")
    if not all(math.isfinite(t) and t >= 0 for t in times):
        raise HermesError("timestamps must be finite numbers of seconds >= 0")
    prev = [last_time] if last_time is not None else []
    if any(b <= a for a, b in itertools.pairwise(prev + times)):
        raise HermesError(f"timestamps must increase (stream is at {last_time} s, got {times[:4]})")
    return times


def check_question(question: str) -> str:
    """A question the model can be asked, stripped (its length counted without the spaces around it)."""
    if not isinstance(question, str) or not question.strip():
        raise HermesError("the question is empty: type something to ask about the video")
    question = question.strip()
    if len(question) > MAX_QUESTION_CHARS:
        raise HermesError(f"the question is too long ({len(question)} characters; at most {MAX_QUESTION_CHARS})")
    if any(unicodedata.category(c) == "Cs" for c in question):  # lone surrogates: bytes that were not UTF-8
        raise HermesError("the question is not valid text: it holds bytes that are not UTF-8")
    if any(unicodedata.category(c) == "Cc" and c not in "\t\n\r" for c in question):
        raise HermesError("the question holds control characters: type plain text")
    return question


def check_max_new(max_new_tokens: int | None, default: int) -> int:
    """Tokens an answer may take: `default` when None, else a whole number in [1, 1024]."""
    max_new = default if max_new_tokens is None else max_new_tokens
    if isinstance(max_new, float) and max_new.is_integer():
        max_new = int(max_new)
    if isinstance(max_new, bool) or not isinstance(max_new, numbers.Integral) or not 1 <= max_new <= 1024:
        raise HermesError(f"max_new_tokens must be in [1, 1024], got {max_new_tokens!r}")
    return int(max_new)
