"""Replay a recorded stream: ingest up to each question's time, then ask.

    for question in replay(engine, frames, timestamps, [(q.time, q) for q in questions]):
        answer = engine.ask(question.question)
    feed(engine, frames, timestamps)          # all of it, the partial chunk flushed

Every study that asks questions along a stream does this: the engine sees exactly the frames
shown at or before the question's time (and the partial chunk is flushed), nothing after.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TypeVar

import numpy as np

from hermes.engine import StreamEngine

T = TypeVar("T")


def feed(engine: StreamEngine, frames: np.ndarray, timestamps: np.ndarray | None = None) -> StreamEngine:
    """Ingest all of `frames` and flush the partial chunk; returns `engine`."""
    engine.ingest(frames, timestamps)
    engine.flush()
    return engine


def replay(engine: StreamEngine, frames: np.ndarray, timestamps: np.ndarray,
           timed: Iterable[tuple[float, T]]) -> Iterator[T]:
    """Yield each item of `timed` ((time, item) pairs, in time order, ties in the given order)
    once `engine` has ingested and flushed every frame of `frames` (uint8 (T, H, W, 3)) whose
    timestamp is <= the item's time. Frames are ingested once, in order; an item earlier than
    the first frame is yielded with nothing ingested (check `engine.frames_seen`)."""
    timestamps = np.asarray(timestamps)
    done = 0
    for t, item in sorted(timed, key=lambda pair: pair[0]):
        upto = int(np.searchsorted(timestamps, t, side="right"))
        if upto > done:
            feed(engine, frames[done:upto], timestamps[done:upto])
            done = upto
        yield item
