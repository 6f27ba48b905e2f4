"""One browser session's state: its engine(s), the video it plays, telemetry and chat.

No gradio and no tensors here: the UI calls these methods and draws what they return.

    store = SessionStore(Settings())
    s = store.get("session-hash")            # created lazily; SessionsFull when at the cap
    s.load_example("shapestream-901")        # or s.load_file(path) / s.add_webcam_frame(...)
    s.advance(playhead=12.5)                 # ingest every frame up to the player's time
    for text in s.ask("which shape appeared first ?"): ...
    s.trace()                                # events + Q&A, JSON-ready
    s.study(budget=256)                      # the mechanistic study on the stream so far

Pacing: the browser reports the player's current time; `advance` decodes and ingests
frames up to it (at most `max_chunks_per_tick` chunks per call), so plots describe what
has been seen up to the playhead; `behind_s` says how far ingest lags when it cannot keep
up. An answer covers the complete chunks in memory (frames of a partial chunk wait for it
to fill, as in training); the ground truth is taken at the last frame in memory.
"""

from __future__ import annotations

import copy
import json
import os
import queue
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import hermes
from analysis.mechanistic import Study, distance_edges, hermes_tiers, study_stream, summarise
from app.settings import Settings
from hermes import synthetic
from hermes.backbones import Backbone, load_backbone
from hermes.engine import check_question
from hermes.errors import HermesError, VideoError
from hermes.examples import EXAMPLES
from hermes.telemetry import ChunkEvent, QuestionEvent
from hermes.video import check_complete, iter_frames, probe

ENGINE_FIELDS = ("budget", "chunk_frames", "fps", "shallow_ratio", "deep_ratio", "smoothing", "summary", "reindex")


@dataclass(frozen=True)
class Controls:
    """What the user can change; a change restarts the stream."""

    model: str = "hermes-tiny"
    policy: str = "hermes"
    compare: str = ""  # a second policy to run side by side ("" = off)
    budget: int = 256
    chunk_frames: int = 16
    fps: float = 2.0
    shallow_ratio: float = 0.1
    deep_ratio: float = 0.7
    smoothing: bool = True
    summary: bool = True
    reindex: str = "lazy"

    def engine_kwargs(self) -> dict:
        return {**{name: getattr(self, name) for name in ENGINE_FIELDS}, "telemetry_queries": True}


@dataclass
class Source:
    """What is playing: a file (example or upload) or the webcam."""

    name: str
    path: Path | None = None  # None for the webcam
    duration_s: float = 0.0
    world: list | None = None  # ShapeStream objects: ground truth for questions
    suggestions: list[dict] = field(default_factory=list)  # {question, answer, time, category}


def list_examples() -> dict[str, Path]:
    """name -> video path of the bundled example streams (ShapeStream first)."""
    videos = sorted(EXAMPLES.glob("*.mp4"), key=lambda p: (not p.stem.startswith("shapestream"), p.stem))
    return {p.stem: p for p in videos}


_BACKBONES: dict[str, Backbone] = {}
_BACKBONES_LOCK = threading.Lock()


def shared_backbone(model: str, allowed: list[str]) -> Backbone:
    """Weights are loaded once per process and shared by every session's engines."""
    if model not in allowed:
        raise HermesError(f"model {model!r} is not offered here; choose one of {', '.join(allowed)}")
    with _BACKBONES_LOCK:
        if model not in _BACKBONES:
            _BACKBONES[model] = load_backbone(model)
        return _BACKBONES[model]


@dataclass
class Lane:
    """One engine and the telemetry it produced (two lanes in compare mode)."""

    engine: hermes.StreamEngine
    events: list[ChunkEvent] = field(default_factory=list)
    full_kv: list[int] = field(default_factory=list)  # bytes a cache without eviction would hold, per chunk

    @property
    def policy(self) -> str:
        return self.engine.policy.name


class Session:
    def __init__(self, settings: Settings, controls: Controls | None = None) -> None:
        self.settings = settings
        self.lock = threading.RLock()
        self.touched = time.monotonic()
        self.source: Source | None = None
        self.controls = controls or Controls(model=settings.models[0])
        self.chat: list[dict] = []  # {"question", "answers": {policy: text}, "truth", "time", "ttft_ms"}
        self.notice = ""
        self.uploads: list[Path] = []  # files received from the browser, deleted by close()
        self._build()

    # ---- set-up -------------------------------------------------------------------------
    def _lanes(self, controls: Controls) -> list[Lane]:
        """Engines for these controls (raises HermesError on bad settings, changing nothing)."""
        backbone = shared_backbone(controls.model, self.settings.models)
        kw = controls.engine_kwargs()
        policies = [controls.policy] + ([controls.compare] if controls.compare else [])
        return [Lane(hermes.load_engine(backbone, policy=p, **kw)) for p in policies]

    def _build(self) -> None:
        self.lanes = self._lanes(self.controls)
        self.times: list[float] = []  # time of every ingested frame, by stream index
        self._frames: Iterator[tuple[np.ndarray, float]] | None = None
        self._next: tuple[np.ndarray, float] | None = None  # decoded, not yet due
        self.playhead = 0.0
        self.ended = False
        self._webcam_t0: float | None = None

    def configure(self, controls: Controls) -> None:
        """New settings: new engines, and the current source restarts from its beginning.
        Bad settings raise HermesError and leave the running stream as it was."""
        with self.lock:
            lanes = self._lanes(controls)
            self.controls = controls
            self.lanes = lanes
            if self.source is not None:
                self._start(self.source)

    def _start(self, source: Source) -> None:
        for lane in self.lanes:
            lane.engine.reset()
            lane.events.clear()
            lane.full_kv.clear()
        self.source = source
        self.times = []
        self.chat = []
        self.playhead = 0.0
        self.ended = False
        self._next = None
        self._webcam_t0 = None
        self._frames = self._open(source.path) if source.path else None

    def _open(self, path: Path) -> Iterator[tuple[np.ndarray, float]]:
        return iter_frames(path, self.controls.fps, max_side=self.settings.decode_max_side)

    def load_example(self, name: str) -> Source:
        examples = list_examples()
        if name not in examples:
            raise HermesError(f"unknown example {name!r}; choose one of {', '.join(examples)}")
        path = examples[name]
        meta_path = path.with_suffix(".json")
        world, suggestions = None, []
        if meta_path.exists():
            meta = json.loads(meta_path.read_text())
            world, _ = synthetic.world(meta["seed"], meta["seconds"])
            suggestions = meta["questions"]
        with self.lock:
            self._start(Source(name, path, probe(path).duration_s, world, suggestions))
            return self.source

    def load_file(self, path: str | Path, name: str | None = None, uploaded: bool = False) -> Source:
        """An uploaded file. Checked (size, container, resolution, duration, complete data,
        first frame decodes) before anything already ingested is dropped: a bad file raises
        VideoError and changes nothing. `uploaded`: the file is the browser's upload (in
        gradio's temp dir) and is deleted when the session closes; other files never are."""
        p = Path(path)
        if not p.is_file():
            raise VideoError("the upload did not arrive: no file was received")
        size_mb = p.stat().st_size / 2**20
        if size_mb > self.settings.max_upload_mb:
            raise VideoError(f"the file is too large ({size_mb:.0f} MB; at most {self.settings.max_upload_mb} MB)")
        info = probe(p)
        if max(info.width, info.height) > self.settings.max_side_px:
            raise VideoError(f"the video's frames are {info.width}x{info.height} pixels; at most "
                             f"{self.settings.max_side_px} pixels a side are accepted")
        if info.duration_s is not None and info.duration_s > self.settings.max_video_s:
            raise VideoError(f"the video is too long ({info.duration_s / 60:.0f} min; at most "
                             f"{self.settings.max_video_s // 60} min)")
        check_complete(p)
        try:
            next(self._open(p))
        except StopIteration:
            raise VideoError("the video has no frames that could be decoded") from None
        with self.lock:
            if uploaded:
                self.uploads.append(p)
            self._start(Source(name or p.name, p, info.duration_s or 0.0))
            return self.source

    def stop(self) -> dict:
        """Stop ingesting the current source; everything already in memory stays."""
        with self.lock:
            self._frames = None
            self._next = None
            self.ended = True
            return self.status()

    def close(self) -> None:
        """Free the session: delete the files it uploaded (they live in gradio's temp dir)."""
        with self.lock:
            self._frames = None
            for p in self.uploads:
                if _in_temp_dir(p):
                    p.unlink(missing_ok=True)
            self.uploads.clear()

    def start_webcam(self) -> Source:
        with self.lock:
            self._start(Source("webcam"))
            return self.source

    # ---- ingest ---------------------------------------------------------------------------
    def _ingest(self, frames: list[np.ndarray], times: list[float]) -> None:
        batch = np.stack(frames)
        for lane in self.lanes:
            for event in lane.engine.ingest(batch, times):
                self._record(lane, event)
        self.times += times

    def _record(self, lane: Lane, event: ChunkEvent) -> None:
        lane.events.append(event)
        per_token = event.kv_bytes / max(1, int(event.cache_lengths.sum()) + lane.engine.prefix_tokens
                                         * len(event.cache_lengths))
        tokens_full = (event.first_frame + event.n_frames) * lane.engine.backbone.tokens_per_frame + event.chunk + 1
        lane.full_kv.append(int(per_token * len(event.cache_lengths) * (tokens_full + lane.engine.prefix_tokens)))

    def advance(self, playhead: float) -> dict:
        """Ingest every frame with time <= playhead (bounded work per call); returns status."""
        with self.lock:
            self.touched = time.monotonic()
            self.playhead = max(self.playhead, float(playhead or 0.0))
            if self._frames is None:
                return self.status()
            chunk = self.controls.chunk_frames
            budget = chunk * self.settings.max_chunks_per_tick
            frames, times = [], []
            while len(frames) < budget:
                if self._next is None:
                    try:
                        self._next = next(self._frames)
                    except StopIteration:
                        self._frames = None
                        self.ended = True
                        break
                    except VideoError as err:  # a file that breaks mid-stream: keep what was ingested
                        self._frames = None
                        self.ended = True
                        self.notice = f"decoding stopped: {err}"
                        break
                frame, t = self._next
                if t > self.playhead + 1e-6:
                    break
                frames.append(frame)
                times.append(t)
                self._next = None
            if frames:
                self._ingest(frames, times)
            if self.ended:
                for lane in self.lanes:
                    for event in lane.engine.flush():
                        self._record(lane, event)
            return self.status()

    def add_webcam_frame(self, frame: np.ndarray) -> dict:
        """One webcam frame (RGB uint8), timed by the wall clock, downscaled, sampled at fps."""
        with self.lock:
            now = self.touched = time.monotonic()
            if self.source is None or self.source.path is not None:
                self._start(Source("webcam"))
            if self._webcam_t0 is None:
                self._webcam_t0 = now
            t = round(now - self._webcam_t0, 3)
            if self.times and t < self.times[-1] + 1.0 / self.controls.fps - 1e-3:
                return self.status()  # sample at the configured fps
            self.playhead = t
            self._ingest([_downscale(frame, self.settings.webcam_size)], [t])
            return self.status()

    # ---- questions ------------------------------------------------------------------------
    def memory_time(self) -> float | None:
        """Time of the newest frame in the (first) engine's cache."""
        events = self.lanes[0].events
        return events[-1].t_end if events else None

    def ground_truth(self, question: str) -> str | None:
        """The answer from a ShapeStream example's event log at the newest frame in memory."""
        t = self.memory_time()
        if self.source is None or self.source.world is None or t is None:
            return None
        found = synthetic.answer(self.source.world, question, t)
        return found[0] if found else None

    def ask(self, question: str) -> Iterator[dict]:
        """Stream the answer(s): yields the growing chat entry after every decoded piece."""
        if isinstance(question, str) and len(question.strip()) > self.settings.max_question_chars:
            raise HermesError(f"the question is too long ({len(question.strip())} characters; at most "
                              f"{self.settings.max_question_chars})")
        question = check_question(question)  # the engine's rules: not empty, valid UTF-8, no control characters
        with self.lock:
            self.touched = time.monotonic()
            if self.memory_time() is None:
                raise HermesError("nothing is in memory yet: start a video or the webcam and wait for the "
                                  f"first chunk ({self.controls.chunk_frames} frames), then ask")
            entry = {"question": question, "time": self.memory_time(),
                     "truth": self.ground_truth(question), "answers": {}, "ttft_ms": {}}
            self.chat.append(entry)
            for lane in self.lanes:
                entry["answers"][lane.policy] = ""
                for piece in lane.engine.ask_stream(question, max_new_tokens=self.settings.max_new_tokens):
                    entry["answers"][lane.policy] += piece
                    yield entry
                entry["answers"][lane.policy] = lane.engine.last_answer.text
                entry["ttft_ms"][lane.policy] = round(lane.engine.last_answer.ttft_s * 1e3, 1)
            yield entry

    # ---- study ----------------------------------------------------------------------------
    def study(self, budget: int | None = None, bins: int = 32) -> Study:
        """analysis.mechanistic on this session's stream so far: the file is decoded again up to
        the newest frame in memory and streamed through a FIFO cache of `budget` tokens per
        layer (default: the session's budget); the chat's questions are asked where they were
        asked, with the example's suggested questions up to now (when there are none, or none
        came after the window filled: the model's local pseudo-query after every chunk).
        Raises HermesError with what to do when it cannot run."""
        with self.lock:
            source, seen = self.source, self.memory_time()
            if source is not None and source.path is None:
                raise HermesError("the study reads the video again, and the webcam keeps no frames: "
                                  "play an example or upload a file")
            if source is None or seen is None:
                raise HermesError("nothing has streamed yet: play a video, wait for the first chunk, "
                                  "then run the study")
            budget = int(budget or self.controls.budget)
            if not 16 <= budget <= 65536:
                raise HermesError(f"the study's budget must be 16-65536 tokens per layer, got {budget}")
            questions = [(float(e["time"]), e["question"]) for e in self.chat]
            questions += [(float(q["time"]), q["question"]) for q in source.suggestions if float(q["time"]) <= seen]
            backbone = shared_backbone(self.controls.model, self.settings.models)
            chunk = self.controls.chunk_frames
            frames_iter = self._open(source.path)
        frames, times = [], []
        for frame, t in frames_iter:
            if t > seen + 1e-6:
                break
            frames.append(frame)
            times.append(t)
        local = backbone.pseudo_queries["local"]
        every_chunk = [(times[i], local) for i in range(chunk - 1, len(times), chunk)]
        frames, times = np.stack(frames), np.array(times)
        profiles, summaries = study_stream(backbone, frames, times, questions or every_chunk, budget, bins, chunk)
        if not profiles and questions:  # asked before the window filled: the pseudo-query after every chunk
            profiles, summaries = study_stream(backbone, frames, times, every_chunk, budget, bins, chunk)
        if not profiles:
            held = len(frames) * backbone.tokens_per_frame
            raise HermesError(f"no question found the FIFO cache full: the stream so far holds {held} video tokens, "
                              f"and the study needs more than the budget ({budget}) before a question; play further "
                              "or choose a smaller budget")
        tiers = hermes_tiers(backbone.n_layers, shallow_ratio=self.controls.shallow_ratio,
                             deep_ratio=self.controls.deep_ratio)
        return summarise(profiles, summaries, distance_edges(budget, bins), backbone.tokens_per_frame, tiers)

    # ---- views ----------------------------------------------------------------------------
    def questions(self, lane: int = 0) -> list[QuestionEvent]:
        return list(self.lanes[lane].engine.questions) if lane < len(self.lanes) else []

    def status(self) -> dict:
        ingested = self.times[-1] if self.times else 0.0
        lane = self.lanes[0]
        stats = lane.engine.stats()
        behind = max(0.0, self.playhead - ingested - 1.0 / self.controls.fps) if self._frames is not None else 0.0
        return {"source": self.source.name if self.source else None,
                "duration_s": self.source.duration_s if self.source else 0.0,
                "playhead_s": round(self.playhead, 2), "ingested_s": round(ingested, 2),
                "frames": len(self.times), "pending_frames": stats["pending_frames"], "chunks": len(lane.events),
                "behind_s": round(behind, 2), "ended": self.ended, "notice": self.notice,
                "kv_bytes": stats["kv_bytes"], "cache_lengths": stats["cache_lengths"],
                "policies": [ln.policy for ln in self.lanes]}

    def trace(self) -> dict:
        """Everything this session saw and answered, JSON-ready."""
        with self.lock:
            return {"source": self.source.name if self.source else None, "controls": self.controls.__dict__,
                    "frame_times": self.times,
                    "lanes": [{"policy": lane.policy, "chunks": [e.to_dict() for e in lane.events],
                               "questions": [q.to_dict() for q in lane.engine.questions]} for lane in self.lanes],
                    "chat": self.chat}


def _in_temp_dir(path: Path) -> bool:
    """A second guard on deleting uploads: only files under the system / gradio temp dir,
    and never the bundled examples (a checkout may itself live under /tmp)."""
    resolved = path.resolve()
    if resolved.is_relative_to(EXAMPLES.resolve()):
        return False
    roots = {Path(tempfile.gettempdir()).resolve()}
    if os.environ.get("GRADIO_TEMP_DIR"):
        roots.add(Path(os.environ["GRADIO_TEMP_DIR"]).resolve())
    return any(resolved.is_relative_to(root) for root in roots)


def _downscale(frame: np.ndarray, longest: int) -> np.ndarray:
    """Nearest-neighbour downscale so the longer side is at most `longest` pixels."""
    h, w = frame.shape[:2]
    step = int(np.ceil(max(h, w) / longest))
    return np.ascontiguousarray(frame[::step, ::step, :3]) if step > 1 else frame[..., :3]


def in_one_thread(items: Iterator[dict]) -> Iterator[dict]:
    """Run a generator to the end in one worker thread and relay its items.

    The engine holds its lock across an answer's pieces, and a lock must be released by the
    thread that took it; gradio resumes a generator handler in whichever worker is free, so
    the answer is produced in one thread and handed over through a queue."""
    relay: queue.Queue = queue.Queue()
    done = object()

    def produce() -> None:
        try:
            for item in items:
                relay.put(copy.deepcopy(item))
        except BaseException as err:  # handed to the consumer, raised there
            relay.put(err)
        relay.put(done)

    threading.Thread(target=produce, daemon=True).start()
    while (item := relay.get()) is not done:
        if isinstance(item, BaseException):
            raise item
        yield item


class SessionsFull(HermesError):
    """Raised when the app already serves its maximum number of sessions."""


class SessionStore:
    """session_hash -> Session, created lazily, freed on unload or after idling."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()

    def get(self, key: str) -> Session:
        self.sweep()
        with self._lock:
            if key not in self._sessions:
                if len(self._sessions) >= self.settings.max_sessions:
                    raise SessionsFull(f"The studio is full ({self.settings.max_sessions} people are using it). "
                                       "Please try again in a few minutes.")
                self._sessions[key] = Session(self.settings)
            return self._sessions[key]

    def peek(self, key: str) -> Session | None:
        """The session if it exists (never creates one)."""
        with self._lock:
            return self._sessions.get(key)

    def free(self, key: str) -> None:
        with self._lock:
            session = self._sessions.pop(key, None)
        if session is not None:
            session.close()

    def sweep(self) -> None:
        """Free sessions idle for longer than the timeout."""
        now = time.monotonic()
        with self._lock:
            idle = [k for k, s in self._sessions.items() if now - s.touched > self.settings.idle_timeout_s]
            freed = [self._sessions.pop(k) for k in idle]
        for session in freed:
            session.close()

    def __len__(self) -> int:
        return len(self._sessions)
