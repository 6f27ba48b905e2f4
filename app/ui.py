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
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import gradio as gr

from app import model_card, render
from app.session import Session
from app.settings import MAX_BUDGET_FRAMES, STUDY_BUDGET, Controls, Settings, panel_number
from app.sources import UploadGate, list_examples
from app.store import SessionStore, client_address
from app.study import committed
from hermes import policies
from hermes.errors import HermesError
from hermes.studies.mechanistic import reading
from hermes.telemetry import process_rss_mib

SETTINGS = Settings()
STORE = SessionStore(SETTINGS)
UPLOADS = UploadGate(SETTINGS.upload_claim_s)  # build() binds it to the Blocks' upload_file_set
LOG = logging.getLogger("hermes.studio")
NO_SESSION = ("nothing has streamed yet: this tab has no session (none was started from this address, or it "
              f"idled out after {SETTINGS.idle_text}); play an example, upload a video or start the "
              "webcam, or reload the page")
DEFAULTS = Controls(model=SETTINGS.models[0])  # what the settings panel shows first
CSS = """
#status {min-height: 2.2em}
.readme {font-size: 0.8em; color: #555}
"""
# the timer's inputs are replaced by what this returns: the player's current time, and the view as it is
PLAYHEAD_JS = """(p, view) => {
  const v = document.querySelector("#player video"); return [v ? v.currentTime : p, view]; }"""
PAUSE_JS = """() => { const v = document.querySelector('#player video'); if (v) { v.pause(); } }"""
RESTART_JS = """() => { const v = document.querySelector('#player video'); if (v) { v.currentTime = 0; v.play(); } }"""
ATTENTION_VIEWS = ("global", "local", "question")
N_PLOTS = 5  # attention, occupancy, occupancy of the compared policy, memory, latency


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
    return " ".join(text.encode("utf-8", "backslashreplace").decode("utf-8").split())


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
                    yield from fn(session, *inputs)
                except Exception as err:
                    yield on_error(session, failure(fn, err), *inputs)
        else:
            def run(*args: Any) -> Any:
                *inputs, request = args
                session = None
                try:
                    session = session_for(request)
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


def _status(s: Session | None, message: str = "") -> str:
    """The status line: a warning when `message` is given, else what the session holds."""
    if message:
        return f"⚠️ {message}"
    if s is None:
        return ""
    st = s.status()
    runs_on = f"{st['model']} on {st['device']} in {st['dtype']}"
    if st["source"] is None:
        return f"Choose an example stream, upload a video or start the webcam. · {runs_on}"
    parts = [f"**{st['source']}** — memory holds {st['ingested_s']:.1f} s ({st['frames']} frames, "
             f"{st['chunks']} chunks)", runs_on]
    if st["pending_frames"]:
        parts.append(f"{st['pending_frames']} frames waiting for the chunk to fill")
    if st["behind_s"] > 1.0:
        parts.append(f"⏳ ingest is {st['behind_s']:.1f} s behind the player")
    if st["ended"]:
        parts.append("stream ended")
    if st["notice"]:
        parts.append(f"⚠️ {st['notice']}")
    return " · ".join(parts)


def _figures(s: Session | None, view: str = "global") -> list:
    """attention, occupancy (A), occupancy (B, compare mode), memory, latency."""
    lane = s.lanes[0] if s else None
    last = lane.events[-1] if lane and lane.events else None
    questions = s.questions() if s else []
    question = questions[-1] if view == "question" and questions else None
    att = render.attention_heatmap(last, s.times if s else [], query=view, question=question)
    occ = render.occupancy_map(last, s.times if s else [], title="Cache occupancy")
    if s and len(s.lanes) > 1:
        other = s.lanes[1]
        occ_b = render.occupancy_map(other.events[-1] if other.events else None, s.times, title="Compared with")
    else:
        occ_b = render.empty_figure("Compared with", "Pick a second policy under Engine settings to compare.")
    mem = render.memory_figure(lane.events if lane else [], lane.full_kv if lane else [])
    lat = render.latency_figure(lane.events if lane else [], questions)
    return [att, occ, occ_b, mem, lat]


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
    """A text input given back to its box after an error (an API caller may send anything)."""
    return value.encode("utf-8", "replace").decode("utf-8") if isinstance(value, str) else ""


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
    source = s.load_example(name)
    choices = [q["question"] for q in source.suggestions]
    return (str(source.path), _status(s), gr.update(choices=sorted(set(choices), key=choices.index), value=None),
            [])


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
    return path, _status(s), gr.update(choices=[], value=None), []


@handler(lambda s, message, playhead, view: [_status(None, message), *_skips()])
def tick(s: Session, playhead: float, view: str) -> list:
    """The timer: ingest up to the player's time; redraw only when a chunk landed."""
    before = len(s.lanes[0].events)
    s.advance(playhead)  # checked there: a finite number of seconds >= 0
    if len(s.lanes[0].events) == before:
        return [_status(s), *_skips()]
    return [_status(s), *_figures(s, view)]


@handler(lambda s, message, view: _figures(None))
def redraw(s: Session, view: str) -> list:
    return _figures(s, view)


@handler(lambda s, message, question: (render.chat_messages(s.chat if s else []), _text(question),
                                      _status(s, message), gr.skip(), *_skips()))
def ask(s: Session, question: str) -> Iterator[tuple]:
    """Stream the answer into the chat; afterwards show where the question looked."""
    for _ in in_one_thread(s.ask(question)):
        yield render.chat_messages(s.chat), "", _status(s), gr.skip(), *_skips()
    yield render.chat_messages(s.chat), "", _status(s), "question", *_figures(s, "question")


@handler(lambda s, message: _status(None, message))
def stop(s: Session) -> str:
    """Stop ingesting; what is in memory stays and can still be asked about."""
    s.stop()
    return _status(s)


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


@handler(lambda s, message, *values: [_status(None, f"settings not applied: {message}"), [], gr.skip(), gr.skip(),
                                      *_skips()])
def configure(s: Session, model: str, policy: str, compare: str | None, budget: float, chunk: float, fps: float,
              shallow: float, deep: float, smoothing: bool, summary: bool, reindex: str) -> list:
    controls = Controls(model=model, policy=policy, compare="" if compare in (None, "off") else compare,
                        **_timing(budget, chunk, fps), shallow_ratio=panel_number("shallow_ratio", shallow),
                        deep_ratio=panel_number("deep_ratio", deep), smoothing=bool(smoothing),
                        summary=bool(summary), reindex=reindex)
    s.configure(controls)
    return [_status(s), [], gr.update(visible=bool(controls.compare)), _budget_info(s), *_figures(s)]


@handler(lambda s, message: {"error": message})
def telemetry(s: Session) -> dict:
    """The session's trace (events, questions, chat), JSON."""
    return _trace(s)


def _export_refused(s: Session | None, message: str, view: str) -> list[str]:
    raise gr.Error(message)  # the output is a file list: the message goes to the page's toast / the API's error


@handler(_export_refused)
def export(s: Session, view: str) -> list[str]:
    out = Path(tempfile.mkdtemp(prefix="hermes-export-"))
    return [str(p) for p in s.export(out, _figures(s, view))]


# ---- layout: one function per panel; each adds its widgets to `w` ---------------------------
def _source_panel(w: SimpleNamespace) -> None:
    """The player, and where its video comes from (example, upload, webcam); the status line."""
    examples = list(list_examples())
    w.player = gr.Video(elem_id="player", autoplay=True, interactive=False, loop=False, height=260, label="Player")
    with gr.Tabs():
        with gr.Tab("Examples"), gr.Row():
            w.example = gr.Dropdown(examples, value=examples[0] if examples else None, label="Example stream", scale=3)
            w.play_btn = gr.Button("▶ Play", variant="primary", scale=1, min_width=80)
            w.stop_btn = gr.Button("■ Stop", scale=1, min_width=80)
        with gr.Tab("Upload"):
            w.upload_box = gr.File(label="Upload a video (mp4, webm, mkv, mov)", type="filepath", elem_id="upload")
        with gr.Tab("Webcam"):
            w.cam = gr.Image(sources=["webcam"], streaming=True, label="Webcam", height=200,
                             webcam_options=gr.WebcamOptions(mirror=False))
    w.status = gr.Markdown("Loading…", elem_id="status")


def _chat_panel(w: SimpleNamespace) -> None:
    """The model card (what the model chosen can answer), the chat, the question and its check."""
    card = model_card.card(DEFAULTS.model)
    w.card = gr.Markdown(card.summary, elem_id="model-card")
    with gr.Accordion("Model card: what it was trained on, what it can answer, its measured accuracy", open=False):
        w.card_details = gr.Markdown(card.details, elem_id="model-card-details")
    w.chat = gr.Chatbot(label="Ask about the stream", height=260, elem_id="chat")
    with gr.Row():
        w.question = gr.Textbox(placeholder="e.g. what colour is the circle now ?", show_label=False, scale=4,
                                elem_id="question", max_length=SETTINGS.max_question_chars)
        w.ask_btn = gr.Button("Ask", scale=1, elem_id="ask")
    w.question_check = gr.Markdown("", elem_id="question-check")  # words the model cannot read, before asking
    w.suggestions = gr.Dropdown([], label=SUGGESTIONS_LABEL, allow_custom_value=False, elem_id="suggestions")


def _settings_panel(w: SimpleNamespace) -> None:
    """The controls (app.settings.Controls), showing their defaults; Apply restarts the stream."""
    names, d = policies.available(), DEFAULTS
    with gr.Accordion("Engine settings (apply restarts the stream)", open=False):
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
    w.controls = [w.model, w.policy, w.compare, w.budget, w.chunk, w.fps, w.shallow, w.deep, w.smoothing, w.summary,
                  w.reindex]  # in the order `configure` takes them


def _live_plots(w: SimpleNamespace) -> None:
    """The four live panels (and the compared policy's occupancy), each with its how-to-read."""
    with gr.Row():
        with gr.Column():
            w.view = gr.Radio(list(ATTENTION_VIEWS), value="global", label="attention of", elem_id="view",
                              container=False, info="the latest pseudo-queries, or the last question")
            att = gr.Plot(elem_id="attention", show_label=False)
            gr.Markdown(render.READ_ME["attention"], elem_classes="readme")
            w.findings = gr.Markdown(model_card.findings(DEFAULTS.model, model_card.committed_study(DEFAULTS.model)),
                                     elem_classes="readme", elem_id="attention-findings")
        with gr.Column():
            occ = gr.Plot(elem_id="occupancy", show_label=False)
            with gr.Column(visible=False) as w.compare_col:  # compare mode: the second policy's map
                occ_b = gr.Plot(elem_id="occupancy-b", show_label=False)
            gr.Markdown(render.READ_ME["occupancy"], elem_classes="readme")
    with gr.Row():
        with gr.Column():
            mem = gr.Plot(elem_id="memory", show_label=False)
            gr.Markdown(render.READ_ME["memory"], elem_classes="readme")
        with gr.Column():
            lat = gr.Plot(elem_id="latency", show_label=False)
            gr.Markdown(render.READ_ME["latency"], elem_classes="readme")
    w.plots = [att, occ, occ_b, mem, lat]  # the order of _figures


def _export_panel(w: SimpleNamespace) -> None:
    with gr.Accordion("Export and help", open=False):
        with gr.Row():
            w.export_btn = gr.Button("Export trace + figures")
            w.files = gr.File(label="downloads", file_count="multiple")
        gr.Markdown(SETTINGS.help_text())
        w.api_json = gr.JSON(visible=False)


def _study_tab(w: SimpleNamespace) -> None:
    """The mechanistic study on this session's stream, then the committed figures of analysis/."""
    gr.Markdown("The paper's studies, reproduced by the scripts in `analysis/` (`make figures` "
                "regenerates them all). First, the mechanistic study on **this session's stream**: "
                "a FIFO cache of the budget below; where did each layer's question attention fall?")
    with gr.Row():
        w.study_budget = gr.Slider(16, 4096, value=STUDY_BUDGET, step=16, label="FIFO budget (tokens per layer)",
                                   scale=3)
        w.study_btn = gr.Button("Run on this stream", elem_id="study-run", scale=1)
    w.study_plot = gr.Plot(elem_id="study-plot", show_label=False)
    w.study_text = gr.Markdown(render.READ_ME["study"], elem_id="study-reading")
    for fig in committed():
        gr.Markdown(f"### {fig.title}")
        if fig.png is not None:
            gr.Image(str(fig.png), show_label=False, interactive=False, elem_id=f"study-{fig.name}")
        with gr.Accordion("numbers and reading", open=fig.png is None):
            gr.Markdown(fig.notes)


# ---- what the model can do: its card, its layers, unknown words, questions that apply now ----
def card_of(model: str) -> tuple:
    """The card (summary line, details) of the model chosen under Engine settings (allowlisted only)."""
    if model not in SETTINGS.models:
        return gr.skip(), gr.skip()
    card = model_card.card(model)
    return card.summary, card.details


def _committed_findings(s: Session | None, message: str, model: str) -> Any:
    return model_card.findings(model, model_card.committed_study(model)) if model in SETTINGS.models else gr.skip()


@handler(_committed_findings)
def layer_findings(s: Session, model: str) -> Any:
    """The layer finding under the attention map: this session's Study tab measurement of the
    model, else its committed study, else "not measured here"; the paper's quoted as the paper's."""
    if model not in SETTINGS.models:
        return gr.skip()
    studied = s.studied if s.studied is not None and s.studied.model == model else None
    return model_card.findings(model, studied or model_card.committed_study(model))


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
    """The model card and the layer finding follow the model chosen (and the Study tab's run); the
    question is checked while typed; the suggestions are those that apply when opened."""
    hidden = {"api_visibility": "private", "show_progress": "hidden"}
    w.model.change(card_of, [w.model], [w.card, w.card_details], **hidden)
    gr.on([w.model.change, w.study_text.change], layer_findings, [w.model], [w.findings], **hidden)
    w.question.change(question_check, [w.question], [w.question_check], trigger_mode="always_last", **hidden)
    w.suggestions.focus(suggestions_now, None, [w.suggestions], **hidden)


def _wire(demo: gr.Blocks, w: SimpleNamespace) -> None:
    """Every event: which handler, its inputs and outputs, and its API name."""
    plots = w.plots
    source_out = [w.player, w.status, w.suggestions, w.chat]
    demo.load(on_load, None, [w.status, w.budget, *plots], api_visibility="private")
    demo.unload(on_unload)
    w.play_btn.click(play_example, [w.example], source_out, api_name="play_example")
    w.stop_btn.click(stop, None, [w.status], api_name="stop").then(None, None, None, js=PAUSE_JS)
    w.upload_box.upload(upload, [w.upload_box], source_out, api_name="upload")
    w.timer.tick(tick, [w.playhead, w.view], [w.status, *plots], js=PLAYHEAD_JS, api_name="tick",
                 show_progress="hidden", concurrency_limit=None)
    w.view.change(redraw, [w.view], plots, api_visibility="private", show_progress="hidden")
    w.suggestions.change(lambda q: q or gr.skip(), [w.suggestions], [w.question], api_visibility="private")
    gr.on([w.ask_btn.click, w.question.submit], ask, [w.question], [w.chat, w.question, w.status, w.view, *plots],
          api_name="ask", show_progress="minimal", show_progress_on=[w.chat])
    w.cam.stream(webcam_frame, [w.cam], [w.status], stream_every=0.5, api_visibility="private")
    w.apply_btn.click(configure, w.controls, [w.status, w.chat, w.compare_col, w.budget, *plots],
                      api_name="configure").then(None, None, None, js=RESTART_JS)
    gr.on([w.budget.input, w.chunk.input, w.fps.input], budget_info, [w.budget, w.chunk, w.fps], [w.budget],
          api_visibility="private", show_progress="hidden")
    w.export_btn.click(export, [w.view], [w.files], api_name="export")
    w.study_btn.click(run_study, [w.study_budget], [w.study_plot, w.study_text], api_name="study")
    gr.Button(visible=False).click(telemetry, None, [w.api_json], api_name="telemetry")
    gr.Button(visible=False).click(health, None, [w.api_json], api_name="health")


def build() -> gr.Blocks:
    w = SimpleNamespace()  # the widgets, by name, for _wire
    with gr.Blocks(title="HERMES Studio", delete_cache=(600, 3600)) as demo:
        UPLOADS.received = demo.upload_file_set  # what gradio's upload route received: all /upload accepts
        gr.Markdown("## HERMES Studio — watch a video stream into a layered KV-cache memory, then ask it")
        with gr.Tabs(elem_id="main-tabs"):
            with gr.Tab("Live", elem_id="live-tab"):
                with gr.Row(equal_height=False):
                    with gr.Column(scale=4, min_width=360):
                        _source_panel(w)
                    with gr.Column(scale=5, min_width=420):
                        _chat_panel(w)
                        _settings_panel(w)
                _live_plots(w)
                _export_panel(w)
            with gr.Tab("Study", elem_id="study-tab"):
                _study_tab(w)
        w.playhead = gr.Number(0.0, visible=False)
        w.timer = gr.Timer(SETTINGS.tick_s)
        _wire(demo, w)
        _wire_model_card(demo, w)
    return demo
