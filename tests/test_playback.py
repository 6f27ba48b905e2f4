"""Playhead and ingest in step, without a browser: app.playback (the player's reports, stop and
resume, seeks), the session's stream ids (a time reported for another stream is ignored), the
status line and the notices (app.ui.status_line, the handlers), unapplied settings and what an
answer covers. Run: .venv/bin/python -m pytest -q tests/test_playback.py
"""

from __future__ import annotations

import uuid
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest

from app import render, ui
from app.playback import Playback, PlayerReport, check_report
from app.session import Session
from app.settings import Controls, Settings
from hermes.errors import HermesError

SETTINGS = Settings()
EXAMPLE = "shapestream-901"  # 64 s at 2 fps: 128 frames, chunks of 16 (8 s)


def frames(n: int = 128, fps: float = 2.0):
    """A decoder's (frame, time) pairs: tiny frames at 1 / fps."""
    for i in range(n):
        yield np.zeros((2, 2, 3), np.uint8), i / fps


def read(playback: Playback, playhead: float, limit: int = 1000) -> list[float]:
    return playback.due(playhead, limit)[1]


# ---- the player's report ------------------------------------------------------------------
@pytest.mark.parametrize("stream, player, expected", [
    (7, "playing", PlayerReport(7, "playing", False)),
    (7.0, "paused seeked", PlayerReport(7, "paused", True)),  # a page's number may come as a float
    (-1, "none", PlayerReport(-1, "none", False)),
    (0, "  ended   seeked ", PlayerReport(0, "ended", True)),
])
def test_the_players_report_is_read_from_the_page(stream, player, expected):
    assert check_report(stream, player) == expected


@pytest.mark.parametrize("stream, player, words", [
    (float("nan"), "playing", "stream id must be a number"),
    (2.5, "playing", "stream id must be a whole number"),
    (-2, "playing", "stream id must be a number in"),
    ("7", "playing", "stream id must be a number"),
    (True, "playing", "stream id must be a number"),
    (7, "running", "player's state must be one of"),
    (7, "", "player's state must be one of"),
    (7, "playing twice", "optionally followed by 'seeked'"),
    (7, None, "player's state must be text"),
])
def test_a_bad_report_is_refused_with_what_is_wrong(stream, player, words):
    with pytest.raises(HermesError, match=words):
        check_report(stream, player)


# ---- app.playback: stop, resume, seeks ----------------------------------------------------
# each step: (the page's state or None for an API call, playhead) -> the state after it and the
# newest time read (None: nothing read yet)
PLAYBACK_CASES = {
    "plays": ([("playing", 3.0), ("playing", 5.0)], "playing", 5.0),
    "a pause stops reading, even ahead": ([("playing", 3.0), ("paused", 3.0), (None, 9.0)], "stopped", 3.0),
    "the player's play resumes": ([("paused", 3.0), ("playing", 4.0)], "playing", 4.0),
    "loading changes nothing": ([("paused", 3.0), ("loading", 6.0)], "stopped", None),
    "ended resumes to the end": ([("paused", 3.0), ("ended", 100.0)], "ended", 63.5),
    "a seek back reads nothing more": ([("playing", 20.0), ("playing seeked", 5.0), ("playing", 5.5)], "playing",
                                       20.0),
}


@pytest.mark.parametrize("steps, state, newest", PLAYBACK_CASES.values(), ids=PLAYBACK_CASES)
def test_the_players_state_paces_reading(steps, state, newest):
    playback = Playback(frames(), fps=2.0)
    times: list[float] = []
    for player, playhead in steps:
        if player is not None:
            playback.report(check_report(1, player), playhead)
        times += read(playback, playhead)
    assert playback.state == state
    assert (times[-1] if times else None) == newest
    assert times == [i / 2 for i in range(len(times))]  # memory is always a prefix of the stream


def test_stop_is_a_pause_and_the_players_play_resumes_it():
    playback = Playback(frames(), fps=2.0)
    read(playback, 4.0)
    playback.pause()  # the Stop button (or the API's /stop)
    assert playback.state == "stopped" and not playback.ended and playback.reading
    assert read(playback, 10.0) == []  # an API caller's playhead does not resume it
    playback.report(check_report(1, "playing"), 5.0)
    assert read(playback, 5.0) == [4.5, 5.0] and playback.state == "playing"
    playback.end("ingest stopped: out of positions")
    playback.pause()
    assert playback.state == "ended" and playback.notice == "ingest stopped: out of positions"


@pytest.mark.parametrize("player, jump_to, seek", [
    ("playing seeked", 30.0, (12.0, 30.0)),  # forward past the furthest playhead: kept
    ("paused seeked", 30.0, (12.0, 30.0)),  # sought while paused: kept too
    ("playing seeked", 12.4, None),  # within one sampling step: nothing to say
    ("playing seeked", 3.0, None),  # backwards: the status derives it from the player's time
    ("playing", 30.0, None),  # a forward jump the page did not call a seek (ingest was just behind)
])
def test_a_seek_forward_is_kept_for_the_status(player, jump_to, seek):
    playback = Playback(frames(), fps=2.0)
    playback.report(check_report(1, "playing"), 12.0)
    read(playback, 12.0)
    playback.report(check_report(1, player), jump_to)
    assert playback.seek == seek and playback.player_s == jump_to


def test_a_seek_forward_is_caught_up_a_bounded_amount_per_call():
    playback = Playback(frames(), fps=2.0)
    playback.report(check_report(1, "playing"), 12.0)
    read(playback, 12.0)
    playback.report(check_report(1, "playing seeked"), 40.0)
    first = read(playback, 40.0, limit=16)
    assert first == [12.5 + i / 2 for i in range(16)]  # the frames in between, in order
    assert playback.behind(first[-1]) == pytest.approx(40.0 - 20.0 - 0.5)
    while (more := read(playback, 40.0, limit=16)):
        first += more
    assert first[-1] == 40.0 and playback.behind(40.0) == 0


# ---- the session: stream ids --------------------------------------------------------------
@pytest.fixture()
def session() -> Session:
    s = Session(SETTINGS)
    s.load_example(EXAMPLE)
    return s


def page(s: Session, playhead: float, player: str = "playing", stream: int | None = None) -> dict:
    """One tick of the page's timer: the player's time, the stream it plays (default: the session's)."""
    return s.advance(playhead, check_report(s.stream if stream is None else stream, player))


@pytest.mark.parametrize("restart", ["apply", "same example", "other example"])
def test_after_a_restart_memory_follows_the_player_from_0(session, restart):
    for t in np.arange(0.5, 20.5, 0.5):
        page(session, float(t))
    old = session.stream
    assert session.status()["ingested_s"] == 20.0
    if restart == "apply":
        session.configure(replace(session.controls, budget_frames=16))
    else:
        session.load_example(EXAMPLE if restart == "same example" else "shapestream-902")
    assert session.stream != old
    status = page(session, 20.5, stream=old)  # the old video's time, or a tick sent before the restart
    assert status["frames"] == 0 and status["state"] == "waiting" and "waiting for the player" in ui.status_line(
        status)
    status = page(session, 1.0)  # the player restarted for the new stream
    assert session.times == [0.0, 0.5, 1.0] and status["state"] == "playing"
    page(session, 20.5, stream=old)  # a late tick of the old stream changes nothing
    assert session.times == [0.0, 0.5, 1.0] and session.status()["state"] == "playing"


def test_stream_ids_are_new_at_every_start_in_the_process():
    a, b = Session(SETTINGS), Session(SETTINGS)
    ids = [a.load_example(EXAMPLE) and a.stream, b.load_example(EXAMPLE) and b.stream, a.start_webcam() and a.stream]
    a.configure(a.controls)
    assert len({*ids, a.stream}) == 4 and 0 not in ids


def test_an_api_caller_is_the_player_and_is_not_checked(session):
    assert session.advance(8.0)["chunks"] == 1  # no report: the playhead alone paces ingest
    session.stop()
    assert session.advance(16.0)["frames"] == 17  # stopped: nothing more until the page's player plays
    assert page(session, 16.0)["chunks"] == 2


def test_stop_and_resume_with_the_players_own_control(session):
    page(session, 9.0)
    status = session.stop()
    assert status["state"] == "stopped" and not status["ended"]
    assert "■ stopped at 9.0 s" in ui.status_line(status)
    assert page(session, 9.0, "paused")["frames"] == 19  # the page paused the player (PAUSE_JS)
    status = page(session, 12.0)  # the player's play control
    assert status["frames"] == 25 and status["state"] == "playing" and "stopped" not in ui.status_line(status)


def test_the_end_of_the_stream_and_play_again(session):
    while not (status := page(session, 64.0, "ended"))["ended"]:
        pass
    line = ui.status_line(status)
    assert "stream ended: memory has read all of it, to 63.5 s" in line and status["memory_s"] == 63.5
    session.load_example(EXAMPLE)  # ▶ Play on the loaded example
    assert page(session, 0.5)["frames"] == 2 and session.status()["state"] == "playing"


def test_the_answer_says_what_memory_it_covers_and_where_the_player_was(session):
    page(session, 8.5)  # one chunk (to 7.5 s), two frames waiting
    *_, entry = session.ask("how many shapes are on the screen now ?")
    assert (entry["time"], entry["player_s"]) == (7.5, 8.5)
    user, reply = render.chat_messages([entry])
    assert user["content"] == "how many shapes are on the screen now ?"
    assert reply["content"].startswith("*answered from memory up to 7.5 s; the player was at 8.5 s*")


@pytest.mark.parametrize("entry, text", [
    ({"time": 15.5, "player_s": 17.2}, "answered from memory up to 15.5 s; the player was at 17.2 s"),
    ({"time": 15.5, "player_s": 15.5}, "answered from memory up to 15.5 s"),
    ({"time": 30.0, "player_s": 5.0}, "answered from memory up to 30.0 s; the player was at 5.0 s"),
    ({"time": 7.5}, "answered from memory up to 7.5 s"),  # a trace from before player_s
])
def test_asked_when_says_memory_and_player(entry, text):
    assert render.asked_when(entry) == text


# ---- the status line (pure) ---------------------------------------------------------------
BASE = {"source": EXAMPLE, "model": "hermes-tiny", "device": "cpu", "dtype": "float32", "frames": 41,
        "chunks": 2, "pending_frames": 9, "memory_s": 15.5, "ingested_s": 20.0, "player_s": 20.0,
        "state": "playing", "seek": None, "behind_s": 0.0, "per_tick": 64, "notice": "", "ended": False}
STATUS_CASES = {
    "playing": ({}, ["memory holds up to 15.5 s (41 frames read, to 20.0 s; 2 chunks)",
                     "9 frames waiting for the chunk to fill"], ["behind", "◀◀", "▶▶", "stopped", "ended"]),
    "nothing in memory yet": ({"memory_s": None, "chunks": 0}, ["memory holds nothing yet"], []),
    "waiting": ({"state": "waiting", "player_s": 0.0, "ingested_s": 0.0},
                ["waiting for the player to restart from 0 s"], ["◀◀"]),
    "stopped": ({"state": "stopped", "player_s": 12.3}, ["■ stopped at 12.3 s", "press play on the player"],
                ["ended"]),
    "behind": ({"behind_s": 6.0}, ["ingest is 6.0 s behind the player (at most 64 frames a tick)"], ["▶▶"]),
    "sought back": ({"player_s": 5.0, "ingested_s": 30.0},
                    ["◀◀ player at 5.0 s, behind what memory has read (to 30.0 s)",
                     "ingest continues from 30.0 s when the player gets there"], ["▶▶"]),
    "sought back after the end": ({"player_s": 5.0, "ingested_s": 63.5, "state": "ended", "ended": True},
                                  ["stream ended", "it has read the whole stream"], ["continues"]),
    "sought forward, catching up": ({"seek": [12.0, 30.0], "player_s": 30.5, "ingested_s": 20.0, "behind_s": 10.0},
                                    ["▶▶ the player jumped from 12.0 to 30.0 s (seek)", "catching up",
                                     "at most 64 frames a tick (10.0 s behind)"], ["behind the player"]),
    "sought forward, caught up": ({"seek": [12.0, 30.0], "player_s": 31.0, "ingested_s": 31.0},
                                  ["memory caught up, the frames in between read at once"], ["catching"]),
    "long after the seek": ({"seek": [12.0, 30.0], "player_s": 45.0, "ingested_s": 45.0}, [], ["▶▶"]),
    "a seek while stopped": ({"seek": [12.0, 30.0], "player_s": 30.0, "state": "stopped"}, ["■ stopped at 30.0 s"],
                             ["▶▶", "catching"]),
    "ended": ({"state": "ended", "ended": True, "ingested_s": 63.5, "player_s": 63.5},
              ["stream ended: memory has read all of it, to 63.5 s (▶ Play restarts it from 0 s)"], ["⚠️"]),
    "broke": ({"state": "ended", "ended": True, "notice": "decoding stopped: bad NAL unit"},
              ["⚠️ decoding stopped: bad NAL unit"], ["stream ended"]),
}


@pytest.mark.parametrize("change, said, unsaid", STATUS_CASES.values(), ids=STATUS_CASES)
def test_the_status_line_says_what_happened(change, said, unsaid):
    line = ui.status_line({**BASE, **change})
    assert all(words in line for words in said), line
    assert not any(words in line for words in unsaid), line
    assert "\n" not in line and line.startswith(f"**{EXAMPLE}**")


def test_the_status_line_before_any_stream():
    assert ui.status_line({**BASE, "source": None}).startswith("Choose an example stream")


# ---- unapplied settings -------------------------------------------------------------------
@pytest.mark.parametrize("change, said", [
    ({}, []),
    ({"budget_frames": 16}, ["budget frames 32 → 16"]),
    ({"compare": "fifo", "fps": 1.5}, ["compare off → fifo", "fps 2 → 1.5"]),
    ({"smoothing": False, "reindex": "eager"}, ["smoothing True → False", "reindex lazy → eager"]),
])
def test_unapplied_changes_name_each_setting(change, said):
    running = Controls(model=SETTINGS.models[0])
    assert ui.unapplied_changes(running, replace(running, **change)) == said
    assert ui.unapplied_changes(running, replace(running, budget_frames=32.0, fps=2)) == []  # numbers as numbers


# ---- the handlers: notices and the page's stream ------------------------------------------
@pytest.fixture()
def tab():
    """A browser tab's request, with its session started."""
    request = SimpleNamespace(session_hash=uuid.uuid4().hex, client=SimpleNamespace(host="127.0.0.1"), headers={})
    ui.STORE.start(request.session_hash, "127.0.0.1")
    yield request
    ui.STORE.free(request.session_hash)


PANEL = ["hermes-tiny", "hermes", "off", 32, 16, 2.0, 0.1, 0.7, True, True, "lazy"]  # configure's inputs


def test_the_handlers_write_notices_and_tell_the_page_its_stream(tab):
    session = ui.STORE.find(tab.session_hash, "127.0.0.1")
    player, notice, _, chat = ui.play_example(EXAMPLE, tab)
    assert player.endswith(f"{EXAMPLE}.mp4") and notice.startswith(f"▶ **{EXAMPLE}** plays from 0 s") and chat == []
    stream, view, *maps = ui.page_start(0, tab)  # the page still holds the stream before
    assert stream == session.stream and view == "global" and len(maps) == ui.N_PLOTS
    assert all(isinstance(out, dict) and out.get("__type__") == "update" for out in ui.page_start(stream, tab))
    status = ui.page_tick(4.0, "global", stream - 1, "playing", tab)[0]  # the player not restarted yet
    assert "waiting for the player" in status and session.status()["frames"] == 0
    ui.page_tick(4.0, "global", stream, "playing", tab)
    assert session.status()["frames"] == 9
    assert ui.page_tick(4.0, "global", stream, "dancing", tab)[0].startswith("⚠️ the player's state must be")
    assert ui.stop(tab).startswith("■ Stopped: memory keeps what it read (up to 4.0 s)")
    changed = [*PANEL[:3], 16, *PANEL[4:]]
    text, title = ui.unapplied(*changed, tab)
    assert "Not applied yet" in text and "budget frames 32 → 16" in text and "1 not applied" in title["label"]
    notice = ui.configure(*changed, tab)[0]
    assert notice.startswith("Settings applied (16 frames") and "restarts from 0 s" in notice
    assert ui.unapplied(*changed, tab) == ("", {"__type__": "update", "label": ui.SETTINGS_TITLE})
    assert ui.page_start(stream, tab)[0] == session.stream != stream  # Apply: a new stream, the player restarts
    refused = ui.configure(*PANEL[:3], float("nan"), *PANEL[4:], tab)
    assert refused[0].startswith("⚠️ settings not applied: budget_frames must be a finite number")
    assert refused[1] == {"__type__": "update"}  # the chat is kept
