"""Pacing: which frames are due for ingest, from a file played in the browser or the webcam.

    playback = Playback(source.frames(fps=2.0, max_size=(1920, 1080)), fps=2.0)
    frames, times = playback.due(playhead=12.5, limit=64)   # decoded frames with time <= playhead
    for frames, times in playback.batches(12.5, limit=64, size=4): ...   # the same, a few at a time
    playback.behind(ingested_s)                             # how far ingest lags the player
    t = playback.webcam_time(time.monotonic())              # a webcam frame's time, None if not due

A file: the browser reports the player's current time; `due` decodes frames up to it, at
most `limit` per call (one tick's bounded work), and holds back the first frame that is
not due yet. Frames come at full resolution (up to 1080p: 6 MB each), so a consumer takes
them a few at a time (`batches`) and lets each batch go before the next is decoded: what
is held is one batch and the frame held back. When the file ends or breaks mid-stream,
`ended` is set (and `notice` says why it broke); what was read stays read. The playhead
comes from the browser or the API: it must be a finite number of seconds >= 0
(`check_playhead`; NaN or infinity would fast-forward the whole file). The webcam:
frames are timed by the wall clock from the first one and sampled at `fps`. No engine and
no gradio here.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from app.sources import Frames
from hermes.errors import VideoError, check_number

MAX_PLAYHEAD_S = 1e6  # far beyond any accepted video (Settings.max_video_s); the player never reports more


def check_playhead(playhead: object) -> float:
    """The player's time in seconds (None: 0); anything but a finite number in [0, MAX_PLAYHEAD_S]
    raises HermesError."""
    if playhead is None:
        return 0.0
    check_number("the player's time (playhead, seconds)", playhead, 0.0, MAX_PLAYHEAD_S)
    return float(playhead)


class Playback:
    def __init__(self, frames: Frames | None, fps: float) -> None:
        self.frames = frames  # the source's decoded (frame, time) pairs; None: nothing left to read
        self.fps = fps
        self.playhead = 0.0  # the furthest time the player has reported
        self.ended = False
        self.notice = ""  # why reading stopped early, if it did
        self._held: tuple[np.ndarray, float] | None = None  # decoded, not yet due
        self._webcam_t0: float | None = None
        self._webcam_last: float | None = None

    @property
    def reading(self) -> bool:
        """True while the file has frames left to read."""
        return self.frames is not None

    def due(self, playhead: float, limit: int) -> tuple[list[np.ndarray], list[float]]:
        """Up to `limit` frames with time <= playhead, in order, with their times."""
        self.playhead = max(self.playhead, check_playhead(playhead))
        frames: list[np.ndarray] = []
        times: list[float] = []
        while self.frames is not None and len(frames) < limit:
            if self._held is None:
                try:
                    self._held = next(self.frames)
                except StopIteration:
                    self._end()
                    break
                except VideoError as err:  # a file that breaks mid-stream: keep what was ingested
                    self._end(f"decoding stopped: {err}")
                    break
            frame, t = self._held
            if t > self.playhead + 1e-6:
                break
            frames.append(frame)
            times.append(t)
            self._held = None
        return frames, times

    def batches(self, playhead: float, limit: int, size: int) -> Iterator[tuple[list[np.ndarray], list[float]]]:
        """`due` in batches of at most `size` frames (up to `limit` in all); each batch is
        decoded only when the one before has been taken."""
        while limit > 0:
            frames, times = self.due(playhead, min(size, limit))
            if not frames:
                return
            limit -= len(frames)
            yield frames, times

    def stop(self, notice: str = "") -> None:
        """Read nothing more; the stream counts as ended (`notice`: why, for the status line)."""
        self._end(notice)

    def behind(self, ingested_s: float) -> float:
        """Seconds the player is ahead of the newest ingested frame, beyond one sampling step
        (0 when nothing is left to read)."""
        return max(0.0, self.playhead - ingested_s - 1.0 / self.fps) if self.reading else 0.0

    def webcam_time(self, now: float) -> float | None:
        """The stream time of a webcam frame arriving at `now` (monotonic seconds), or None
        when it comes sooner than 1 / fps after the last frame kept."""
        if self._webcam_t0 is None:
            self._webcam_t0 = now
        t = round(now - self._webcam_t0, 3)
        if self._webcam_last is not None and t < self._webcam_last + 1.0 / self.fps - 1e-3:
            return None
        self._webcam_last = self.playhead = t
        return t

    def _end(self, notice: str = "") -> None:
        self.frames = None
        self._held = None
        self.ended = True
        self.notice = notice or self.notice
