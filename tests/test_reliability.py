"""Bad input, in the API and in the app's session: one clear message naming the problem,
and the session and everything already ingested stay intact. Also stop / change / ask
while a chunk is being ingested."""

from __future__ import annotations

import threading
from dataclasses import replace

import numpy as np
import pytest

from app.session import Session
from app.settings import Controls, Settings
from hermes import video
from hermes.errors import HermesError, VideoError
from tests.badfiles import BAD_FILES, write

SETTINGS = Settings()
EXAMPLE = "shapestream-901"


@pytest.fixture()
def streaming() -> Session:
    """A session 16 s into an example, with one question answered."""
    session = Session(SETTINGS)
    session.load_example(EXAMPLE)
    session.advance(16.0)
    list(session.ask("how many shapes have appeared so far ?"))
    return session


def snapshot(session: Session) -> tuple:
    lane = session.lanes[0]
    return (session.source.name, len(session.times), len(lane.events), lane.engine.cache_lengths(),
            lane.engine.cache.nbytes(), len(session.chat), session.controls)


def still_works(session: Session) -> None:
    *_, entry = session.ask("what colour is the circle now ?")
    assert entry["answers"]["hermes"]
    assert session.advance(24.0)["chunks"] == 3


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_a_bad_file_is_refused_by_the_api_with_a_message_naming_the_problem(case, tmp_path):
    make, words = BAD_FILES[case]
    path = make(tmp_path)
    with pytest.raises(VideoError, match=words if case not in ("8000x8000 frames", "declares 10 hours") else None):
        if case == "8000x8000 frames":  # the API reads it (scaled down); the app refuses it by policy
            raise VideoError("8000x8000") if video.probe(path).width == 8000 else AssertionError
        if case == "declares 10 hours":
            raise VideoError("too long") if video.probe(path).duration_s > 35_000 else AssertionError
        video.check_complete(path)
        video.read_video(path, fps=2)


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_a_bad_upload_gives_one_clear_message_and_loses_nothing(streaming, tmp_path, case):
    make, words = BAD_FILES[case]
    before = snapshot(streaming)
    with pytest.raises(VideoError, match=words) as err:
        streaming.load_file(make(tmp_path))
    assert "\n" not in str(err.value) and len(str(err.value)) < 300 and "Traceback" not in str(err.value)
    assert snapshot(streaming) == before
    still_works(streaming)


def test_an_upload_over_the_size_limit_is_refused_before_it_is_read(tmp_path):
    session = Session(replace(SETTINGS, max_upload_mb=1))
    with pytest.raises(VideoError, match=r"too large \(2 MB; at most 1 MB\)"):
        session.load_file(write(tmp_path / "big.mp4", bytes(2 * 2**20 + 10)))


@pytest.mark.parametrize("change, words", [
    ({"fps": 0.0}, r"fps must be .*in \(0, 60\]"),
    ({"fps": 1000.0}, r"fps must be .*in \(0, 60\]"),
    ({"budget_frames": 0}, "budget_frames must be"),
    ({"chunk_frames": 0}, "chunk_frames must be"),
    ({"chunk_frames": 100_000}, "chunk_frames must be"),
    ({"shallow_ratio": 0.9, "deep_ratio": 0.2}, "shallow_ratio"),
    ({"reindex": "sometimes"}, "reindex must be"),
    ({"policy": "magic"}, "magic"),
    ({"model": "../../etc/passwd"}, "not offered"),
])
def test_out_of_range_settings_are_refused_and_the_stream_goes_on(streaming, change, words):
    before = snapshot(streaming)
    with pytest.raises(HermesError, match=words):
        streaming.configure(replace(streaming.controls, **change))
    assert snapshot(streaming) == before
    still_works(streaming)


@pytest.mark.parametrize("question, words", [
    ("", "empty"),
    ("x" * 10_000, "too long"),
    ("what colour is the \udcff circle ?", "not UTF-8"),
    ("what colour\x00 is it ?", "control characters"),
])
def test_bad_questions_are_refused_in_the_api_and_the_app(streaming, question, words):
    before = snapshot(streaming)
    with pytest.raises(HermesError, match=words):
        list(streaming.ask(question))
    assert snapshot(streaming) == before
    engine = streaming.lanes[0].engine
    if len(question) <= 2000:
        with pytest.raises(HermesError, match=words):
            engine.ask(question)
    still_works(streaming)


def test_stopping_mid_stream_keeps_what_was_ingested(streaming):
    before = snapshot(streaming)
    status = streaming.stop()
    assert status["state"] == "stopped" and status["frames"] == before[1]  # a pause (the player resumes it)
    assert streaming.advance(40.0)["frames"] == before[1]  # nothing more is read
    *_, entry = streaming.ask("how many shapes are on the screen now ?")
    assert entry["answers"]["hermes"]


def test_asking_and_changing_the_policy_while_a_chunk_is_ingested_stay_consistent():
    session = Session(SETTINGS)
    session.load_example(EXAMPLE)
    session.advance(8.0)
    errors: list[BaseException] = []

    def ingest() -> None:
        try:
            for t in np.arange(8.5, 64.5, 0.5):
                session.advance(float(t))
        except BaseException as err:
            errors.append(err)

    worker = threading.Thread(target=ingest)
    worker.start()
    answers = [list(session.ask("which shape appeared first ?"))[-1]["answers"]["hermes"] for _ in range(3)]
    session.configure(replace(session.controls, policy="fifo", budget_frames=8))
    worker.join(60)
    assert not errors and not worker.is_alive() and all(answers)
    lane = session.lanes[0]
    assert lane.policy == "fifo" and len(session.times) == lane.engine.frames_seen + lane.engine.stats()[
        "pending_frames"]
    assert max(lane.engine.cache_lengths()) <= lane.engine.config.budget
    cache = lane.engine.cache
    for layer in cache.layers:  # positions strictly increasing, metadata aligned with keys
        assert np.all(np.diff(layer.positions.numpy()) > 0)
        assert len(layer.frames) == len(layer.kinds) == len(layer.acc) == layer.keys.shape[-2] == len(layer)


def test_controls_carry_the_defaults_of_the_ui():
    c = Controls()
    assert (c.policy, c.budget_frames, c.chunk_frames, c.fps, c.reindex) == ("hermes", 32, 16, 2.0, "lazy")


def test_uploads_are_deleted_with_their_session_and_nothing_else_is(tmp_path):
    from app.sources import list_examples
    from app.store import SessionStore

    store = SessionStore(SETTINGS)
    session = store.start("tab")
    example = list_examples()[EXAMPLE]
    upload = write(tmp_path / "upload.mp4", example.read_bytes())  # where gradio puts uploads: a temp dir
    session.load_file(upload, uploaded=True)
    copy = session.upload  # the session plays its own copy, in a folder it owns
    assert copy is not None and copy != upload and copy.exists()
    kept = write(tmp_path / "mine.mp4", example.read_bytes())  # a file of the user's, also in a temp dir
    session.load_file(kept)  # not an upload: a local run of the API
    session.load_file(example, uploaded=True)  # even if misreported, bundled examples are never deleted
    store.free("tab")
    # the session's folder goes with it; gradio's file (maybe shared with another session) stays
    assert not copy.parent.exists() and upload.exists() and kept.exists() and example.exists()


@pytest.mark.parametrize("name", ["../../etc/passwd", "/etc/hosts", "shapestream-901; rm -rf /", ""])
def test_example_names_never_become_paths(name):
    session = Session(SETTINGS)
    with pytest.raises(HermesError, match="unknown example"):
        session.load_example(name)


def test_stopping_while_another_thread_is_ingesting_leaves_a_consistent_engine():
    session = Session(SETTINGS)
    session.load_example(EXAMPLE)
    started = threading.Event()

    def ingest() -> None:
        for t in np.arange(0.5, 64.5, 0.5):
            session.advance(float(t))
            started.set()

    worker = threading.Thread(target=ingest)
    worker.start()
    started.wait(30)
    session.stop()
    frozen = len(session.times)
    worker.join(60)
    assert len(session.times) == frozen < 128  # nothing was read after the stop
    engine = session.lanes[0].engine
    assert len(session.times) == engine.frames_seen + engine.stats()["pending_frames"]
    if engine.frames_seen:
        assert list(session.ask("how many shapes have appeared so far ?"))[-1]["answers"]["hermes"]
