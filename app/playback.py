"""Pacing: which frames are due for ingest, from a file played in the browser or the webcam.

    playback = Playback(source.frames(fps=2.0, max_size=(1920, 1080)), fps=2.0)
    frames, times = playback.due(playhead=12.5, limit=64)   # decoded frames with time <= playhead
    for frames, times in playback.batches(12.5, limit=64, size=4): ...   # the same, a few at a time
    playback.report(check_report(stream=7, player="paused"), 12.5)      # what the page's player said
    playback.state                                          # "playing", "stopped" or "ended"
    playback.behind(ingested_s)                             # how far ingest lags the player
    t = playback.webcam_time(time.monotonic())              # a webcam frame's time, None if not due

A file: the browser reports the player's current time; `due` decodes frames up to it, at
most `limit` per call (one tick's bounded work), and holds back the first frame that is
not due yet. Frames come at full resolution (up to 1080p: 6 MB each), so a consumer takes
them a few at a time (`batches`) and lets each batch go before the next is decoded: what
is held is one batch and the frame held back. When the file ends or breaks mid-stream,
`ended` is set (and `notice` says why it broke); what was read stays read. The playhead
comes from the browser or the API: it must be a finite number of seconds >= 0
(`check_playhead`, once per tick, by its caller; NaN or infinity would fast-forward the whole file). The webcam:
frames are timed by the wall clock from the first one and sampled at `fps`. No engine and
no gradio here.

Stop and resume: `pause` (the Stop button, or the page's player reporting "paused") stops
reading until the page's player reports "playing" (or "ended") again; a stopped stream is
not an ended one. Seeks: memory holds a prefix of the stream, always. The playhead that
paces ingest is the furthest time the player reached (`playhead`); the player's own time
(`player_s`) may be behind it after a seek back (memory cannot un-see: ingest continues
from where it is when the player gets there). A seek forward is caught up: the frames in
between are read too, at most `limit` a call, and `seek` keeps where the player jumped
from and to, for the status line. Which stream a report is about is the page's business
(app.session compares `PlayerReport.stream` with its own).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from app.sources import Frames
from hermes.errors import HermesError, VideoError, check_choice, check_number

MAX_PLAYHEAD_S = 1e6  # far beyond any accepted video (Settings.max_video_s); the player never reports more
# what the page's player says at a tick (app.ui PLAYHEAD_JS): "loading" (no picture yet, e.g. a new
# source arriving) and "none" (no player on the page) change nothing; "seeked" may follow a state
PLAYER_STATES = ("playing", "paused", "ended", "loading", "none")
SEEKED = "seeked"
MAX_STREAM_ID = 2**53  # a stream id, as a browser's number holds it exactly


def check_playhead(playhead: object) -> float:
    """The player's time in seconds (None: 0); anything but a finite number in [0, MAX_PLAYHEAD_S]
    raises HermesError."""
    if playhead is None:
        return 0.0
    check_number("the player's time (playhead, seconds)", playhead, 0.0, MAX_PLAYHEAD_S)
    return float(playhead)


@dataclass(frozen=True)
class PlayerReport:
    """What the page's player said at a tick: which stream it was restarted for (-1: none yet),
    its state (one of PLAYER_STATES) and whether it jumped (seeked) since the last tick."""

    stream: int
    state: str
    seeked: bool = False


def check_report(stream: object, player: object) -> PlayerReport:
    """The page's report from its raw values (a number and "STATE" or "STATE seeked"); anything
    else raises HermesError naming what is wrong."""
    check_number("the player's stream id", stream, -1, MAX_STREAM_ID)  # a page's number may come as 3.0
    if stream != int(stream):
        raise HermesError(f"the player's stream id must be a whole number, got {stream!r}")
    if not isinstance(player, str):
        raise HermesError(f"the player's state must be text, got {type(player).__name__}")
    state, *rest = player.split() or [""]
    check_choice("the player's state", state, PLAYER_STATES)
    if rest not in ([], [SEEKED]):
        raise HermesError(f"the player's state must be one of {', '.join(PLAYER_STATES)}, optionally followed by "
                          f"{SEEKED!r}; got {player[:40]!r}")
    return PlayerReport(int(stream), state, bool(rest))


class Playback:
    def __init__(self, frames: Frames | None, fps: float) -> None:
        self.frames = frames  # the source's decoded (frame, time) pairs; None: nothing left to read
        self.fps = fps
        self.playhead = 0.0  # the furthest time the player has reported: ingest reads up to it
        self.player_s: float | None = None  # the page's player's own time at its last report
        self.stopped = False  # paused (Stop, or the player paused): nothing is read until it plays again
        self.seek: tuple[float, float] | None = None  # the player's last jump forward: (from, to) seconds
        self.waiting = False  # the page's player still plays another stream: not restarted for this one yet
        self.ended = False
        self.notice = ""  # why reading stopped early, if it did
        self._held: tuple[np.ndarray, float] | None = None  # decoded, not yet due
        self._webcam_t0: float | None = None
        self._webcam_last: float | None = None

    @property
    def reading(self) -> bool:
        """True while the file has frames left to read."""
        return self.frames is not None

    @property
    def state(self) -> str:
        """"ended" (nothing left to read, or reading broke), "stopped" (paused: resumes when the
        player plays), "waiting" (for the page's player to restart on this stream) or "playing"."""
        return "ended" if self.ended else "stopped" if self.stopped else "waiting" if self.waiting else "playing"

    @property
    def player_time(self) -> float:
        """Where the player is: its own time at its last report, else the furthest playhead (an API caller)."""
        return self.playhead if self.player_s is None else self.player_s

    def other_stream(self) -> None:
        """The page's player reported a time of another stream (the video before a restart, or a
        tick sent before it): until this stream's player has reported, the stream is waiting for it."""
        self.waiting = self.player_s is None and self.reading

    def report(self, report: PlayerReport, playhead: float) -> None:
        """The page's player at a tick, at `playhead` seconds (a `check_playhead` result), about
        this stream: a pause stops reading, a play resumes it; a jump forward past the furthest
        playhead is kept as `seek`."""
        t = playhead
        self.waiting = False
        if report.state in ("loading", "none"):
            return
        if report.seeked and t > self.playhead + 1.0 / self.fps:
            self.seek = (self.player_time, t)
        self.player_s = t
        self.stopped = report.state == "paused" and not self.ended

    def due(self, playhead: float, limit: int) -> tuple[list[np.ndarray], list[float]]:
        """Up to `limit` frames with time <= playhead (a `check_playhead` result), in order, with
        their times (none while stopped)."""
        frames: list[np.ndarray] = []
        times: list[float] = []
        if self.stopped:
            return frames, times
        self.playhead = max(self.playhead, playhead)
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

    def pause(self) -> None:
        """Stop reading until the player plays again (Stop); what was read stays. No effect once ended."""
        self.stopped = not self.ended

    def end(self, notice: str = "") -> None:
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
        self.stopped = False
        self.notice = notice or self.notice
