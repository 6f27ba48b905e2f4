"""One browser session's state: its engine(s), the source it plays, telemetry and chat.

No gradio and no tensors here: the UI calls these methods and draws what they return.

    s = Session(Settings())                  # app.store.SessionStore keeps one per browser tab
    s.load_example("shapestream-901")        # or s.load_file(path) / s.add_webcam_frame(...)
    s.advance(playhead=12.5)                 # ingest every frame up to the player's time
    for entry in s.ask("which shape appeared first ?"): ...
    s.trace()                                # events + Q&A, JSON-ready
    s.study(budget=256)                      # the mechanistic study on the stream so far

Which frames are due comes from app.playback (bounded work per call; `behind_s` in the
status says how far ingest lags; a stop is a pause the player's play resumes), what plays and
its checks from app.sources. Every start (play, upload, Apply, webcam) is a new stream with a
new `stream` id; the page's player reports the id it was restarted for, and `advance` ignores
a time reported for another stream (the old video's, before the restart). An answer
covers the complete chunks in memory (frames of a partial chunk wait for it to fill, as in
training); the ground truth is taken at the last frame in memory.
"""

from __future__ import annotations

import bisect
import itertools
import json
import math
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

import hermes
from app import model_card, render, sources
from app.playback import Playback, PlayerReport, check_playhead
from app.settings import MAX_BUDGET_FRAMES, STUDY_FRAMES, Controls, Settings
from app.sources import Source
from app.study import span_text
from hermes.backbones import Backbone, frames_for_tokens, load_backbone
from hermes.errors import HermesError
from hermes.inputs import check_question
from hermes.quant import describe
from hermes.studies.mechanistic import Study, counted, distance_edges, hermes_tiers, study_stream, summarise
from hermes.telemetry import ChunkEvent, QuestionEvent

if TYPE_CHECKING:
    import plotly.graph_objects as go

# Weights are loaded once per process and shared by every session's engines (and studies).
# They live here, next to the one place that builds engines, rather than in app.store: the
# store would then import sessions and sessions the store.
_BACKBONES: dict[str, Backbone] = {}
_BACKBONES_LOCK = threading.Lock()
# every start of a source (a play, an upload, Apply, the webcam) is a new stream, with an id no
# other start in this process has had: the page's player says which stream its time belongs to
_STREAM_IDS = itertools.count(1)


def shared_backbone(model: str, allowed: list[str]) -> Backbone:
    """The process's one copy of `model`'s weights (loaded on first use); only allowlisted models."""
    if model not in allowed:
        raise HermesError(f"model {model!r} is not offered here; choose one of {', '.join(allowed)}")
    with _BACKBONES_LOCK:
        if model not in _BACKBONES:
            _BACKBONES[model] = load_backbone(model, quantize="auto")  # HERMES_DEVICE / HERMES_DTYPE / HERMES_QUANTIZE
        return _BACKBONES[model]


def runs_on(model: str, st: dict) -> str:
    """"hermes-smol on cpu in float32" (", int8 weights" when the decoder's are): from status()."""
    return f"{model} on {st['device']} in {describe(st['dtype'], st.get('weights', st['dtype']))}"


def json_ready(value: object) -> object:
    """`value` with numpy arrays and numbers made plain and every NaN or infinity made None, so
    that strict JSON can hold it (json.dumps would write NaN / Infinity, which JSON.parse refuses)."""
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [json_ready(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def strict_json(value: object) -> str:
    """`value` as strict JSON (RFC 8259), non-finite numbers as null; raises on anything else JSON lacks."""
    return json.dumps(json_ready(value), allow_nan=False, ensure_ascii=False, indent=1)


@dataclass
class Lane:
    """One engine and the telemetry it produced (two lanes in compare mode)."""

    engine: hermes.StreamEngine
    events: list[ChunkEvent] = field(default_factory=list)
    full_kv: list[int] = field(default_factory=list)  # bytes a cache without eviction would hold, per chunk

    @property
    def policy(self) -> str:
        return self.engine.policy.name

    def record(self, event: ChunkEvent) -> None:
        """Keep the event, and what a cache without eviction would hold after it."""
        self.events.append(event)
        layers, prefix = len(event.cache_lengths), self.engine.prefix_tokens
        per_token = event.kv_bytes / max(1, int(event.cache_lengths.sum()) + prefix * layers)
        backbone = self.engine.backbone  # + one newline per chunk where the layout has one
        tokens_full = ((event.first_frame + event.n_frames) * backbone.tokens_per_frame
                       + (event.chunk + 1) * int(backbone.newline_per_chunk))
        self.full_kv.append(int(per_token * layers * (tokens_full + prefix)))

    def reset(self) -> None:
        self.engine.reset()
        self.events.clear()
        self.full_kv.clear()


class Session:
    def __init__(self, settings: Settings, controls: Controls | None = None) -> None:
        self.settings = settings
        self.lock = threading.RLock()
        self.touched = time.monotonic()
        self._requests = 0  # requests at work in the session now (`working`)
        self._requests_lock = threading.Lock()
        self.source: Source | None = None
        self.controls = controls or Controls(model=settings.models[0])
        self.chat: list[dict] = []  # {"question", "time", "player_s", "answers": {policy: text}, "ttft_ms", "truth",
        #                             "truth_note", "notes"}: time: the newest frame in memory, which the answer is
        #                             about; player_s: where the player was; truth None with truth_note saying
        #                             why; notes: warnings (unknown words)
        self.studied: model_card.Measured | None = None  # the Study tab's last measurement (app.model_card.findings)
        self.files = sources.SessionFiles()  # the folder this session owns: its uploads, deleted by close()
        self.upload: Path | None = None  # the session's copy of the upload playing, if one is
        self.lanes = self._lanes(self.controls)
        self.times: list[float] = []  # time of every ingested frame, by stream index
        self.playback = Playback(None, self.controls.fps)
        self.stream = 0  # the id of the stream playing (a new one at every start; 0: none yet)

    # ---- set-up -------------------------------------------------------------------------
    def _lanes(self, controls: Controls) -> list[Lane]:
        """Engines for these controls (raises HermesError on bad settings, changing nothing)."""
        backbone = shared_backbone(controls.model, self.settings.models)
        return [Lane(hermes.load_engine(backbone, policy=p, policy_params=controls.policy_params(p),
                                        **controls.engine_config(backbone.chunk_tokens)))
                for p in controls.policy_names()]

    def configure(self, controls: Controls) -> None:
        """New settings: new engines, and the current source restarts from its beginning.
        Bad settings raise HermesError and leave the running stream as it was."""
        with self.lock:
            self.lanes = self._lanes(controls)
            self.controls = controls
            if self.source is not None:
                self._start(self.source)

    def _start(self, source: Source) -> Source:
        if self.upload is not None and source.path != self.upload:  # the upload playing is replaced
            self.files.remove(self.upload)
            self.upload = None
        for lane in self.lanes:
            lane.reset()
        self.source = source
        self.times = []
        self.chat = []
        self.stream = next(_STREAM_IDS)
        self.playback = Playback(source.frames(self.controls.fps, self.settings.decode_max_size), self.controls.fps)
        return source

    def load_example(self, name: str) -> Source:
        source = sources.example(name)
        with self.lock:
            return self._start(source)

    def load_file(self, path: str | Path, name: str | None = None, uploaded: bool = False) -> Source:
        """A file to play, checked (app.sources.upload) before anything already ingested is
        dropped: a bad file raises VideoError and changes nothing. `uploaded`: the file is the
        browser's upload (in gradio's cache, where another session's identical upload shares
        its path): the session plays its own copy, in its own folder, deleted when the next
        source starts or the session closes; the file at `path` is never deleted."""
        if not uploaded:
            source = sources.upload(path, self.settings, self.controls.fps, name=name)
            with self.lock:
                return self._start(source)
        with self.lock:
            mine = self.files.adopt(path)
        try:
            source = sources.upload(mine, self.settings, self.controls.fps, name=name or Path(path).name)
        except BaseException:
            with self.lock:
                self.files.remove(mine)
            raise
        with self.lock:
            self._start(source)
            self.upload = mine
            return source

    def start_webcam(self) -> Source:
        with self.lock:
            return self._start(sources.webcam())

    def stop(self) -> dict:
        """Stop ingesting the current source until the page's player plays again (a stop is a
        pause, not an end: see app.playback); everything already in memory stays."""
        with self.lock:
            self.playback.pause()
            return self.status()

    @contextmanager
    def working(self) -> Iterator[None]:
        """A request at work in the session (app.ui's handler wraps every one): the session is
        busy until it ends, and its end counts as activity. A request waiting for the session's
        lock behind a long answer is at work too, so the idle sweep never frees a session
        between one request releasing the lock and the next taking it."""
        with self._requests_lock:
            self._requests += 1
        try:
            yield
        finally:
            with self._requests_lock:
                self._requests -= 1
                self.touched = time.monotonic()

    def busy(self) -> bool:
        """True while a request is working in the session (an ingest, an answer, a restart, or
        one waiting for its lock): a session in use is not idle, however long ago it began."""
        if self._requests:
            return True
        if not self.lock.acquire(blocking=False):
            return True
        self.lock.release()
        return False

    def close(self) -> None:
        """Free the session: delete its folder (its copies of uploads) and nothing else."""
        with self.lock:
            self.playback.end()
            self.files.close()
            self.upload = None

    # ---- ingest ---------------------------------------------------------------------------
    def _ingest(self, frames: list[np.ndarray], times: list[float]) -> None:
        batch = np.stack(frames)
        for lane in self.lanes:  # every lane takes the batch or none does (compare mode holds the same frames)
            lane.engine.check_room(len(frames))
        for lane in self.lanes:
            for event in lane.engine.ingest(batch, times):
                lane.record(event)
        self.times += times

    def advance(self, playhead: float, report: PlayerReport | None = None) -> dict:
        """Ingest every frame with time <= playhead (bounded work per call); returns status.
        `report`: the page's player (app.playback.check_report): a time that belongs to another
        stream (the video before a restart, or a tick sent before it) is ignored, and the
        player's pause, play and seeks are taken into account. Without one (an API caller), the
        playhead alone paces ingest."""
        with self.lock:
            self.touched = time.monotonic()
            playhead = check_playhead(playhead)  # a bad playhead is refused; the stream goes on
            if report is not None:
                if report.stream != self.stream:  # not this stream's player (yet): read nothing
                    self.playback.other_stream()
                    return self.status()
                self.playback.report(report, playhead)
            was_reading = self.playback.reading
            limit = self.per_tick()
            try:
                for frames, times in self.playback.batches(playhead, limit, self.settings.ingest_batch):
                    self._ingest(frames, times)  # a few full-resolution frames at a time
                if was_reading and self.playback.ended:  # the file ended: its last partial chunk too
                    for lane in self.lanes:
                        for event in lane.engine.flush():
                            lane.record(event)
            except Exception as err:  # e.g. the model's positions are used up: retrying would fail on every
                why = str(err) if isinstance(err, HermesError) else type(err).__name__  # tick, so read no more
                self.playback.end(notice=f"ingest stopped: {why}")
                if isinstance(err, HermesError):
                    raise HermesError(f"ingest stopped: {err}. What is in memory stays and can be asked about") from err
                raise
            return self.status()

    def per_tick(self) -> int:
        """The most frames one call of `advance` reads (bounded work per tick)."""
        return self.controls.chunk_frames * self.settings.max_chunks_per_tick

    def add_webcam_frame(self, frame: np.ndarray) -> dict:
        """One webcam frame (RGB uint8), timed by the wall clock, downscaled, sampled at fps."""
        with self.lock:
            now = self.touched = time.monotonic()
            if self.source is None or self.source.path is not None:
                self._start(sources.webcam())
            t = self.playback.webcam_time(now)
            if t is not None:
                self._ingest([sources.downscale(frame, self.settings.webcam_size)], [t])
            return self.status()

    # ---- questions ------------------------------------------------------------------------
    def memory_time(self) -> float | None:
        """Time of the newest frame in the (first) engine's cache."""
        events = self.lanes[0].events
        return events[-1].t_end if events else None

    def truth(self, question: str) -> model_card.Truth:
        """The ground truth at the newest frame in memory, or why there is none (no event log, not
        a ShapeStream question, not applicable now: see app.model_card.ground_truth)."""
        t = self.memory_time()
        if self.source is None or t is None:
            return model_card.Truth(None, "none yet: nothing is in memory")
        return model_card.ground_truth(self.source.world, question, t)

    def suggestions(self) -> list[str]:
        """The example's suggested questions that apply at the newest frame in memory (each once;
        none before the first chunk, none for a video without an event log)."""
        source = self.source
        return [] if source is None else model_card.valid_questions(
            source.world, [q["question"] for q in source.suggestions], self.memory_time())

    def unknown_words(self, question: str) -> list[str]:
        """The words of `question` the loaded model's word-level vocabulary lacks ([] for a
        sub-word tokenizer)."""
        backbone = shared_backbone(self.controls.model, self.settings.models)
        return model_card.out_of_vocabulary(question, backbone.tokenizer)

    def ask(self, question: str) -> Iterator[dict]:
        """Stream the answer(s): yields the growing chat entry after every decoded piece."""
        if not isinstance(question, str):
            raise HermesError(f"the question must be text, got {type(question).__name__}")
        question, limit = question.strip(), self.settings.max_question_chars  # the app's limit, the one stated
        if len(question) > limit:
            raise HermesError(f"the question is too long ({len(question)} characters; at most {limit})")
        question = check_question(question)  # the engine's rules: not empty, valid UTF-8, no control characters
        with self.lock:
            self.touched = time.monotonic()
            if self.memory_time() is None:
                raise HermesError("nothing is in memory yet: start a video or the webcam and wait for the "
                                  f"first chunk ({self.controls.chunk_frames} frames), then ask")
            truth, unknown = self.truth(question), self.unknown_words(question)
            entry = {"question": question, "time": self.memory_time(), "player_s": round(self.playback.player_time, 2),
                     "truth": truth.answer, "truth_note": truth.note, "answers": {}, "ttft_ms": {},
                     "notes": [model_card.unknown_words_note(self.controls.model, unknown)] if unknown else []}
            self.chat.append(entry)
            for lane in self.lanes:
                entry["answers"][lane.policy] = ""
                for piece in lane.engine.ask_stream(question, max_new_tokens=self.settings.max_new_tokens):
                    entry["answers"][lane.policy] += piece
                    yield entry
                entry["answers"][lane.policy] = lane.engine.last_answer.text
                entry["ttft_ms"][lane.policy] = round(lane.engine.last_answer.ttft_s * 1e3, 1)
            yield entry

    def accuracy(self) -> tuple[dict[str, tuple[int, int]], int]:
        """The running accuracy per policy over the chat's questions with a ground truth (a
        ShapeStream example's): ({policy: (right, graded)} for every lane's policy, and on how many
        questions both policies were graded and their verdicts differ). Graded by
        app.render.verdicts, i.e. hermes.shapestream.grade, as the accuracy study grades; an
        answer still being written is not counted. Reads the chat without the lock (an answer
        in progress holds it), from a copy."""
        scores = {lane.policy: [0, 0] for lane in list(self.lanes)}
        disagree = 0
        for entry in list(self.chat):
            graded = render.verdicts(entry)
            for policy, right in graded.items():
                score = scores.setdefault(policy, [0, 0])
                score[0] += int(right)
                score[1] += 1
            disagree += len(graded) > 1 and len(set(graded.values())) > 1
        return {policy: (k, n) for policy, (k, n) in scores.items()}, disagree

    # ---- study ----------------------------------------------------------------------------
    def study(self, budget: int | None = None, bins: int = 32) -> Study:
        """hermes.studies.mechanistic on this session's stream so far: the file is decoded again
        up to the newest frame in memory, as it was played, and streamed through a FIFO cache of
        `budget` tokens per layer (default: the session's budget), a few frames at a time (its
        memory does not grow with the stream's length); the chat's questions are asked where
        they were asked, with the example's suggested questions up to now (when there are none,
        or none came after the window filled: the model's local pseudo-query after every chunk).
        Raises HermesError with what to do when it cannot run."""
        with self.lock:
            source, seen, controls = self.source, self.memory_time(), self.controls
            if source is not None and source.path is None:
                raise HermesError("the study reads the video again, and the webcam keeps no frames: "
                                  "play an example or upload a file")
            if source is None or seen is None:
                raise HermesError("nothing has streamed yet: play a video, wait for the first chunk, "
                                  "then run the study")
            backbone = shared_backbone(controls.model, self.settings.models)
            budget = int(budget or controls.budget_tokens(backbone.chunk_tokens))
            if not 16 <= budget <= 65536:
                raise HermesError(f"the study's budget must be 16-65536 tokens per layer, got {budget}")
            questions = [(float(e["time"]), e["question"]) for e in self.chat]
            questions += [(float(q["time"]), q["question"]) for q in source.suggestions if float(q["time"]) <= seen]
            held = bisect.bisect_right(self.times, seen + 1e-6) * backbone.tokens_per_frame
            pinned = self.files.adopt(source.path) if self.files.owns(source.path) else None
            source = source if pinned is None else replace(source, path=pinned)  # an upload: read through a
            # link of its own, which a source started meanwhile (it deletes the upload it replaces) leaves alone
        try:
            return self._study(source, seen, controls, backbone, questions, budget, bins, held)
        finally:
            if pinned is not None:
                self.files.remove(pinned)

    def _study(self, source: Source, seen: float, controls: Controls, backbone: Backbone,
               questions: list[tuple[float, str]], budget: int, bins: int, held: int) -> Study:
        """`study`'s measurement, outside the lock (ingest and questions go on meanwhile)."""

        def measured(asked: list[tuple[float, str]], every_chunk: str | None = None) -> tuple[list, list]:
            with closing(source.frames_until(seen, controls.fps, self.settings.decode_max_size)) as frames:
                return study_stream(backbone, frames, asked, budget, bins, controls.chunk_frames,
                                    every_chunk=every_chunk)

        profiles, summaries = measured(questions) if questions else ([], [])
        what = "question"
        if not profiles:  # no questions, or asked before the window filled: the pseudo-query after every chunk
            profiles, summaries = measured([], every_chunk=backbone.pseudo_queries["local"])
            what = "local pseudo-query"
        if not profiles:
            raise HermesError(f"no question found the FIFO cache full: the stream so far holds {held} video tokens, "
                              f"and the study needs more than the budget ({budget}) before a question; play further "
                              "or choose a smaller budget")
        tiers = hermes_tiers(backbone.n_layers, shallow_ratio=controls.shallow_ratio, deep_ratio=controls.deep_ratio)
        study = summarise(profiles, summaries, distance_edges(budget, bins), backbone.tokens_per_frame, tiers)
        study.asked = what  # the reading and the finding say what was measured
        self.studied = model_card.measured(study, controls.model, f"the Study tab on {source.name} up to {seen:.1f} s")
        return study

    # ---- views ----------------------------------------------------------------------------
    def budget_text(self, controls: Controls | None = None) -> str:
        """The budget of `controls` (default: the running ones) as frames = tokens = seconds, for
        the loaded model (its tokens per frame); bad settings raise HermesError."""
        controls = controls or self.controls
        backbone = shared_backbone(controls.model, self.settings.models)
        return f"{controls.budget_text(backbone.tokens_per_frame, backbone.chunk_tokens)}, {controls.model}"

    def study_budget(self, tokens: int | None = None) -> tuple[int, int, str]:
        """The Study tab's FIFO budget for the loaded model: (its default, STUDY_FRAMES frames in
        tokens per layer; the most the tab offers, MAX_BUDGET_FRAMES frames; what `tokens`, default
        the default, covers in frames and seconds: app.study.span_text)."""
        controls = self.controls
        per_chunk = shared_backbone(controls.model, self.settings.models).chunk_tokens
        default, most = (replace(controls, budget_frames=n).budget_tokens(per_chunk)
                         for n in (STUDY_FRAMES, MAX_BUDGET_FRAMES))
        tokens = default if tokens is None else int(tokens)
        held = frames_for_tokens(tokens, controls.chunk_frames, per_chunk)
        return default, most, span_text(tokens, held, controls.fps, controls.model)

    def questions(self, lane: int = 0) -> list[QuestionEvent]:
        return list(self.lanes[lane].engine.questions) if lane < len(self.lanes) else []

    def status(self) -> dict:
        ingested = self.times[-1] if self.times else 0.0
        lane, playback = self.lanes[0], self.playback
        stats = lane.engine.stats()
        return {"source": self.source.name if self.source else None,
                "duration_s": self.source.duration_s if self.source else 0.0,
                "playhead_s": round(playback.playhead, 2), "ingested_s": round(ingested, 2),
                "frames": len(self.times), "pending_frames": stats["pending_frames"], "chunks": len(lane.events),
                "behind_s": round(playback.behind(ingested), 2), "ended": playback.ended, "notice": playback.notice,
                "memory_s": self.memory_time(), "state": playback.state, "player_s": round(playback.player_time, 2),
                "stream": self.stream,
                "seek": list(playback.seek) if playback.seek else None, "per_tick": self.per_tick(),
                "kv_bytes": stats["kv_bytes"], "cache_lengths": stats["cache_lengths"],
                "policies": [ln.policy for ln in self.lanes], "model": stats["model"], "device": stats["device"],
                "dtype": stats["dtype"], "weights": stats["weights"]}

    def trace(self) -> dict:
        """Everything this session saw and answered, JSON-ready."""
        with self.lock:
            return {"source": self.source.name if self.source else None, "controls": asdict(self.controls),
                    "frame_times": self.times,
                    "lanes": [{"policy": lane.policy, "chunks": [e.to_dict() for e in lane.events],
                               "questions": [q.to_dict() for q in lane.engine.questions]} for lane in self.lanes],
                    "chat": self.chat}

    # ---- export ---------------------------------------------------------------------------
    def export_header(self) -> dict[str, str]:
        """What an export is of: the stream, the model, the policies, the settings, what memory
        holds, and when it was exported (local time)."""
        with self.lock:
            st, c = self.status(), self.controls
            length = f" ({st['duration_s']:.1f} s)" if math.isfinite(st["duration_s"]) and st["duration_s"] > 0 else ""
            params = [f"{p}: " + (", ".join(f"{k} {('on' if v else 'off') if isinstance(v, bool) else v}"
                                            for k, v in c.policy_params(p).items()) or "no parameters")
                      for p in c.policy_names()]
            memory = self.memory_time()
            held = (f"{counted(st['chunks'], 'chunk')}, frames up to {memory:.1f} s" if memory is not None
                    else "nothing yet")
            held += f" ({counted(st['frames'], 'frame')} read, up to {st['ingested_s']:.1f} s)" + (
                " · stream ended" if st["ended"] else "")
            return {"stream": f"{st['source']}{length}" if st["source"] else "none (nothing played)",
                    "model": runs_on(c.model, st),
                    "policy": " compared with ".join(c.policy_names()),
                    "settings": f"budget {self.budget_text()}; chunks of {c.chunk_frames} frames at {c.fps:g} fps; "
                                f"re-index {c.reindex}; " + "; ".join(params),
                    "memory": held,
                    "exported": datetime.now().astimezone().isoformat(timespec="seconds")}

    def export(self, folder: str | Path, figures: Sequence[go.Figure]) -> list[Path]:
        """Write hermes-trace.json (strict JSON: header, status and trace, non-finite numbers as
        null) and hermes-figures.html (the header and the `figures` that draw data, see
        app.render.figures_html) into `folder`; returns both paths."""
        folder = Path(folder)
        with self.lock:
            header = self.export_header()
            data = {"header": header, "status": self.status(), **self.trace()}
        trace_path, figures_path = folder / "hermes-trace.json", folder / "hermes-figures.html"
        trace_path.write_text(strict_json(data), encoding="utf-8")
        figures_path.write_text(render.figures_html(figures, header), encoding="utf-8")
        return [trace_path, figures_path]
