"""The Gradio Blocks of HERMES Studio: player, live panels, chat, controls, export.

    from app.ui import build
    demo = build()          # gr.Blocks; app.py launches it
    demo.launch(**LAUNCH)

Handlers only translate between widgets and app.session.Session (one per browser
session, keyed by request.session_hash); figures come from app.render. Every handler
turns a HermesError into a message in the status line instead of a stack trace.
API endpoints (gradio_client): /play_example, /upload, /tick, /ask, /telemetry, /configure.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import gradio as gr
import plotly.io as pio

from analysis import mechanistic
from app import render
from app.session import Controls, Session, SessionStore, in_one_thread, list_examples
from app.settings import Settings
from app.study import committed
from hermes import policies
from hermes.errors import HermesError
from hermes.telemetry import process_rss_mib

SETTINGS = Settings()
STORE = SessionStore(SETTINGS)
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


def _session(request: gr.Request) -> Session:
    return STORE.get(request.session_hash)


def _status(s: Session | None, message: str = "") -> str:
    """The status line: a warning when `message` is given, else what the session holds."""
    if message:
        return f"⚠️ {message}"
    if s is None:
        return ""
    st = s.status()
    if st["source"] is None:
        return "Choose an example stream, upload a video or start the webcam."
    parts = [f"**{st['source']}** — memory holds {st['ingested_s']:.1f} s ({st['frames']} frames, "
             f"{st['chunks']} chunks)"]
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


def _chat_messages(s: Session) -> list[dict]:
    messages = []
    for entry in s.chat:
        messages.append({"role": "user", "content": f"[{entry['time']:.1f} s] {entry['question']}"})
        lines = []
        for policy, text in entry["answers"].items():
            ttft = entry["ttft_ms"].get(policy)
            lines.append(f"**{policy}**: {text or '…'}" + (f"  ·  TTFT {ttft:.0f} ms" if ttft else ""))
        if entry["truth"] is not None:
            verdicts = ["✓" if t.strip().split(" ")[:1] == [entry["truth"]] else "✗"
                        for t in entry["answers"].values() if t]
            lines.append(f"ground truth: **{entry['truth']}** {' '.join(verdicts)}")
        messages.append({"role": "assistant", "content": "\n\n".join(lines)})
    return messages


# ---- handlers -----------------------------------------------------------------------------
def on_load(request: gr.Request):
    try:
        s = _session(request)
    except HermesError as err:
        return [str(err), *_figures(None)]
    return [_status(s), *_figures(s)]


def on_unload(request: gr.Request) -> None:
    STORE.free(request.session_hash)


def play_example(name: str, request: gr.Request):
    try:
        s = _session(request)
        source = s.load_example(name)
    except HermesError as err:
        return gr.skip(), _status(None, str(err)), gr.skip(), gr.skip()
    choices = [q["question"] for q in source.suggestions]
    return (str(source.path), _status(s), gr.update(choices=sorted(set(choices), key=choices.index), value=None),
            [])


def upload(path: str | None, request: gr.Request):
    try:
        s = _session(request)
        if not path:
            raise HermesError("no file was received")
        source = s.load_file(path, name=Path(path).name, uploaded=True)
    except HermesError as err:
        gr.Warning(str(err))
        message = f"That upload cannot be played: {err}. Nothing else changed."
        return gr.skip(), _status(None, message), gr.skip(), gr.skip()
    return str(source.path), _status(s), gr.update(choices=[], value=None), []


def tick(playhead: float, view: str, request: gr.Request):
    """The timer: ingest up to the player's time; redraw only when a chunk landed."""
    try:
        s = _session(request)
    except HermesError as err:
        return [str(err)] + [gr.skip()] * 5
    before = len(s.lanes[0].events)
    s.advance(playhead or 0.0)
    if len(s.lanes[0].events) == before:
        return [_status(s)] + [gr.skip()] * 5
    return [_status(s), *_figures(s, view)]


def redraw(view: str, request: gr.Request):
    try:
        s = _session(request)
    except HermesError:
        return _figures(None)
    return _figures(s, view)


def ask(question: str, request: gr.Request):
    """Stream the answer into the chat; afterwards show where the question looked."""
    try:
        s = _session(request)
        for _ in in_one_thread(s.ask(question)):
            yield _chat_messages(s), "", _status(s), gr.skip(), *([gr.skip()] * 5)
    except HermesError as err:
        s = STORE.peek(request.session_hash)
        yield (_chat_messages(s) if s else []), question, _status(s, str(err)), gr.skip(), *([gr.skip()] * 5)
        return
    yield _chat_messages(s), "", _status(s), "question", *_figures(s, "question")


def stop(request: gr.Request) -> str:
    """Stop ingesting; what is in memory stays and can still be asked about."""
    try:
        s = _session(request)
    except HermesError as err:
        return str(err)
    s.stop()
    return _status(s)


def run_study(budget: float, request: gr.Request):
    """The mechanistic study on this session's stream; errors come back as text under the plot."""
    try:
        study = _session(request).study(int(budget))
    except HermesError as err:
        return render.study_figure(None), f"**Cannot run the study:** {err}"
    return render.study_figure(study), mechanistic.reading(study)


def health() -> dict:
    """Sessions in use and the process's memory (for operators and the load test)."""
    STORE.sweep()
    return {"sessions": len(STORE), "max_sessions": SETTINGS.max_sessions, "rss_mb": round(process_rss_mib(), 1)}


def webcam_frame(frame, request: gr.Request):
    if frame is None:
        return gr.skip()
    try:
        s = _session(request)
        s.add_webcam_frame(frame)
    except HermesError as err:
        return str(err)
    return _status(s)


def configure(model, policy, compare, budget, chunk, fps, shallow, deep, smoothing, summary, reindex,
              request: gr.Request):
    controls = Controls(model=model, policy=policy, compare="" if compare in (None, "off") else compare,
                        budget=int(budget), chunk_frames=int(chunk), fps=float(fps), shallow_ratio=float(shallow),
                        deep_ratio=float(deep), smoothing=bool(smoothing), summary=bool(summary), reindex=reindex)
    try:
        s = _session(request)
        s.configure(controls)
    except HermesError as err:
        return [_status(None, f"settings not applied: {err}"), [], gr.skip()] + [gr.skip()] * 5
    return [_status(s), [], gr.update(visible=bool(controls.compare)), *_figures(s)]


def telemetry(request: gr.Request) -> dict:
    """The session's trace (events, questions, chat), JSON."""
    try:
        s = _session(request)
    except HermesError as err:
        return {"error": str(err)}
    return {"status": s.status(), **s.trace()}


def export(view: str, request: gr.Request):
    s = _session(request)
    out = Path(tempfile.mkdtemp(prefix="hermes-export-"))
    (out / "hermes-trace.json").write_text(json.dumps(telemetry(request), indent=1))
    figs = _figures(s, view)
    html = [pio.to_html(fig, include_plotlyjs=(i == 0), full_html=False) for i, fig in enumerate(figs)]
    (out / "hermes-figures.html").write_text("<html><body>" + "\n".join(html) + "</body></html>")
    return [str(out / "hermes-trace.json"), str(out / "hermes-figures.html")]


# ---- layout -------------------------------------------------------------------------------
def build() -> gr.Blocks:
    examples = list(list_examples())
    names = policies.available()
    with gr.Blocks(title="HERMES Studio", delete_cache=(600, 3600)) as demo:
        gr.Markdown("## HERMES Studio — watch a video stream into a layered KV-cache memory, then ask it")
        with gr.Tabs(elem_id="main-tabs"):
            with gr.Tab("Live", elem_id="live-tab"):
                with gr.Row(equal_height=False):
                    with gr.Column(scale=4, min_width=360):
                        player = gr.Video(elem_id="player", autoplay=True, interactive=False, loop=False, height=260,
                                          label="Player")
                        with gr.Tabs():
                            with gr.Tab("Examples"), gr.Row():
                                example = gr.Dropdown(examples, value=examples[0] if examples else None,
                                                      label="Example stream", scale=3)
                                play_btn = gr.Button("▶ Play", variant="primary", scale=1, min_width=80)
                                stop_btn = gr.Button("■ Stop", scale=1, min_width=80)
                            with gr.Tab("Upload"):
                                upload_box = gr.File(label="Upload a video (mp4, webm, mkv, mov)", type="filepath",
                                                     elem_id="upload")
                            with gr.Tab("Webcam"):
                                cam = gr.Image(sources=["webcam"], streaming=True, label="Webcam", height=200,
                                               webcam_options=gr.WebcamOptions(mirror=False))
                        status = gr.Markdown("Loading…", elem_id="status")
                    with gr.Column(scale=5, min_width=420):
                        chat = gr.Chatbot(label="Ask about the stream", height=260, elem_id="chat")
                        with gr.Row():
                            question = gr.Textbox(placeholder="e.g. what colour is the circle now ?", show_label=False,
                                                  scale=4, elem_id="question", max_length=SETTINGS.max_question_chars)
                            ask_btn = gr.Button("Ask", scale=1, elem_id="ask")
                        suggestions = gr.Dropdown([], label="Suggested questions (ShapeStream: ground truth shown)",
                                                  allow_custom_value=False)
                        with gr.Accordion("Engine settings (apply restarts the stream)", open=False):
                            with gr.Row():
                                model = gr.Dropdown(SETTINGS.models, value=SETTINGS.models[0], label="model",
                                                    info="allowlisted models only")
                                policy = gr.Dropdown(names, value="hermes", label="policy",
                                                     info="how each layer chooses what to keep")
                                compare = gr.Dropdown(["off", *names], value="off", label="compare with",
                                                      info="a second policy on the same stream")
                            with gr.Row():
                                budget = gr.Slider(16, 4096, value=256, step=16, label="budget (tokens per layer)")
                                chunk = gr.Slider(1, 64, value=16, step=1, label="chunk (frames)")
                                fps = gr.Slider(0.5, 10, value=2.0, step=0.5, label="fps sampled")
                            with gr.Row():
                                shallow = gr.Slider(0, 1, value=0.1, step=0.05, label="shallow ratio",
                                                    info="layers below are shallow (keep recent)")
                                deep = gr.Slider(0, 1, value=0.7, step=0.05, label="deep ratio",
                                                 info="layers from here are deep (keep anchors)")
                            with gr.Row():
                                smoothing = gr.Checkbox(True, label="cross-layer smoothing")
                                summary = gr.Checkbox(True, label="summary token (deep layers)")
                                reindex = gr.Radio(["lazy", "eager"], value="lazy", label="re-index positions")
                            apply_btn = gr.Button("Apply")
                with gr.Row():
                    with gr.Column():
                        view = gr.Radio(list(ATTENTION_VIEWS), value="global", label="attention of", elem_id="view",
                                        container=False, info="the latest pseudo-queries, or the last question")
                        att_plot = gr.Plot(elem_id="attention", show_label=False)
                        gr.Markdown(render.READ_ME["attention"], elem_classes="readme")
                    with gr.Column():
                        occ_plot = gr.Plot(elem_id="occupancy", show_label=False)
                        with gr.Column(visible=False) as compare_col:  # compare mode: the second policy's map
                            occ_b_plot = gr.Plot(elem_id="occupancy-b", show_label=False)
                        gr.Markdown(render.READ_ME["occupancy"], elem_classes="readme")
                with gr.Row():
                    with gr.Column():
                        mem_plot = gr.Plot(elem_id="memory", show_label=False)
                        gr.Markdown(render.READ_ME["memory"], elem_classes="readme")
                    with gr.Column():
                        lat_plot = gr.Plot(elem_id="latency", show_label=False)
                        gr.Markdown(render.READ_ME["latency"], elem_classes="readme")
                with gr.Accordion("Export and help", open=False):
                    with gr.Row():
                        export_btn = gr.Button("Export trace + figures")
                        files = gr.File(label="downloads", file_count="multiple")
                    gr.Markdown(SETTINGS.help_text())
                    api_json = gr.JSON(visible=False)
            with gr.Tab("Study", elem_id="study-tab"):
                gr.Markdown("The paper's studies, reproduced by the scripts in `analysis/` (`make figures` "
                            "regenerates them all). First, the mechanistic study on **this session's stream**: "
                            "a FIFO cache of the budget below; where did each layer's question attention fall?")
                with gr.Row():
                    study_budget = gr.Slider(16, 4096, value=256, step=16, label="FIFO budget (tokens per layer)",
                                             scale=3)
                    study_btn = gr.Button("Run on this stream", elem_id="study-run", scale=1)
                study_plot = gr.Plot(elem_id="study-plot", show_label=False)
                study_text = gr.Markdown(render.READ_ME["study"], elem_id="study-reading")
                for fig in committed():
                    gr.Markdown(f"### {fig.title}")
                    if fig.png is not None:
                        gr.Image(str(fig.png), show_label=False, interactive=False, elem_id=f"study-{fig.name}")
                    with gr.Accordion("numbers and reading", open=fig.png is None):
                        gr.Markdown(fig.notes)
        playhead = gr.Number(0.0, visible=False)
        timer = gr.Timer(SETTINGS.tick_s)

        plots = [att_plot, occ_plot, occ_b_plot, mem_plot, lat_plot]
        demo.load(on_load, None, [status, *plots], api_visibility="private")
        demo.unload(on_unload)
        play_btn.click(play_example, [example], [player, status, suggestions, chat], api_name="play_example")
        stop_btn.click(stop, None, [status], api_name="stop").then(None, None, None, js=PAUSE_JS)
        upload_box.upload(upload, [upload_box], [player, status, suggestions, chat], api_name="upload")
        timer.tick(tick, [playhead, view], [status, *plots], js=PLAYHEAD_JS, api_name="tick",
                   show_progress="hidden", concurrency_limit=None)
        view.change(redraw, [view], plots, api_visibility="private", show_progress="hidden")
        suggestions.change(lambda q: q or gr.skip(), [suggestions], [question], api_visibility="private")
        gr.on([ask_btn.click, question.submit], ask, [question], [chat, question, status, view, *plots],
              api_name="ask", show_progress="minimal", show_progress_on=[chat])
        cam.stream(webcam_frame, [cam], [status], stream_every=0.5, api_visibility="private")
        apply_btn.click(configure, [model, policy, compare, budget, chunk, fps, shallow, deep, smoothing, summary,
                                    reindex], [status, chat, compare_col, *plots], api_name="configure").then(
            None, None, None, js=RESTART_JS)
        export_btn.click(export, [view], [files], api_name="export")
        study_btn.click(run_study, [study_budget], [study_plot, study_text], api_name="study")
        gr.Button(visible=False).click(telemetry, None, [api_json], api_name="telemetry")
        gr.Button(visible=False).click(health, None, [api_json], api_name="health")
    return demo
