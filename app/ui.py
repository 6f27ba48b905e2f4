"""The Gradio Blocks of HERMES Studio: player, live panels, chat, controls, export, study.

    from app.ui import build
    demo = build()          # gr.Blocks; app.py launches it
    demo.launch(**LAUNCH)

Handlers only translate between widgets and app.session.Session (one per browser
session, kept by app.store keyed by request.session_hash and bound to the client that
started it); figures come from app.render. Every handler is wrapped by `handler`, which
looks the session up and runs all of the handler's work in one error path: a HermesError
becomes its message in the event's outputs, anything else a logged, one-line "unexpected
error" message, never a stack trace. Only the starts (page load, play, upload, webcam)
create a session; every other handler answers "no session" without creating one. The
layout is built by one function per panel (`_source_panel`, `_chat_panel`, ...) and wired
in `_wire`. API endpoints (gradio_client): /play_example, /upload, /tick, /ask, /stop,
/study, /telemetry, /export, /configure, /health.
"""

from __future__ import annotations

import copy
import inspect
import logging
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import fields, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import gradio as gr
from gradio.utils import get_upload_folder

from app import model_card, render
from app.playback import PlayerReport, check_report
from app.session import Session, runs_on
from app.settings import BUNDLED_OFFERED, MAX_BUDGET_FRAMES, Controls, Settings, panel_number
from app.sources import UploadGate, list_examples
from app.store import SessionStore, client_address
from app.study import committed
from hermes import policies
from hermes.errors import HermesError
from hermes.studies.mechanistic import MIN_QUESTIONS, counted, reading
from hermes.telemetry import process_rss_mib

SETTINGS = Settings()
STORE = SessionStore(SETTINGS)
UPLOADS = UploadGate(SETTINGS.upload_claim_s)  # build() has it watch each Blocks' upload_file_set
LOG = logging.getLogger("hermes.studio")
NO_SESSION = ("nothing has streamed yet: this tab has no session (none was started from this address, or it "
              f"idled out after {SETTINGS.idle_text}); play an example, upload a video or start the "
              "webcam, or reload the page")
DEFAULTS = Controls(model=SETTINGS.models[0])  # what the settings panel shows first
CSS = """
#status {min-height: 2.2em}
.readme {font-size: 0.8em; color: #555}
"""
# Playhead and ingest in step. Every start (play, upload, Apply) is a new stream (Session.stream); the page
# learns its id (`page_start` into the hidden #stream) and RESTART_JS, on that change, restarts the player
# at 0 s and notes which stream the player now plays. The timer's inputs are replaced by what PLAYHEAD_JS
# returns: the player's time, the view as it is, the stream the player was restarted for (a tick about the
# video before the restart is ignored) and its state ("playing", "paused", "ended", "loading", "none"),
# followed by " seeked" when its time jumped since the last tick back, or further than playing all along
# explains (app.playback.check_report). The Stop button pauses the player before the server hears of it;
# the player's own play clears the Stop notice (STOP_CLEARED_JS).
PLAYHEAD_JS = """(p, view, stream, player) => {
  const v = document.querySelector("#player video"), h = window.hermesPlayer;
  if (!v || !h) { return [v ? v.currentTime : p, view, h ? h.stream : -1, "none"]; }
  const state = v.ended ? "ended" : v.readyState < 2 ? "loading" : v.paused ? "paused" : "playing";
  const now = performance.now() / 1000, t = v.currentTime;
  if (state === "loading") { return [t, view, h.stream, state]; }
  const jump = t - h.t, seeked = jump < -1.0 || jump > (now - h.at) * v.playbackRate + 1.0;
  h.t = t; h.at = now;
  return [t, view, h.stream, seeked ? state + " seeked" : state]; }"""
PAUSE_JS = """() => { const v = document.querySelector('#player video'); if (v) { v.pause(); } }"""
STOPPED = "■ Stopped"  # how the Stop notice begins
STOP_CLEARED_JS = f"""(notice) => (notice || "").startsWith("{STOPPED}") ? "" : notice"""
RESTART_JS = """(stream) => {
  window.hermesPlayer = {stream: stream, t: 0, at: performance.now() / 1000};
  const v = document.querySelector('#player video');
  if (v) { v.currentTime = 0; v.play().catch(() => {}); } }"""
ATTENTION_VIEWS = ("global", "local", "question")
N_PLOTS = 7  # attention, occupancy; the compared policy's attention and occupancy, their diff; memory, latency


def in_one_thread(items: Iterator[dict]) -> Iterator[dict]:
    """Run a generator to the end in one worker thread and relay its items.

    The session holds its lock across an answer's pieces, and a lock must be released by the
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


def client_of(request: gr.Request) -> str:
    """The client behind a request: its connecting address, or the Space proxy's forwarded
    one (app.store.client_address; SETTINGS.proxy_hops says how many proxies are trusted)."""
    peer = getattr(getattr(request, "client", None), "host", None)
    headers = getattr(request, "headers", None) or {}
    return client_address(peer, headers.get("x-forwarded-for"), SETTINGS.proxy_hops)


def one_line(text: str) -> str:
    """A message fit for the status line and the event stream: one line, no lone surrogates."""
    return " ".join(_text(text).split())


def failure(fn: Callable[..., Any], err: Exception) -> str:
    """The message for an error inside a handler: a HermesError's own sentence; anything else
    is logged with its traceback and named in one line."""
    if isinstance(err, HermesError):
        return one_line(str(err))
    LOG.exception("handler %s failed", fn.__name__)
    return (f"unexpected error in {fn.__name__} ({type(err).__name__}); it was logged. What is in memory stays; "
            "if it happens again, reload the page")


def handler(on_error: Callable[..., Any], start: bool = False) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator for the event handlers: `fn(session, *inputs)` becomes the gradio handler
    `(*inputs, request)`. The browser's session is looked up by request.session_hash and the
    request's client: created by an explicit start (`start`: page load, play, upload, webcam),
    otherwise only found (a read of an unknown or someone else's session never creates one,
    and answers NO_SESSION). Any error (the studio is full, a bad file, bad settings, a bug)
    becomes `on_error(session or None, message, *inputs)`: the event's outputs with the
    message. A generator handler stays a generator (gradio streams it)."""

    def session_for(request: gr.Request) -> Session:
        client = client_of(request)
        session = STORE.start(request.session_hash, client) if start else STORE.find(request.session_hash, client)
        if session is None:
            raise HermesError(NO_SESSION)
        return session

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        if inspect.isgeneratorfunction(fn):
            def run(*args: Any) -> Iterator[Any]:
                *inputs, request = args
                session = None
                try:
                    session = session_for(request)
                    with session.working():  # busy, never idle, until the request ends
                        yield from fn(session, *inputs)
                except Exception as err:
                    yield on_error(session, failure(fn, err), *inputs)
        else:
            def run(*args: Any) -> Any:
                *inputs, request = args
                session = None
                try:
                    session = session_for(request)
                    with session.working():
                        return fn(session, *inputs)
                except Exception as err:
                    return on_error(session, failure(fn, err), *inputs)

        # gradio passes the request to a parameter annotated gr.Request, and names the API's
        # parameters after the signature: fn's inputs, then the request
        inputs = list(inspect.signature(fn).parameters.values())[1:]
        request = inspect.Parameter("request", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=gr.Request)
        run.__signature__ = inspect.Signature([*inputs, request])
        run.__annotations__ = {"request": gr.Request}
        run.__name__, run.__qualname__, run.__doc__ = fn.__name__, fn.__qualname__, fn.__doc__
        return run

    return decorate


def _skips(n: int = N_PLOTS) -> list:
    return [gr.skip()] * n


SEEK_NOTE_S = 10.0  # the status says how memory caught up after a seek forward until the player is this far past it
LAG_S = 1.0  # the player this far behind what was read: it was sought back (ticks may land out of order by a tick)


def status_line(st: dict) -> str:
    """The ticking status line from Session.status(): what memory holds, where the player is and
    what happened to the stream (waiting for the player's restart, stopped, sought back or
    forward, behind, ended). Pure: tested with status dicts, without a browser."""
    where = runs_on(st["model"], st)
    if st["source"] is None:
        return f"Choose an example stream, upload a video or start the webcam. · {where}"
    read, player, state, memory = st["ingested_s"], st["player_s"], st["state"], st["memory_s"]
    held = "memory holds nothing yet" if memory is None else f"memory holds up to {memory:.1f} s"
    chunks = counted(st["chunks"], "chunk")
    parts = [f"**{st['source']}** — {held} ({counted(st['frames'], 'frame')} read, to {read:.1f} s; {chunks})", where]
    if st["pending_frames"]:
        parts.append(f"{counted(st['pending_frames'], 'frame')} waiting for the chunk to fill")
    if state == "waiting":
        parts.append("waiting for the player to restart from 0 s: memory follows it from there")
    elif state == "stopped":
        parts.append(f"■ stopped at {player:.1f} s: nothing more is ingested; press play on the player to resume "
                     "(▶ Play restarts from 0 s)")
    elif state == "ended":
        parts.append(f"⚠️ {st['notice']}" if st["notice"] else
                     f"stream ended: memory has read all of it, to {read:.1f} s (▶ Play restarts it from 0 s)")
    if state != "waiting" and player < read - LAG_S:  # sought back: memory cannot un-see
        parts.append(f"◀◀ player at {player:.1f} s, behind what memory has read (to {read:.1f} s): it cannot "
                     "un-see; " + ("it has read the whole stream" if state == "ended" else
                                   f"ingest continues from {read:.1f} s when the player gets there"))
    elif st["seek"] and player < st["seek"][1] + SEEK_NOTE_S and state == "playing":
        start, to = st["seek"]
        parts.append(f"▶▶ the player jumped from {start:.1f} to {to:.1f} s (seek): " + (
            f"ingest is catching up on the frames in between, at most {st['per_tick']} frames a tick "
            f"({st['behind_s']:.1f} s behind)" if read < to - LAG_S else
            "memory caught up, the frames in between read at once (not at the player's pace)"))
    elif st["behind_s"] > LAG_S and state == "playing":
        parts.append(f"ingest is {st['behind_s']:.1f} s behind the player (at most {st['per_tick']} frames a tick)")
    return " · ".join(parts)


def _status(s: Session | None, message: str = "") -> str:
    """The status line: a warning when `message` is given, else what the session holds (status_line)."""
    if message:
        return f"⚠️ {message}"
    return "" if s is None else status_line(s.status())


def _playing(s: Session) -> str:
    """The notice of a start: what plays, from 0 s, with empty memory that follows the player."""
    return f"▶ **{s.source.name}** plays from 0 s: memory starts empty and follows the player"


def _figures(s: Session | None, view: str = "global") -> list:
    """attention (A), occupancy (A), attention (B), occupancy (B), kept by A not by B, memory,
    latency: B is the compared policy (compare mode; otherwise its three are hints, hidden and
    left out of exports). Every layer x frame map is on the same full-stream time axis."""
    lanes, times = (s.lanes if s else []), (s.times if s else [])
    last = [lane.events[-1] if lane.events else None for lane in lanes]
    asked = [s.questions(i) for i in range(len(lanes))] if s else []

    def attention(i: int) -> Any:
        question = asked[i][-1] if view == "question" and asked[i] else None
        return render.attention_heatmap(last[i], times, query=view, question=question)

    a = [attention(0), render.occupancy_map(last[0], times)] if lanes else [
        render.attention_heatmap(None, []), render.occupancy_map(None, [])]
    if len(lanes) > 1:
        b = [attention(1), render.occupancy_map(last[1], times), render.keep_diff(last[0], last[1], times)]
    else:
        hint = "Pick a second policy under Engine settings (“compare with”) to compare."
        b = [render.empty_figure(name, hint) for name in ("Attention — compared policy",
                                                          "Cache occupancy — compared policy", "Kept by A, not by B")]
    events = [lane.events for lane in lanes] + [[], []]
    mem = render.memory_figure(events[0], lanes[0].full_kv if lanes else [], compared=events[1])
    lat = render.latency_figure(events[0], asked[0] if asked else [], events[1], asked[1] if len(asked) > 1 else [])
    return [*a, *b, mem, lat]


def _trace(s: Session) -> dict:
    return {"status": s.status(), **s.trace()}


# ---- handlers -----------------------------------------------------------------------------
def _budget_info(s: Session, controls: Controls | None = None) -> dict:
    """The budget slider's help: its frames as tokens per layer and seconds, for the loaded model."""
    return gr.update(info=s.budget_text(controls))


def _timing(budget: Any, chunk: Any, fps: Any) -> dict:
    """The budget, chunk and fps sliders' values as Controls fields, checked finite and whole."""
    return {"budget_frames": panel_number("budget_frames", budget, whole=True),
            "chunk_frames": panel_number("chunk_frames", chunk, whole=True), "fps": panel_number("fps", fps)}


def _text(value: Any) -> str:
    """Text fit for the page and the event stream ("" for anything but a string: an API caller
    may send anything): a lone surrogate, which cannot be encoded, written out as \\udcff."""
    return value.encode("utf-8", "backslashreplace").decode("utf-8") if isinstance(value, str) else ""


@handler(lambda s, message: [_status(None, message), gr.skip(), *_figures(None)], start=True)
def on_load(s: Session) -> list:
    return [_status(s), _budget_info(s), *_figures(s)]


@handler(lambda s, message, *values: gr.update(info=f"⚠️ {message}"))
def budget_info(s: Session, budget: float, chunk: float, fps: float) -> dict:
    """While the budget, chunk or fps slider moves (before Apply): the budget in all three units."""
    return _budget_info(s, replace(s.controls, **_timing(budget, chunk, fps)))


def on_unload(request: gr.Request) -> None:
    """The tab was closed (its heartbeat connection ended): free its session and files.

    gradio runs this from its heartbeat route; the same function is also in the config and
    reachable through the queue API by fn_index with any session hash. Only the heartbeat's
    call, from the client that started the session, frees anything."""
    path = str(getattr(getattr(request, "url", None), "path", ""))
    if not path.endswith(f"/heartbeat/{request.session_hash}"):
        LOG.warning("unload of a session requested through %s, not its heartbeat: ignored", path or "?")
        return
    if not STORE.free(request.session_hash, client_of(request)) and STORE.peek(request.session_hash) is not None:
        LOG.warning("unload of a session from another client: ignored")


@handler(lambda s, message, name: (gr.skip(), _status(None, message), gr.skip(), gr.skip()), start=True)
def play_example(s: Session, name: str) -> tuple:
    """Play an example from 0 s (the one playing too: a restart). The second output is the notice."""
    source = s.load_example(name)
    return str(source.path), _playing(s), gr.update(choices=s.suggestions(), value=None), []


def _upload_refused(s: Session | None, message: str, path: str | None) -> tuple:
    gr.Warning(message)
    status = _status(None, f"That upload cannot be played: {message}. Nothing else changed.")
    return gr.skip(), status, gr.skip(), gr.skip()


@handler(_upload_refused, start=True)
def upload(s: Session, path: str | None) -> tuple:
    """A file uploaded with this request (app.sources.UploadGate): played from the session's
    own copy; the player shows gradio's cached file."""
    if not path:
        raise HermesError("no file was received")
    UPLOADS.claim(path)
    s.load_file(path, name=Path(path).name, uploaded=True)
    return path, _playing(s), gr.update(choices=[], value=None), []


def _tick(s: Session, playhead: float, view: str, report: PlayerReport | None = None) -> list:
    """Ingest up to the player's time (Session.advance); redraw only when a chunk landed."""
    before = len(s.lanes[0].events)
    s.advance(playhead, report)  # checked there: a finite number of seconds >= 0
    if len(s.lanes[0].events) == before:
        return [_status(s), *_skips()]
    return [_status(s), *_figures(s, view)]


@handler(lambda s, message, playhead, view: [_status(None, message), *_skips()])
def tick(s: Session, playhead: float, view: str) -> list:
    """The API's timer: ingest up to `playhead` (the caller is the player: no stream or state checked)."""
    return _tick(s, playhead, view)


@handler(lambda s, message, *values: [_status(None, message), *_skips()])
def page_tick(s: Session, playhead: float, view: str, stream: float, player: str) -> list:
    """The page's timer (PLAYHEAD_JS): the player's time, the stream it plays and its state."""
    return _tick(s, playhead, view, check_report(stream, player))


@handler(lambda s, message, stream: (gr.skip(), gr.skip(), *_skips()))
def page_start(s: Session, stream: float) -> tuple:
    """After a play, an upload or Apply: when a new stream started, the page learns its id (and
    RESTART_JS restarts the player at 0 s), the attention view goes back to the pseudo-query
    "global" and the maps to the new stream's; when none started (a refused file), nothing changes."""
    if stream == s.stream:
        return gr.skip(), gr.skip(), *_skips()
    return s.stream, "global", *_figures(s, "global")


@handler(lambda s, message, view: _figures(None))
def redraw(s: Session, view: str) -> list:
    return _figures(s, view)


@handler(lambda s, message, question: (render.chat_messages(s.chat if s else []), _text(question),
                                      _status(s, f"Not asked: {message}"), gr.skip(), *_skips()))
def ask(s: Session, question: str) -> Iterator[tuple]:
    """Stream the answer into the chat; afterwards show where the question looked. The third
    output is the notice: cleared by the question, or why it was refused ("Not asked: ...", the
    question back in the box) or why an answer already in the chat stopped. The box is emptied
    once, when the question is taken: a next question typed while this answer streams stays."""
    taken = False
    try:
        for _ in in_one_thread(s.ask(question)):
            yield render.chat_messages(s.chat), gr.skip() if taken else "", "", gr.skip(), *_skips()
            taken = True
    except Exception as err:
        if not taken:
            raise
        yield (render.chat_messages(s.chat), gr.skip(), _status(s, f"The answer stopped: {failure(ask, err)}"),
               gr.skip(), *_skips())
        return
    yield render.chat_messages(s.chat), gr.skip(), "", "question", *_figures(s, "question")


@handler(lambda s, message: gr.skip())
def accuracy_now(s: Session) -> str:
    """The running accuracy per policy under the chat (Session.accuracy), whenever the chat changes."""
    return render.accuracy_text(*s.accuracy())


@handler(lambda s, message: _status(None, message))
def stop(s: Session) -> str:
    """Stop ingesting until the player plays again (the page pauses it first: PAUSE_JS); what
    is in memory stays and can still be asked about. The output is the notice."""
    st = s.stop()
    if st["source"] is None:
        return "Nothing is playing."
    if st["state"] == "ended":
        return f"The stream has ended: memory holds what it read (up to {st['ingested_s']:.1f} s); ▶ Play restarts it."
    return (f"{STOPPED}: memory keeps what it read (up to {st['ingested_s']:.1f} s) and can be asked about; press "
            "play on the player to resume ingest, or ▶ Play to restart from 0 s.")


@handler(lambda s, message, budget: (render.study_figure(None), f"**Cannot run the study:** {message}"))
def run_study(s: Session, budget: float) -> tuple:
    """The mechanistic study on this session's stream; errors come back as text under the plot."""
    study = s.study(panel_number("the study's budget", budget, whole=True))
    return render.study_figure(study), reading(study)


def health() -> dict:
    """Sessions in use and the process's memory (for operators and the load test)."""
    STORE.sweep()
    return {"sessions": len(STORE), "max_sessions": SETTINGS.max_sessions, "clients": STORE.clients(),
            "rss_mb": round(process_rss_mib(), 1)}


@handler(lambda s, message, frame: _status(None, message), start=True)
def webcam_frame(s: Session, frame: Any) -> str:
    if frame is None:
        return gr.skip()
    s.add_webcam_frame(frame)
    return _status(s)


def _chosen(model: str, policy: str, compare: str | None, budget: float, chunk: float, fps: float, shallow: float,
            deep: float, smoothing: bool, summary: bool, reindex: str) -> Controls:
    """The settings panel's values (in the order of `w.controls`) as Controls; numbers checked finite."""
    return Controls(model=model, policy=policy, compare="" if compare in (None, "off") else compare,
                    **_timing(budget, chunk, fps), shallow_ratio=panel_number("shallow_ratio", shallow),
                    deep_ratio=panel_number("deep_ratio", deep), smoothing=bool(smoothing), summary=bool(summary),
                    reindex=reindex)


@handler(lambda s, message, *values: [_status(None, f"settings not applied: {message}"), gr.skip(), gr.skip(),
                                      gr.skip(), gr.skip(), *_skips()])
def configure(s: Session, model: str, policy: str, compare: str | None, budget: float, chunk: float, fps: float,
              shallow: float, deep: float, smoothing: bool, summary: bool, reindex: str) -> list:
    """Apply: new engines, and the stream restarts from 0 s (the player with it). The first output is the notice."""
    controls = _chosen(model, policy, compare, budget, chunk, fps, shallow, deep, smoothing, summary, reindex)
    s.configure(controls)
    shown = gr.update(visible=bool(controls.compare))  # the compared policy's maps and the diff
    applied = f"Settings applied ({s.budget_text()}): " + (
        f"**{s.source.name}** restarts from 0 s with empty memory" if s.source else "they hold for the next stream")
    return [applied, [], shown, shown, _budget_info(s), *_figures(s)]


def unapplied_changes(running: Controls, chosen: Controls) -> list[str]:
    """What the panel shows that the running engines do not use: 'budget frames 32 → 16', one per
    Controls field that differs (numbers compared as numbers)."""
    def shown(name: str, value: Any) -> str:
        return "off" if name == "compare" and not value else f"{value:g}" if isinstance(value, float) else str(value)

    changes = []
    for f in fields(Controls):
        old, new = shown(f.name, getattr(running, f.name)), shown(f.name, getattr(chosen, f.name))
        if old != new:
            changes.append(f"{f.name.replace('_', ' ')} {old} → {new}")
    return changes


SETTINGS_TITLE = "Engine settings (apply restarts the stream)"


@handler(lambda s, message, *values: (f"⚠️ {message}", gr.skip()))
def unapplied(s: Session, model: str, policy: str, compare: str | None, budget: float, chunk: float, fps: float,
              shallow: float, deep: float, smoothing: bool, summary: bool, reindex: str) -> tuple:
    """While the settings panel changes, and after Apply: the changes not applied yet, beside Apply
    and in the panel's title (seen when it is closed)."""
    changes = unapplied_changes(s.controls, _chosen(model, policy, compare, budget, chunk, fps, shallow, deep,
                                                    smoothing, summary, reindex))
    if not changes:
        return "", gr.update(label=SETTINGS_TITLE)
    return (f"⚠️ **Not applied yet** (the stream runs with the settings before): {'; '.join(changes)}. "
            "Apply restarts the stream from 0 s.",
            gr.update(label=f"Engine settings — ⚠️ {len(changes)} not applied: press Apply (restarts the stream)"))


@handler(lambda s, message: {"error": message})
def telemetry(s: Session) -> dict:
    """The session's trace (events, questions, chat), JSON."""
    return _trace(s)


def _export_refused(s: Session | None, message: str, view: str) -> list[str]:
    raise gr.Error(message)  # the output is a file list: the message goes to the page's toast / the API's error


@handler(_export_refused)
def export(s: Session, view: str) -> list[str]:
    """The trace and figures, written where gradio serves files from (so it keeps no copy of its
    own), in the session's folder of exports: its newest few are kept, all deleted with it."""
    out = s.files.export_folder(get_upload_folder(), SETTINGS.exports_kept)
    return [str(p) for p in s.export(out, _figures(s, view))]


# ---- layout: one function per panel; each adds its widgets to `w` ---------------------------
def _source_panel(w: SimpleNamespace) -> None:
    """The player, and where its video comes from (example, upload, webcam); the status line (the
    timer's) and the notice (what the last action did or why it was refused: written only by the
    user's actions, so it stays until the next one); the stream id the page holds (hidden)."""
    examples = list(list_examples())
    w.player = gr.Video(elem_id="player", autoplay=True, interactive=False, loop=False, height=190, label="Player")
    with gr.Tabs():
        with gr.Tab("Examples"), gr.Row():
            w.example = gr.Dropdown(examples, value=examples[0] if examples else None, label="Example stream", scale=3,
                                    show_label=False, container=False,
                                    elem_id="example")
            w.play_btn = gr.Button("▶ Play", variant="primary", scale=1, min_width=80)
            w.stop_btn = gr.Button("■ Stop", scale=1, min_width=80)
        with gr.Tab("Upload"):
            w.upload_box = gr.File(label="Upload a video (mp4, webm, mkv, mov)", type="filepath", elem_id="upload")
        with gr.Tab("Webcam"):
            w.cam = gr.Image(sources=["webcam"], streaming=True, label="Webcam", height=200,
                             webcam_options=gr.WebcamOptions(mirror=False))
    w.status = gr.Markdown("Loading…", elem_id="status")
    w.notice = gr.Markdown("", elem_id="notice")
    w.stream = gr.Number(0, precision=0, visible="hidden", elem_id="stream")  # changed by page_start: RESTART_JS
    w.player_state = gr.Textbox("none", visible=False)  # filled by PLAYHEAD_JS at each tick


def _chat_panel(w: SimpleNamespace) -> None:
    """The chat, the question and its check, the running accuracy per policy, the suggestions,
    and the model card (what the model chosen can answer)."""
    card = model_card.card(DEFAULTS.model)
    w.chat = gr.Chatbot(label="Ask about the stream", show_label=False, height=170, elem_id="chat",
                        placeholder="Ask about the stream: each policy answers from its memory, graded where a "
                                    "ShapeStream example gives a ground truth.")
    with gr.Row(equal_height=True):
        w.question = gr.Textbox(placeholder="e.g. what colour is the circle now ?", show_label=False, scale=4,
                                elem_id="question", max_length=SETTINGS.max_question_chars, container=False)
        w.ask_btn = gr.Button("Ask", scale=1, elem_id="ask", min_width=80)
    w.question_check = gr.Markdown("", elem_id="question-check")  # words the model cannot read, before asking
    w.accuracy = gr.Markdown(render.accuracy_text({}), elem_id="accuracy", elem_classes="readme")
    w.suggestions = gr.Dropdown([], label=SUGGESTIONS_LABEL, allow_custom_value=False, elem_id="suggestions")
    w.card = gr.Markdown(card.summary, elem_id="model-card")
    with gr.Accordion("Model card: what it was trained on, what it can answer, its measured accuracy", open=False):
        w.card_details = gr.Markdown(card.details, elem_id="model-card-details")


def _settings_panel(w: SimpleNamespace) -> None:
    """The controls (app.settings.Controls), showing their defaults; Apply restarts the stream."""
    names, d = policies.available(), DEFAULTS
    with gr.Accordion(SETTINGS_TITLE, open=False) as w.settings_box:
        with gr.Row():
            w.model = gr.Dropdown(SETTINGS.models, value=d.model, label="model", info="allowlisted models only")
            w.policy = gr.Dropdown(names, value=d.policy, label="policy", info="how each layer chooses what to keep")
            w.compare = gr.Dropdown(["off", *names], value=d.compare or "off", label="compare with",
                                    info="a second policy on the same stream")
        with gr.Row():
            w.budget = gr.Slider(1, MAX_BUDGET_FRAMES, value=d.budget_frames, step=1, label="budget (frames per layer)",
                                 info="frames of the loaded model; in tokens and seconds once it is loaded",
                                 elem_id="budget")
            w.chunk = gr.Slider(1, 64, value=d.chunk_frames, step=1, label="chunk (frames)")
            w.fps = gr.Slider(0.5, 10, value=d.fps, step=0.5, label="fps sampled")
        with gr.Row():
            w.shallow = gr.Slider(0, 1, value=d.shallow_ratio, step=0.05, label="shallow ratio",
                                  info="layers below are shallow (keep recent)")
            w.deep = gr.Slider(0, 1, value=d.deep_ratio, step=0.05, label="deep ratio",
                               info="layers from here are deep (keep anchors)")
        with gr.Row():
            w.smoothing = gr.Checkbox(d.smoothing, label="cross-layer smoothing")
            w.summary = gr.Checkbox(d.summary, label="summary token (deep layers)")
            w.reindex = gr.Radio(["lazy", "eager"], value=d.reindex, label="re-index positions")
        w.apply_btn = gr.Button("Apply")
        w.unapplied = gr.Markdown("", elem_id="unapplied")  # the changes not applied yet
    w.controls = [w.model, w.policy, w.compare, w.budget, w.chunk, w.fps, w.shallow, w.deep, w.smoothing, w.summary,
                  w.reindex]  # in the order `configure` takes them


MAP_WIDTH = 520  # px: the policies' maps sit side by side where the column holds two this wide, else stacked


def _live_plots(w: SimpleNamespace) -> None:
    """The layer x frame maps, beside the player: the policy's attention and occupancy; in
    compare mode the compared policy's beside them (or under them, on a narrow screen) and the
    kept-by-A-not-by-B map; then how to read them and what the model's layers were measured to do."""
    w.view = gr.Radio(list(ATTENTION_VIEWS), value="global", label="attention of", elem_id="view",
                      container=False, info="the latest pseudo-queries, or the last question")
    with gr.Row(equal_height=False):
        with gr.Column(min_width=MAP_WIDTH):
            att = gr.Plot(elem_id="attention", show_label=False)
            occ = gr.Plot(elem_id="occupancy", show_label=False)
        with gr.Column(min_width=MAP_WIDTH, visible=False) as w.compare_col:  # compare mode: the second policy
            att_b = gr.Plot(elem_id="attention-b", show_label=False)
            occ_b = gr.Plot(elem_id="occupancy-b", show_label=False)
    with gr.Column(visible=False) as w.diff_col:  # compare mode: what one keeps and the other does not
        diff = gr.Plot(elem_id="keep-diff", show_label=False)
        gr.Markdown(render.READ_ME["diff"], elem_classes="readme")
    gr.Markdown(render.READ_ME["attention"], elem_classes="readme")
    w.findings = gr.Markdown(model_card.findings(DEFAULTS.model, model_card.committed_study(DEFAULTS.model)),
                             elem_classes="readme", elem_id="attention-findings")
    gr.Markdown(render.READ_ME["occupancy"], elem_classes="readme")
    w.compare_cols = [w.compare_col, w.diff_col]  # shown in compare mode only (configure)
    w.maps = [att, occ, att_b, occ_b, diff]


def _cost_plots(w: SimpleNamespace) -> None:
    """What the memory costs: KV bytes and positions, and latency, under the settings; each with its how-to-read."""
    with gr.Row():  # side by side where both fit 640 px wide, else stacked
        with gr.Column(min_width=640):
            mem = gr.Plot(elem_id="memory", show_label=False)
            gr.Markdown(render.READ_ME["memory"], elem_classes="readme")
        with gr.Column(min_width=640):
            lat = gr.Plot(elem_id="latency", show_label=False)
            gr.Markdown(render.READ_ME["latency"], elem_classes="readme")
    w.plots = [*w.maps, mem, lat]  # the order of _figures


def _export_panel(w: SimpleNamespace) -> None:
    with gr.Accordion("Export and help", open=False):
        with gr.Row():
            w.export_btn = gr.Button("Export trace + figures")
            w.files = gr.File(label="downloads", file_count="multiple")
        gr.Markdown(SETTINGS.help_text())
        w.api_json = gr.JSON(visible=False)


def _study_tab(w: SimpleNamespace) -> None:
    """The mechanistic study on this session's stream, then the committed figures of analysis/."""
    gr.Markdown("The paper's studies, reproduced by the scripts in `analysis/` (`make figures` regenerates them "
                "all).\n\n" + STUDY_ABOUT, elem_id="study-about")
    with gr.Row():
        w.study_budget = gr.Slider(16, 4096, value=16, step=1, label="FIFO budget (tokens per layer)", scale=3,
                                   info="set for the loaded model once the page has loaded", elem_id="study-budget",
                                   buttons=[])  # no reset: it would go back to the value before the model loaded
        w.study_btn = gr.Button("Run on this stream", elem_id="study-run", scale=1)
    w.study_plot = gr.Plot(elem_id="study-plot", show_label=False)
    w.study_text = gr.Markdown(render.READ_ME["study"], elem_id="study-reading")
    gr.Markdown("### Where each bundled model's layers look\n\n" + model_card.compare_layers(BUNDLED_OFFERED),
                elem_id="study-compare")
    for fig in committed(models=BUNDLED_OFFERED):
        gr.Markdown(f"### {fig.title}: {fig.model}")
        if fig.png is not None:
            gr.Image(str(fig.png), show_label=False, interactive=False, elem_id=f"study-{fig.stem}")
        with gr.Accordion("numbers and reading", open=fig.png is None):
            gr.Markdown(fig.notes if fig.png is None else f"As measured on **{fig.model}**:\n\n{fig.notes}")


STUDY_ABOUT = (
    "**First, the mechanistic study on this session's stream.** The video so far is read again into a *FIFO "
    "cache* (first in, first out: every layer keeps only the newest tokens, as many as the budget below, and "
    "forgets the oldest). At each question the study records where every layer's attention over the video fell, "
    "by how far back from the newest frame. The questions are the ones asked in the chat and the example's "
    "suggested ones, each where it was asked; only those asked once the cache was full count. When none does, the "
    "model's local pseudo-query after every chunk stands in.\n\n"
    "*Pseudo-query*: a fixed question the engine asks itself after every chunk, without answering it, to see "
    "where a question would look; HERMES decides from that attention what each layer keeps. *Local* asks what is "
    "on the screen now; *global* asks what happened in the whole video so far (each model has its own wording). "
    "The live attention map draws either, or the last question. The reading under the plot says how many "
    f"questions it rests on, and calls no split between shallow and deep layers from fewer than {MIN_QUESTIONS}.")


# ---- what the model can do: its card, its layers, unknown words, questions that apply now ----
def _findings(s: Session) -> str:
    """The layer finding of the loaded model: this session's Study tab measurement of it, else its
    committed study, else "not measured here"; the paper's quoted as the paper's."""
    model = s.controls.model
    studied = s.studied if s.studied is not None and s.studied.model == model else None
    return model_card.findings(model, studied or model_card.committed_study(model))


@handler(lambda s, message: (gr.skip(),) * 4)
def card_of(s: Session) -> tuple:
    """After the page loads and after every Apply: the card (summary line, details) and the layer
    finding of the model the session runs now (not the one the dropdown shows before Apply), and
    the Study tab's budget for it (its default, range, and the seconds it covers)."""
    card = model_card.card(s.controls.model)
    default, most, span = s.study_budget()
    return card.summary, card.details, _findings(s), gr.update(value=default, maximum=most, info=span)


@handler(lambda s, message: gr.skip())
def layer_findings(s: Session) -> str:
    """After a Study tab run: the layer finding of the loaded model, now from that run."""
    return _findings(s)


@handler(lambda s, message, budget: gr.update(info=f"⚠️ {message}"))
def study_span(s: Session, budget: float) -> dict:
    """While the study's budget slider moves: what it covers for the loaded model, in frames and seconds."""
    return gr.update(info=s.study_budget(panel_number("the study's budget", budget, whole=True))[2])


@handler(lambda s, message, question: "")
def question_check(s: Session, question: str) -> str:
    """While the question is typed: the words of it the loaded model cannot read (flagged before asking)."""
    if not isinstance(question, str) or len(question) > SETTINGS.max_question_chars:
        return ""  # the ask says what is wrong with it
    note = model_card.unknown_words_note(s.controls.model, s.unknown_words(question))
    return f"⚠️ {note}" if note else ""


SUGGESTIONS_LABEL = ("Suggested questions that apply at the newest frame in memory (ShapeStream examples only, "
                     "with ground truth)")


@handler(lambda s, message: gr.skip())
def suggestions_now(s: Session) -> dict:
    """Opening the suggestions: only the example's questions that apply at the newest frame in
    memory, and the label says when and of which stream. (The label changes with the list: the
    page applies a list sent while the dropdown opens only together with another change.)"""
    t, choices, source = s.memory_time(), s.suggestions(), s.source
    if source is None or t is None:
        label = "Suggested questions: none yet (nothing is in memory; they appear after the first chunk)"
    elif source.world is None:
        label = f"Suggested questions: none for {source.name} (only the ShapeStream examples have an event log)"
    else:
        label = f"Suggested questions: {len(choices)} apply to {source.name} at {t:.1f} s, the newest frame in memory"
    return gr.update(choices=choices, value=None, label=label)


def _wire_model_card(demo: gr.Blocks, w: SimpleNamespace) -> None:
    """The model card, the layer finding and the Study tab's budget follow the model loaded (after
    the page loads and after Apply, never the dropdown before Apply) and the Study tab's run; the
    question is checked while typed; the suggestions are those that apply when opened."""
    hidden = {"api_visibility": "private", "show_progress": "hidden"}
    for started in (w.loaded, w.applied):
        started.then(card_of, None, [w.card, w.card_details, w.findings, w.study_budget], **hidden)
    w.study_text.change(layer_findings, None, [w.findings], **hidden)
    w.study_budget.input(study_span, [w.study_budget], [w.study_budget], **hidden)
    w.question.change(question_check, [w.question], [w.question_check], trigger_mode="always_last", **hidden)
    w.suggestions.focus(suggestions_now, None, [w.suggestions], **hidden)


def _wire(demo: gr.Blocks, w: SimpleNamespace) -> None:
    """Every event: which handler, its inputs and outputs, and its API name."""
    plots = w.plots
    source_out = [w.player, w.notice, w.suggestions, w.chat]
    hidden = {"api_visibility": "private", "show_progress": "hidden"}
    started = {"fn": page_start, "inputs": [w.stream], "outputs": [w.stream, w.view, *plots], **hidden}
    w.loaded = demo.load(on_load, None, [w.status, w.budget, *plots], api_visibility="private")
    demo.unload(on_unload)
    w.play_btn.click(play_example, [w.example], source_out, api_name="play_example").then(**started)
    w.stop_btn.click(stop, None, [w.notice], api_name="stop", js=PAUSE_JS)  # the player pauses first
    w.upload_box.upload(upload, [w.upload_box], source_out, api_name="upload").then(**started)
    w.stream.change(None, [w.stream], None, js=RESTART_JS)  # a new stream: the player restarts at 0 s
    w.player.play(None, [w.notice], [w.notice], js=STOP_CLEARED_JS)  # resumed after Stop: its notice goes
    w.timer.tick(page_tick, [w.playhead, w.view, w.stream, w.player_state], [w.status, *plots], js=PLAYHEAD_JS,
                 concurrency_limit=None, **hidden)
    gr.Button(visible=False).click(tick, [w.playhead, w.view], [w.status, *plots], api_name="tick",
                                   show_progress="hidden", concurrency_limit=None)  # the API's timer
    w.view.change(redraw, [w.view], plots, api_visibility="private", show_progress="hidden")
    w.suggestions.change(lambda q: q or gr.skip(), [w.suggestions], [w.question], api_visibility="private")
    gr.on([w.ask_btn.click, w.question.submit], ask, [w.question], [w.chat, w.question, w.notice, w.view, *plots],
          api_name="ask", show_progress="minimal", show_progress_on=[w.chat])
    w.chat.change(accuracy_now, None, [w.accuracy], trigger_mode="always_last", api_visibility="private",
                  show_progress="hidden")
    w.cam.stream(webcam_frame, [w.cam], [w.status], stream_every=0.5, api_visibility="private")
    pending = {"fn": unapplied, "inputs": w.controls, "outputs": [w.unapplied, w.settings_box], **hidden}
    gr.on([c.change for c in w.controls], trigger_mode="always_last", **pending)
    w.applied = w.apply_btn.click(configure, w.controls, [w.notice, w.chat, *w.compare_cols, w.budget, *plots],
                                  api_name="configure").then(**started).then(**pending)
    gr.on([w.budget.input, w.chunk.input, w.fps.input], budget_info, [w.budget, w.chunk, w.fps], [w.budget],
          api_visibility="private", show_progress="hidden")
    w.export_btn.click(export, [w.view], [w.files], api_name="export")
    w.study_btn.click(run_study, [w.study_budget], [w.study_plot, w.study_text], api_name="study")
    gr.Button(visible=False).click(telemetry, None, [w.api_json], api_name="telemetry")
    gr.Button(visible=False).click(health, None, [w.api_json], api_name="health")


def build() -> gr.Blocks:
    w = SimpleNamespace()  # the widgets, by name, for _wire
    with gr.Blocks(title="HERMES Studio", delete_cache=(600, 3600)) as demo:
        UPLOADS.watch(demo.upload_file_set)  # what this Blocks' upload route received: all /upload accepts
        gr.Markdown("### HERMES Studio — watch a video stream into a layered KV-cache memory, then ask it",
                    elem_id="title")
        with gr.Tabs(elem_id="main-tabs"):
            with gr.Tab("Live", elem_id="live-tab"):
                with gr.Row(equal_height=False):  # the player, the chat and the maps on one screen (1280x800)
                    with gr.Column(scale=4, min_width=380):
                        _source_panel(w)
                        _chat_panel(w)
                    with gr.Column(scale=6, min_width=MAP_WIDTH):
                        _live_plots(w)
                _settings_panel(w)
                _cost_plots(w)
                _export_panel(w)
            with gr.Tab("Study", elem_id="study-tab"):
                _study_tab(w)
        w.playhead = gr.Number(0.0, visible=False)
        w.timer = gr.Timer(SETTINGS.tick_s)
        _wire(demo, w)
        _wire_model_card(demo, w)
    return demo
