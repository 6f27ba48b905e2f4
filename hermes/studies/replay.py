"""Replay a recorded stream: ingest up to each question's time, then ask.

    for question in replay(engine, frames, timestamps, [(q.time, q) for q in questions]):
        answer = engine.ask(question.question)
    for text in replay_frames(engine, iter_frames("clip.mp4", fps=2), [(t, text), ...]): ...   # as decoded
    feed(engine, frames, timestamps)          # all of it, the partial chunk flushed

Every study that asks questions along a stream does this: the engine sees exactly the frames
shown at or before the question's time (and the partial chunk is flushed), nothing after.
`replay_frames` does it on frames as they are decoded, holding only a few at a time, and
reads none after the last question.
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
    return replay_frames(engine, zip(frames, np.asarray(timestamps), strict=True), timed, batch=None)


def replay_frames(engine: StreamEngine, frames: Iterable[tuple[np.ndarray, float]], timed: Iterable[tuple[float, T]],
                  batch: int | None = 4) -> Iterator[T]:
    """`replay` on (frame, time) pairs in time order, as they come (a decoder's): each item
    of `timed` is yielded once every frame up to its time is ingested and flushed, which is
    known when a later frame arrives or the frames end. Frames are handed to the engine
    `batch` at a time (None: all of those before the next item at once, as `replay` does),
    so at most `batch` frames and the engine's partial chunk are held; after the last item
    no frame is read."""
    due = sorted(timed, key=lambda pair: pair[0])
    held: list[np.ndarray] = []
    times: list[float] = []
    fresh = False  # frames ingested since the last flush

    def hand_over() -> None:
        nonlocal fresh
        if held:
            engine.ingest(np.stack(held), times)
            held.clear()
            times.clear()
            fresh = True

    def reached() -> Iterator[T]:  # every frame up to the next item is in: flush, then yield it
        nonlocal fresh
        hand_over()
        if fresh:
            engine.flush()
            fresh = False
        yield due.pop(0)[1]

    for frame, t in frames:
        while due and t > due[0][0]:
            yield from reached()
        if not due:
            return
        held.append(frame)
        times.append(float(t))
        if batch is not None and len(held) >= batch:
            hand_over()
    while due:
        yield from reached()
