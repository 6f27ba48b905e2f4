"""The app without a browser: sessions (pacing, ground truth, compare mode, bad input, the
store's cap and idle timeout) and app.py end to end through gradio_client on loopback."""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from app.playback import Playback
from app.session import Session
from app.settings import BUNDLED_OFFERED, Controls, Settings, duration_text
from app.sources import downscale
from app.store import SessionsFull, SessionStore
from hermes.backbones import BUNDLED_MODELS, bundled_ready
from hermes.errors import HermesError, VideoError
from tests.apphost import AppServer
from tests.badfiles import BAD_FILES

SETTINGS = Settings()
EXAMPLE = "shapestream-901"


@pytest.fixture()
def session() -> Session:
    return Session(SETTINGS)


def test_ingest_follows_the_playhead_chunk_by_chunk(session):
    session.load_example(EXAMPLE)
    status = session.advance(3.0)
    assert status["frames"] == 7 and status["chunks"] == 0 and status["pending_frames"] == 7
    status = session.advance(8.0)  # 17 frames at 2 fps: one chunk of 16 in memory, one waiting
    assert status["chunks"] == 1 and status["pending_frames"] == 1 and session.memory_time() == 7.5
    assert session.times == [i / 2 for i in range(17)]
    assert (status["device"], status["dtype"]) == ("cpu", "float32")  # what the status line names


def test_ingest_is_bounded_per_tick_and_reports_how_far_behind(session):
    session.load_example(EXAMPLE)
    status = session.advance(60.0)  # far ahead of what one tick may ingest
    cap = SETTINGS.max_chunks_per_tick * session.controls.chunk_frames
    assert status["frames"] == cap
    assert status["behind_s"] == pytest.approx(60.0 - session.times[-1] - 0.5)
    while not session.advance(70.0)["ended"]:
        pass
    status = session.status()
    assert status["frames"] == 128 and status["behind_s"] == 0 and status["pending_frames"] == 0


def test_answers_stream_and_come_with_ground_truth_at_the_newest_frame_in_memory(session):
    session.load_example(EXAMPLE)
    session.advance(16.0)
    entries = [dict(e, answers=dict(e["answers"])) for e in session.ask("how many shapes have appeared so far ?")]
    last = entries[-1]
    assert last["time"] == 15.5 and last["truth"] == "two"
    assert last["answers"]["hermes"] and last["ttft_ms"]["hermes"] > 0
    assert len(entries) >= 2  # streamed piece by piece
    assert session.truth("what colour is the nonagon now ?").answer is None  # not a ShapeStream question


@pytest.mark.parametrize("question, message", [
    ("", "empty"),
    ("   ", "empty"),
    ("x" * 501, "too long"),
])
def test_bad_questions_raise_a_clear_error_and_lose_nothing(session, question, message):
    session.load_example(EXAMPLE)
    session.advance(8.0)
    before = session.lanes[0].engine.cache_lengths()
    with pytest.raises(HermesError, match=message):
        list(session.ask(question))
    assert session.lanes[0].engine.cache_lengths() == before and session.chat == []


def test_asking_before_anything_is_in_memory_says_so(session):
    with pytest.raises(HermesError, match="nothing is in memory yet"):
        list(session.ask("what colour is the circle now ?"))


@pytest.fixture()
def in_the_store():
    """A session in the app's store, with the request the page's handlers get, and an example's
    first chunk in memory."""
    from app import ui

    request = SimpleNamespace(session_hash=uuid.uuid4().hex, client=SimpleNamespace(host="127.0.0.1"), headers={})
    session = ui.STORE.start(request.session_hash, "127.0.0.1")
    session.load_example(EXAMPLE)
    for playhead in (4.0, 8.0):
        ui.tick(playhead, "global", request)
    assert session.memory_time() is not None
    yield session, request
    ui.STORE.free(request.session_hash)


def test_the_question_box_is_emptied_once_so_a_question_typed_while_an_answer_streams_stays(in_the_store):
    import gradio as gr

    from app import ui

    _, request = in_the_store
    boxes = [out[1] for out in ui.ask("what colour is the square now ?", request)]
    assert len(boxes) >= 3 and boxes[0] == ""
    assert all(box == gr.skip() for box in boxes[1:])  # never written again: what was typed meanwhile stays


def test_an_answer_that_fails_after_it_started_says_it_stopped_and_keeps_the_chat(in_the_store, monkeypatch):
    from app import ui

    session, request = in_the_store

    def breaks(question, max_new_tokens=None):
        yield "The"
        raise HermesError("the decoder ran out of positions")

    monkeypatch.setattr(session.lanes[0].engine, "ask_stream", breaks)
    outs = list(ui.ask("what colour is the square now ?", request))
    notice = outs[-1][2]
    assert "The answer stopped: the decoder ran out of positions" in notice and "Not asked" not in notice
    assert session.chat[-1]["answers"]["hermes"] == "The"  # what was answered stays in the chat
    refused = list(ui.ask("", request))[-1]
    assert "Not asked:" in refused[2]  # refused before it was taken: said so, the text back in the box


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("name, data, message", [
    ("empty.mp4", b"", "empty"),
    ("notes.mp4", b"these are my notes, not a video\n" * 20, "text"),
    ("noise.mp4", bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8)), "not a video|could not"),
])
def test_a_bad_upload_changes_nothing(session, tmp_path, name, data, message):
    session.load_example(EXAMPLE)
    session.advance(8.0)
    before = (session.source.name, session.lanes[0].engine.cache_lengths(), len(session.times))
    with pytest.raises(VideoError, match=message):
        session.load_file(write(tmp_path / name, data))
    assert (session.source.name, session.lanes[0].engine.cache_lengths(), len(session.times)) == before
    assert session.advance(16.0)["chunks"] == 2  # still streaming the example


def test_a_file_that_breaks_mid_stream_keeps_what_was_ingested_and_says_why(session):
    session.load_example(EXAMPLE)

    def breaks_after_40_frames(good):
        for i, item in enumerate(good):
            if i == 40:
                raise VideoError("clip.mp4 is truncated or corrupt: decoding failed after 19.50 s (bad NAL unit)")
            yield item

    session.playback.frames = breaks_after_40_frames(session.playback.frames)  # the decoder, as if the file broke
    while not session.advance(1e6)["ended"]:
        pass
    status = session.status()
    assert status["frames"] == 40 and status["chunks"] == 3  # two full chunks + the flushed rest
    assert "decoding stopped" in status["notice"] and "bad NAL unit" in status["notice"]
    *_, entry = session.ask("how many shapes have appeared so far ?")
    assert entry["answers"]["hermes"]


def test_uploads_over_the_size_limit_are_refused(tmp_path):
    small = Session(replace(SETTINGS, max_upload_mb=0))
    with pytest.raises(VideoError, match="too large"):
        small.load_file(write(tmp_path / "big.mp4", b"\0" * 2048))


def test_compare_mode_runs_two_policies_on_the_same_frames(session):
    session.configure(Controls(model=SETTINGS.models[0], policy="hermes", compare="fifo", budget_frames=4))
    session.load_example(EXAMPLE)
    session.advance(16.0)
    a, b = session.lanes
    assert (a.policy, b.policy) == ("hermes", "fifo")
    assert len(a.events) == len(b.events) == 2 and a.engine.frames_seen == b.engine.frames_seen
    assert a.engine.config.budget == b.engine.config.budget == 4 * 16 + 1  # 4 frames of 16 tokens, a newline
    assert max(a.engine.cache_lengths()) <= 65 and max(b.engine.cache_lengths()) <= 65
    *_, entry = session.ask("which shape appeared first ?")
    assert set(entry["answers"]) == {"hermes", "fifo"}


def test_when_one_compared_policy_has_no_room_neither_takes_the_frames(session, monkeypatch):
    session.configure(Controls(model=SETTINGS.models[0], policy="hermes", compare="full", budget_frames=4))
    session.load_example(EXAMPLE)
    session.advance(8.0)
    a, b = session.lanes
    before = (a.engine.frames_seen, b.engine.frames_seen, list(session.times))

    def no_room(n_frames: int) -> None:
        raise HermesError(f"{n_frames} new frames refused, nothing was added: the model has no positions left")

    monkeypatch.setattr(b.engine, "check_room", no_room)  # full runs out of positions; hermes would not
    with pytest.raises(HermesError, match=r"ingest stopped: .*no positions left"):
        session.advance(16.0)
    assert (a.engine.frames_seen, b.engine.frames_seen, session.times) == before  # the lanes still hold one stream
    assert session.status()["ended"]


def test_changing_the_settings_restarts_the_stream(session):
    session.load_example(EXAMPLE)
    session.advance(16.0)
    session.configure(Controls(model=SETTINGS.models[0], policy="fifo", budget_frames=8, chunk_frames=8))
    assert session.times == [] and session.lanes[0].events == [] and session.source.name == EXAMPLE
    status = session.advance(4.0)
    assert status["chunks"] == 1 and session.lanes[0].policy == "fifo"


def test_the_default_budget_is_32_frames_of_the_loaded_model_shown_as_tokens_frames_and_seconds(session):
    backbone = session.lanes[0].engine.backbone
    controls = session.controls
    assert controls.budget_frames == 32 and controls.fps == 2.0 and controls.chunk_frames == 16
    budget = session.lanes[0].engine.config.budget
    assert budget == 32 * backbone.tokens_per_frame + 2 * int(backbone.newline_per_chunk)  # two chunks' newlines
    assert budget >= 32 * backbone.tokens_per_frame  # holds a long-range question's 16 s
    text = session.budget_text()
    assert text.startswith(f"32 frames = {budget:,} tokens per layer = 16 s at 2 fps "
                           f"({backbone.tokens_per_frame} tokens a frame)") and controls.model in text
    # the real architecture's 196 tokens a frame, one image_newline per video (none in the cache)
    ov = Controls(budget_frames=32)
    assert ov.budget_tokens(lambda n: 196 * n) == 6272
    assert ov.budget_text(196, lambda n: 196 * n).startswith("32 frames = 6,272 tokens per layer = 16 s at 2 fps")
    with pytest.raises(HermesError, match="budget_frames must be"):
        Controls(budget_frames=0).budget_tokens(backbone.chunk_tokens)


def test_the_budget_slider_counts_frames(client):
    sliders = {c["props"].get("elem_id"): c["props"] for c in client.config["components"] if c["type"] == "slider"}
    budget = sliders["budget"]
    assert budget["label"] == "budget (frames per layer)" and budget["value"] == 32
    assert (budget["minimum"], budget["maximum"], budget["step"]) == (1, 128, 1)
    assert "tokens and seconds" in budget["info"]


def test_frames_are_decoded_and_ingested_a_few_at_a_time(session, monkeypatch):
    pulled = []

    def decoder():  # full-resolution frames: the playback must not read ahead of what is taken
        for i in range(100):
            pulled.append(i)
            yield np.zeros((1080, 1920, 3), np.uint8), i / 2

    playback = Playback(decoder(), fps=2.0)
    batches = playback.batches(30.0, limit=40, size=4)
    first, _ = next(batches)
    assert len(first) == 4 and len(pulled) == 4  # nothing decoded beyond the batch
    assert [len(f) for f, _ in batches] == [4] * 9 and len(pulled) == 40
    assert [len(f) for f, _ in playback.batches(60.0, limit=3, size=4)] == [3]
    # the session hands the engines one batch at a time
    session.load_example(EXAMPLE)
    sizes, engine = [], session.lanes[0].engine
    ingest = engine.ingest
    monkeypatch.setattr(engine, "ingest", lambda frames, times: (sizes.append(len(frames)), ingest(frames, times))[1])
    session.advance(60.0)
    assert sum(sizes) == SETTINGS.max_chunks_per_tick * 16 and max(sizes) == SETTINGS.ingest_batch


def test_a_model_outside_the_allowlist_is_refused(session):
    with pytest.raises(HermesError, match="not offered"):
        session.configure(Controls(model="someone/some-model"))
    assert session.controls.model == SETTINGS.models[0]


def test_webcam_frames_are_sampled_at_fps_and_downscaled(session, monkeypatch):
    clock = iter(np.arange(0, 10, 0.1))
    monkeypatch.setattr("app.session.time.monotonic", lambda: float(next(clock)))
    session.start_webcam()
    for _ in range(40):
        session.add_webcam_frame(np.zeros((480, 640, 3), np.uint8))
    assert len(session.times) == pytest.approx(8, abs=1)  # 2 fps over ~4 s
    assert session.status()["pending_frames"] + session.lanes[0].engine.frames_seen == len(session.times)
    small = downscale(np.zeros((480, 640, 4), np.uint8), SETTINGS.webcam_size)  # RGBA from some browsers
    assert max(small.shape[:2]) <= SETTINGS.webcam_size and small.shape[2] == 3
    assert small.shape[1] / small.shape[0] == pytest.approx(640 / 480, rel=0.02)


@pytest.mark.parametrize("seconds, text", [(900, "15 min"), (90, "1 min 30 s"), (45, "45 s"), (3600, "60 min"),
                                           (36000.4, "600 min")])
def test_limits_are_written_without_rounding_them_away(seconds, text):
    assert duration_text(seconds) == text
    assert Settings(idle_timeout_s=int(seconds)).idle_text == text


def test_the_store_creates_lazily_caps_and_frees_idle_sessions(monkeypatch):
    store = SessionStore(replace(SETTINGS, max_sessions=2, idle_timeout_s=60))
    a = store.start("a")
    assert store.start("a") is a and len(store) == 1
    store.start("b")
    with pytest.raises(SessionsFull, match="full"):
        store.start("c")
    store.free("a")
    store.start("c")
    store.peek("b").touched -= 120  # idle for two minutes
    store.sweep()
    assert store.peek("b") is None and len(store) == 1


# ---- end to end: app.py on loopback through gradio_client ---------------------------------
def test_the_study_measures_this_stream_and_says_what_it_needs(session):
    with pytest.raises(HermesError, match="nothing has streamed yet"):
        session.study()
    session.start_webcam()
    with pytest.raises(HermesError, match="webcam keeps no frames"):
        session.study()
    session.load_example(EXAMPLE)
    session.advance(16.0)  # two chunks in memory (memory time 15.5 s)
    with pytest.raises(HermesError, match="no question found the FIFO cache full"):
        session.study(budget=4096)
    list(session.ask("how many shapes are on the screen now ?"))
    engine = session.lanes[0].engine
    before = (engine.cache.lengths(), engine.next_position, len(engine.questions), len(session.chat))
    study = session.study(budget=64, bins=8)
    suggested = [q for q in session.source.suggestions if q["time"] <= 15.5]
    assert study.n_questions == 1 + len(suggested)  # the chat's question and the example's up to now
    assert study.heatmap.shape == (12, 8) and (study.heatmap.sum(1) <= 1 + 1e-6).all()
    assert study.tiers[0] == "shallow" and study.tiers[-1] == "deep"
    assert (engine.cache.lengths(), engine.next_position, len(engine.questions), len(session.chat)) == before
    assert session.status()["frames"] == 33  # the study changed nothing in the session


@pytest.fixture(scope="module")
def client():
    from gradio_client import Client

    server = AppServer().wait()
    yield Client(server.url, verbose=False)
    server.stop()


@pytest.mark.timeout(300)
def test_end_to_end_example_question_answer_and_telemetry(client, tmp_path):
    from gradio_client import handle_file

    player, status, _, _ = client.predict(EXAMPLE, api_name="/play_example")
    assert player and EXAMPLE in status
    for playhead in (2.0, 4.0, 6.0, 8.0):
        status = client.predict(playhead, "global", api_name="/tick")[0]
    assert "1 chunk)" in status and " on cpu in float32" in status
    meta = json.loads((Path(__file__).resolve().parent.parent / "assets" / "examples" / f"{EXAMPLE}.json").read_text())
    # asked at 7.9 s (the first chunk ends at 7.5 s); one the bundled model gets right (it gets 4 of
    # the 5 asked then; it calls the blue circle green)
    q = next(q for q in meta["questions"] if q["time"] == 7.9 and q["question"] == "which shape appeared first ?")
    outputs = list(client.submit(q["question"], api_name="/ask"))
    assert len(outputs) >= 2  # streamed
    reply = outputs[-1][0][-1]["content"][0]["text"]
    assert f"**hermes**: {q['answer']}" in reply and f"ground truth: **{q['answer']}** ✓" in reply

    bad = write(tmp_path / "notes.mp4", b"not a video at all\n" * 30)
    _, status, _, _ = client.predict(handle_file(str(bad)), api_name="/upload")
    assert "cannot be played" in status and "text" in status

    trace = client.predict(api_name="/telemetry")
    assert trace["source"] == EXAMPLE and trace["status"]["chunks"] == 1
    lane = trace["lanes"][0]
    assert lane["policy"] == "hermes" and len(lane["chunks"]) == 1
    assert np.asarray(lane["chunks"][0]["kept"]).shape[0] == 12
    assert lane["questions"][0]["question"] == q["question"]

    trace_file, figures_file = client.predict("question", api_name="/export")
    exported = json.loads(Path(trace_file).read_text())
    assert exported["lanes"][0]["chunks"][0]["kept"] == lane["chunks"][0]["kept"]
    html = Path(figures_file).read_text()
    assert '<meta charset="utf-8">' in html and "Attention — question:" in html
    assert html.count('class="plotly-graph-div"') == 4  # no empty "compared with" placeholder outside compare mode
    assert exported["header"]["stream"].startswith(EXAMPLE) and "hermes" in exported["header"]["policy"]


@pytest.mark.timeout(300)
def test_the_study_tab_runs_on_the_sessions_stream_and_explains_when_it_cannot(client):
    from gradio_client import Client

    fresh = Client(client.src, verbose=False)  # a session of its own
    _, text = fresh.predict(256, api_name="/study")
    assert "Cannot run the study" in text and "nothing has streamed yet" in text
    fresh.predict(EXAMPLE, api_name="/play_example")
    for playhead in (4.0, 8.0, 12.0, 16.0):
        fresh.predict(playhead, "global", api_name="/tick")
    figure, text = fresh.predict(64, api_name="/study")
    assert "questions on a FIFO cache of 64 tokens per layer" in text and "shallow layer 0" in text
    data = json.loads(figure["plot"])["data"]
    assert data[0]["type"] == "heatmap" and "questions" in json.loads(figure["plot"])["layout"]["uirevision"]


@pytest.mark.timeout(300)
@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_uploads_show_one_clear_line_in_the_ui_and_the_session_goes_on(client, tmp_path, case):
    from gradio_client import handle_file

    client.predict(EXAMPLE, api_name="/play_example")
    client.predict(8.0, "global", api_name="/tick")
    make, words = BAD_FILES[case]
    _, status, _, _ = client.predict(handle_file(str(make(tmp_path))), api_name="/upload")
    assert status.startswith("⚠️ That upload cannot be played:") and "\n" not in status
    assert re.search(words, status), status
    status = client.predict(16.0, "global", api_name="/tick")[0]
    assert EXAMPLE in status and "2 chunks" in status  # the example kept streaming


@pytest.mark.parametrize("budget, chunk, fps", [(0, 16, 2.0), (32, 0, 2.0), (32, 16, 0.0), (129, 16, 2.0)])
def test_out_of_range_settings_are_refused_by_the_ui_and_the_stream_goes_on(client, budget, chunk, fps):
    from gradio_client.exceptions import AppError

    client.predict(EXAMPLE, api_name="/play_example")
    client.predict(8.0, "global", api_name="/tick")
    with pytest.raises(AppError, match=r"Value .* is (less|greater) than (minimum|maximum) value"):
        client.predict(SETTINGS.models[0], "hermes", "off", budget, chunk, fps, 0.1, 0.7, True, True, "lazy",
                       api_name="/configure")
    assert "2 chunks" in client.predict(16.0, "global", api_name="/tick")[0]


@pytest.mark.parametrize("env, first, offered", [
    ("", "hermes-tiny", ["BUNDLED", "random-tiny"]),
    ("llava-hf/llava-onevision-qwen2-0.5b-ov-hf", "llava-hf/llava-onevision-qwen2-0.5b-ov-hf",
     ["llava-hf/llava-onevision-qwen2-0.5b-ov-hf", "BUNDLED", "random-tiny"]),
    ("someone/unknown-model", "hermes-tiny", ["BUNDLED", "random-tiny"]),  # never a free hub id
])
def test_hermes_model_picks_the_space_model_from_an_allowlist(monkeypatch, env, first, offered):
    """BUNDLED: the bundled models that can load here, hermes-tiny first (hermes-smol once
    trained and its base prepared)."""
    monkeypatch.setenv("HERMES_MODEL", env)
    bundled = [m for m in BUNDLED_OFFERED if bundled_ready(m)]
    assert bundled[0] == "hermes-tiny"
    models = Settings().models
    assert models[0] == first and models == [m for x in offered for m in (bundled if x == "BUNDLED" else [x])]


def test_a_bundled_model_on_a_base_is_offered_only_once_the_base_is_prepared(monkeypatch, tmp_path):
    part = tmp_path / "hermes-smol"
    part.mkdir()
    (part / "config.json").write_text("{}")
    (part / "hermes.json").write_text(json.dumps({"base": "smollm2-135m-instruct"}))
    monkeypatch.setitem(BUNDLED_MODELS, "hermes-smol", part)
    monkeypatch.setenv("HERMES_CACHE", str(tmp_path / "empty-cache"))  # no base prepared there
    assert "hermes-smol" not in Settings().models
    stamp = tmp_path / "empty-cache" / "smollm2-135m-instruct" / ".stamp"
    stamp.parent.mkdir(parents=True)
    stamp.write_text("prepared")
    assert Settings().models[:2] == ["hermes-tiny", "hermes-smol"]


def test_hermes_model_may_name_a_local_model_directory(monkeypatch, tmp_path):
    monkeypatch.setenv("HERMES_MODEL", str(tmp_path))
    assert Settings().models[0] == str(tmp_path)
