"""Isolation between sessions (issue 19): no session touches another's files or state, only
an explicit start creates a session, one client cannot fill the studio, and bad numbers or
text from the API get one clear message.

First the pieces without a server (the store, the upload gate, a session's own folder), then
app.py on loopback, driven by gradio_client and by gradio's queue protocol as the page's JS
client speaks it (`call`: it can send NaN, a lone surrogate or another session's hash). The
server trusts one proxy hop, so a test plays several clients by the X-Forwarded-For a Space's
proxy would append.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import httpx
import numpy as np
import pytest

from app.playback import check_playhead
from app.session import Session
from app.settings import Settings, panel_number
from app.sources import SessionFiles, UploadGate, list_examples, process_root
from app.store import SessionsFull, SessionStore, SessionTaken, client_address, warn_forwarded_ignored
from hermes.errors import HermesError
from hermes.video import write_video
from tests.apphost import AppServer

SETTINGS = Settings()
EXAMPLE = "shapestream-901"


def clip(path: Path) -> Path:
    """A 20 s video that is not a bundled example (40 frames at 2 fps, a bar moving)."""
    frames = np.zeros((40, 64, 64, 3), np.uint8)
    for i in range(40):
        frames[i, :, (i * 3) % 60:(i * 3) % 60 + 4] = 255
    return write_video(path, frames, fps=2.0)


# ---- without a server ---------------------------------------------------------------------
@pytest.mark.parametrize("peer, forwarded, hops, client", [
    ("203.0.113.5", None, 0, "203.0.113.5"),
    ("203.0.113.5", "198.51.100.7", 0, "203.0.113.5"),  # no proxy trusted: the header is ignored
    ("10.16.3.80", "198.51.100.7", 1, "198.51.100.7"),  # the Space proxy appended the client
    ("10.16.3.80", "6.6.6.6, 198.51.100.7", 1, "198.51.100.7"),  # what the client claimed is ignored
    ("10.16.3.80", "6.6.6.6, 198.51.100.7, 10.0.0.2", 2, "198.51.100.7"),  # two trusted proxies
    ("10.16.3.80", None, 1, "10.16.3.80"),  # no header: the peer
    ("10.16.3.80", "2001:db8:1:2:aaaa::1", 1, "2001:db8:1:2::/64"),  # one IPv6 host holds a /64
    ("10.16.3.80", "::ffff:198.51.100.7", 1, "198.51.100.7"),
    (None, None, 0, "unknown"),
])
def test_the_client_is_the_address_the_trusted_proxy_saw(peer, forwarded, hops, client):
    assert client_address(peer, forwarded, hops) == client


def test_only_a_start_creates_a_session_and_a_session_answers_only_its_client():
    store = SessionStore(SETTINGS)
    assert store.find("tab", "198.51.100.7") is None and len(store) == 0  # a read creates nothing
    mine = store.start("tab", "198.51.100.7")
    assert store.find("tab", "198.51.100.7") is mine and store.start("tab", "198.51.100.7") is mine
    assert store.find("tab", "203.0.113.9") is None  # someone else with the hash sees no session
    with pytest.raises(SessionTaken, match="another connection"):
        store.start("tab", "203.0.113.9")  # ... and cannot take it over
    assert not store.free("tab", "203.0.113.9") and store.peek("tab") is mine  # ... nor free it
    assert store.free("tab", "198.51.100.7") and len(store) == 0


def test_one_client_gets_at_most_its_share_and_the_local_machine_is_not_capped():
    store = SessionStore(replace(SETTINGS, max_sessions=8, max_sessions_per_client=0))
    assert store.settings.client_cap == 2  # a quarter of the studio
    store.start("a1", "198.51.100.7")
    store.start("a2", "198.51.100.7")
    with pytest.raises(SessionsFull, match="at most 2 per visitor"):
        store.start("a3", "198.51.100.7")
    store.start("b1", "203.0.113.9")  # another client still gets in
    for i in range(5):
        store.start(f"local{i}", "127.0.0.1")  # the operator's machine (tests, make demo)
    with pytest.raises(SessionsFull, match="The studio is full"):
        store.start("c1", "192.0.2.1")
    assert len(store) == 8 and store.clients() == 3


def test_a_session_at_work_is_not_idle_however_long_its_request_takes():
    store = SessionStore(replace(SETTINGS, idle_timeout_s=60))
    session = store.start("tab")
    session.touched -= 120  # its request began two minutes ago
    with session.lock:  # ... and is still working (a long ingest or answer on a loaded machine)
        sweeper = threading.Thread(target=store.sweep)
        sweeper.start()
        sweeper.join()
        assert store.peek("tab") is session
    store.sweep()  # done and idle: freed
    assert store.peek("tab") is None


def test_identical_uploads_from_two_sessions_survive_either_leaving(tmp_path):
    shared = clip(tmp_path / "clip.mp4")  # gradio stores both users' identical bytes at one path
    first, second = Session(SETTINGS), Session(SETTINGS)
    try:
        first.load_file(shared, uploaded=True)
        second.load_file(shared, uploaded=True)
        assert first.upload != second.upload and first.upload.parent != second.upload.parent
        first.close()
        assert shared.exists() and not first.upload and second.upload.exists()
        second.configure(second.controls)  # restarts the stream: the file is read again from the start
        assert second.advance(10.0)["chunks"] == 1
        second.load_example(EXAMPLE)  # the upload is no longer playing: its copy goes, the original stays
        assert not any(second.files.folder.iterdir()) and shared.exists()
    finally:
        first.close()
        second.close()


def test_a_session_deletes_only_its_own_folder(tmp_path):
    files = SessionFiles()
    mine = files.adopt(clip(tmp_path / "clip.mp4"))
    other = tmp_path / "someone-elses.mp4"
    shutil.copyfile(mine, other)
    files.remove(other)  # not the session's: left alone
    folder = files.folder
    files.close()
    assert other.exists() and not folder.exists() and (tmp_path / "clip.mp4").exists()


def test_folders_a_killed_process_left_are_deleted_when_the_next_one_starts(tmp_path):
    base = tmp_path / SessionFiles.ROOT
    dead = int(Path("/proc/sys/kernel/pid_max").read_text()) + 1  # no process has it (a finished pid may be reused)
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        for pid in (dead, live.pid):  # a server killed with its sessions open, and one still running
            (base / str(pid) / "session-x").mkdir(parents=True)
            (base / str(pid) / "session-x" / "1-clip.mp4").write_bytes(b"frames")
        started = subprocess.run([sys.executable, "-c", "from app.sources import SessionFiles; "
                                  "print(SessionFiles().folder)"], env={**os.environ, "TMPDIR": str(tmp_path)},
                                 cwd=Path(__file__).resolve().parent.parent, capture_output=True, text=True,
                                 check=True, timeout=120)
        folder = Path(started.stdout.strip().splitlines()[-1])
        assert not (base / str(dead)).exists() and (base / str(live.pid) / "session-x" / "1-clip.mp4").exists()
        assert folder.is_dir() and folder.parent.parent == base
    finally:
        live.kill()
        live.wait()


def test_a_study_reads_its_upload_to_the_end_when_another_source_starts_meanwhile(tmp_path, monkeypatch):
    import app.session

    session = Session(SETTINGS)
    try:
        session.load_file(clip(tmp_path / "clip.mp4"), uploaded=True)
        assert session.advance(10.0)["chunks"] == 1
        measure = app.session.study_stream

        def switched_meanwhile(*args, **kwargs):  # the user plays an example while the study runs
            session.load_example(EXAMPLE)  # ... which deletes the upload it replaces
            return measure(*args, **kwargs)

        monkeypatch.setattr(app.session, "study_stream", switched_meanwhile)
        study = session.study(budget=16, bins=4)
        assert study.n_questions > 0 and session.source.name == EXAMPLE
        assert not list(session.files.folder.iterdir())  # the upload and the study's own link are both gone
    finally:
        session.close()


def test_a_closed_session_makes_no_more_files(tmp_path):
    upload = clip(tmp_path / "clip.mp4")
    session = Session(SETTINGS)
    session.load_file(upload, uploaded=True)
    folder = session.files.folder
    session.close()  # the tab closed
    assert not folder.exists()
    made = set(process_root().iterdir())
    for late in (lambda: session.load_file(upload, uploaded=True), lambda: session.files.folder,  # an upload in flight
                 lambda: session.files.export_folder(tmp_path, 3)):  # an export in flight
        with pytest.raises(HermesError, match="session has ended"):
            late()
    assert set(process_root().iterdir()) == made and not (tmp_path / SessionFiles.ROOT).exists()
    assert upload.exists()


def test_a_session_keeps_only_its_newest_exports_and_deletes_them_with_it(tmp_path):
    files = SessionFiles()
    made = []
    for i in range(5):
        folder = files.export_folder(tmp_path, keep=3)
        (folder / "hermes-trace.json").write_text(str(i))
        made.append(folder)
    assert [f.exists() for f in made] == [False, False, True, True, True]
    assert made[-1].parent.parent == process_root(tmp_path)  # the session's folder of exports, in this process's
    files.close()
    assert not any(f.exists() for f in made) and not made[-1].parent.exists()


@pytest.mark.parametrize("planted", ["a link to another folder", "a file", "a dangling link"])
def test_session_folders_never_go_where_someone_else_could_have_put_them(tmp_path, planted):
    shared, elsewhere = tmp_path / SessionFiles.ROOT, tmp_path / "elsewhere"
    elsewhere.mkdir()
    if planted == "a link to another folder":
        shared.symlink_to(elsewhere, target_is_directory=True)
    elif planted == "a file":
        shared.write_text("not a folder")
    else:
        shared.symlink_to(tmp_path / "gone")
    root = process_root(tmp_path)
    assert root.parent == tmp_path and root.name.startswith(f"{SessionFiles.ROOT}-") and root.is_dir()
    assert oct(root.stat().st_mode & 0o777) == "0o700" and not any(elsewhere.iterdir())


def test_the_upload_gate_accepts_what_every_blocks_built_received(tmp_path):
    first, second = clip(tmp_path / "first.mp4"), clip(tmp_path / "second.mp4")
    gate = UploadGate(600)
    gate.watch({str(first)})  # the first Blocks' upload_file_set, then a second build()'s
    gate.watch({str(second)})
    gate.claim(first)
    gate.claim(second)
    with pytest.raises(HermesError, match="not uploaded here"):
        gate.claim(clip(tmp_path / "third.mp4"))


def test_a_forwarded_address_without_a_trusted_proxy_is_ignored_with_one_warning(caplog):
    warn_forwarded_ignored.cache_clear()
    with caplog.at_level(logging.WARNING, logger="hermes.studio"):
        for _ in range(3):
            assert client_address("10.0.0.9", "198.51.100.7", 0) == "10.0.0.9"
        assert client_address("10.0.0.9", "198.51.100.7", 1) == "198.51.100.7"
    warned = [r.getMessage() for r in caplog.records if "X-Forwarded-For" in r.getMessage()]
    assert len(warned) == 1 and "HERMES_PROXY_HOPS" in warned[0]


def _received(tmp_path: Path) -> tuple[Path, set[str]]:
    upload = clip(tmp_path / "upload.mp4")
    return upload, {str(upload)}


def _example_bytes(tmp_path: Path) -> tuple[Path, set[str]]:
    copy = shutil.copyfile(list_examples()[EXAMPLE], tmp_path / "mine.mp4")
    return Path(copy), {str(copy)}


def _not_received(tmp_path: Path) -> tuple[Path, set[str]]:
    return list_examples()[EXAMPLE], set()  # e.g. the cached copy of an example the page was served


def _stale(tmp_path: Path) -> tuple[Path, set[str]]:
    upload, received = _received(tmp_path)
    os.utime(upload, (time.time() - 3600, time.time() - 3600))
    return upload, received


@pytest.mark.parametrize("make, refused", [
    (_received, None),
    (_not_received, "not uploaded here"),
    (_example_bytes, "bundled example 'shapestream-901'"),
    (_stale, "more than 10 min ago"),
])
def test_upload_accepts_only_a_fresh_upload_once(tmp_path, make, refused):
    gate = UploadGate(600)
    path, received = make(tmp_path)
    gate.watch(received)
    if refused:
        with pytest.raises(HermesError, match=refused):
            gate.claim(path)
        return
    gate.claim(path)
    with pytest.raises(HermesError, match="already registered"):
        gate.claim(path)  # another session naming the same delivery
    fresh = tmp_path / "again.mp4"  # the same bytes uploaded again: a new file renamed into place
    shutil.copyfile(path, fresh)
    os.replace(fresh, path)
    gate.claim(path)


BAD_PLAYHEADS = [(float("nan"), "got nan"), (float("inf"), "got inf"), (-1.0, "got -1.0"), ("12", "got '12'"),
                 (True, "got True")]


@pytest.mark.parametrize("value, words", BAD_PLAYHEADS)
def test_a_bad_playhead_is_refused(value, words):
    with pytest.raises(HermesError, match=rf"player's time .* {words}"):
        check_playhead(value)


def test_a_bad_playhead_changes_nothing_and_the_stream_goes_on():
    session = Session(SETTINGS)
    session.load_example(EXAMPLE)
    session.advance(4.0)
    for value, _ in BAD_PLAYHEADS:
        with pytest.raises(HermesError, match="player's time"):
            session.advance(value)
    status = session.status()
    assert status["playhead_s"] == 4.0 and status["frames"] == 9 and not status["ended"]
    assert session.advance(8.0)["chunks"] == 1


@pytest.mark.parametrize("value, whole, words", [
    (float("nan"), False, "must be a finite number, got nan"),
    (float("-inf"), False, "must be a finite number, got -inf"),
    (32.5, True, "must be a whole number, got 32.5"),
    ([32], True, r"must be a finite number, got \[32\]"),
])
def test_panel_numbers_must_be_finite(value, whole, words):
    with pytest.raises(HermesError, match=words):
        panel_number("budget_frames", value, whole=whole)
    assert panel_number("budget_frames", 32.0, whole=True) == 32


@pytest.mark.parametrize("error, words", [
    (RuntimeError("index out of range\nin some frame"), "unexpected error in tick (RuntimeError); it was logged"),
    (HermesError("the stream has used all 32768 positions of the model"),
     "ingest stopped: the stream has used all 32768 positions of the model. What is in memory stays"),
])
def test_an_error_inside_a_handler_is_one_line_and_ingest_stops_once(monkeypatch, error, words):
    from app import ui

    request = SimpleNamespace(session_hash=uuid.uuid4().hex, client=SimpleNamespace(host="127.0.0.1"), headers={})
    session = ui.STORE.start(request.session_hash, "127.0.0.1")
    try:
        session.load_example(EXAMPLE)

        def fails(frames, times):
            raise error

        monkeypatch.setattr(session.lanes[0].engine, "ingest", fails)
        status = ui.tick(4.0, "global", request)[0]
        assert words in status and "\n" not in status, status
        for playhead in (6.0, 8.0):  # the next ticks read nothing more and say why, without failing again
            status = ui.tick(playhead, "global", request)[0]
            assert "ingest stopped" in status and "unexpected" not in status, status
        assert session.status()["frames"] == 0 and session.status()["pending_frames"] == 0
    finally:
        ui.STORE.free(request.session_hash)


# ---- through the app on loopback ----------------------------------------------------------
@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("server-tmp")
    app = AppServer(env={"TMPDIR": str(tmp), "GRADIO_TEMP_DIR": str(tmp / "gradio"), "HERMES_PROXY_HOPS": "1",
                         "HERMES_MAX_SESSIONS": "8", "HERMES_MAX_SESSIONS_PER_CLIENT": "2"}).wait()
    app.tmp = tmp
    yield app
    app.stop()


@functools.cache
def fn_index(url: str, name: str) -> int:
    deps = httpx.get(url + "config", timeout=30).json()["dependencies"]
    if name == "unload":
        return next(d["id"] for d in deps if [None, "unload"] in d["targets"])
    return next(d["id"] for d in deps if d.get("api_name") == name)


def call(url: str, name: str, data: list, session_hash: str | None = None, xff: str | None = None) -> dict:
    """One event through gradio's queue as the page's client sends it (JSON may hold NaN):
    the output message ({"data": [...]} or {"error": ...})."""
    session_hash = session_hash or uuid.uuid4().hex
    headers = {"x-forwarded-for": xff} if xff else {}
    body = json.dumps({"data": data, "fn_index": fn_index(url, name), "session_hash": session_hash,
                       "event_data": None, "trigger_id": None}, allow_nan=True)
    httpx.post(url + "gradio_api/queue/join", content=body, timeout=30,
               headers={"content-type": "application/json", **headers}).raise_for_status()
    with httpx.stream("GET", url + "gradio_api/queue/data", params={"session_hash": session_hash},
                      headers=headers, timeout=120) as stream:
        for line in stream.iter_lines():
            if line.startswith("data:") and (msg := json.loads(line[5:]))["msg"] == "process_completed":
                return msg["output"]
    raise AssertionError(f"{name}: the event stream ended without a result")


def heartbeat_ends(url: str, session_hash: str, xff: str | None = None) -> None:
    """A tab with this hash closes: its heartbeat connection opens and drops (gradio then runs unload)."""
    headers = {"x-forwarded-for": xff} if xff else {}
    with httpx.stream("GET", f"{url}gradio_api/heartbeat/{session_hash}", headers=headers, timeout=30) as s:
        next(s.iter_lines())


def health(url: str) -> dict:
    return call(url, "health", [])["data"][0]


def wait_for(condition, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.25)
    return condition()


def folders(server) -> list[Path]:
    root = server.tmp / SessionFiles.ROOT / str(server.proc.pid)
    return sorted(root.iterdir()) if root.exists() else []


@pytest.mark.timeout(300)
@pytest.mark.parametrize("leaves_first", ["first", "second"])
def test_identical_uploads_from_two_browsers_survive_either_leaving(server, tmp_path, leaves_first):
    from gradio_client import Client, handle_file

    video = clip(tmp_path / "holiday.mp4")
    tabs = {who: Client(server.url, verbose=False, download_files=False, headers={"x-forwarded-for": xff})
            for who, xff in (("first", "198.51.100.1"), ("second", "198.51.100.2"))}
    players = {}
    for who, tab in tabs.items():
        player, status, *_ = tab.predict(handle_file(str(video)), api_name="/upload")
        assert "holiday.mp4" in status, status
        players[who] = Path(player["path"])
    assert players["first"] == players["second"]  # gradio keeps one file for both
    assert len(folders(server)) == 2  # each session plays its own copy
    stays = "second" if leaves_first == "first" else "first"
    heartbeat_ends(server.url, tabs[leaves_first].session_hash, tabs[leaves_first].headers["x-forwarded-for"])
    assert wait_for(lambda: len(folders(server)) == 1), "the session that left kept its folder"
    assert players[stays].exists()  # the page's copy in gradio's cache is untouched
    tab = tabs[stays]
    tab.predict("hermes-tiny", "hermes", "off", 32, 16, 2.0, 0.1, 0.7, True, True, "lazy", api_name="/configure")
    status = tab.predict(10.0, "global", api_name="/tick")[0]  # decoded again from the start: its file is there
    assert "holiday.mp4" in status and "1 chunk)" in status, status
    heartbeat_ends(server.url, tab.session_hash, tab.headers["x-forwarded-for"])
    assert wait_for(lambda: not folders(server))
    for t in tabs.values():
        t.close()


@pytest.mark.timeout(300)
def test_only_a_file_uploaded_with_the_request_can_be_registered(server, tmp_path):
    from gradio_client import Client, handle_file

    tab = Client(server.url, verbose=False, download_files=False)
    player, *_ = tab.predict(EXAMPLE, api_name="/play_example")
    cached_example = {"path": player["path"], "meta": {"_type": "gradio.FileData"}}  # served to every page
    out = call(server.url, "upload", [cached_example], tab.session_hash)["data"]
    assert "not uploaded here" in out[1], out[1]
    _, status, *_ = tab.predict(handle_file(str(list_examples()[EXAMPLE])), api_name="/upload")
    assert "bundled example 'shapestream-901'" in status and "Examples tab" in status
    assert Path(player["path"]).exists() and list_examples()[EXAMPLE].exists()

    other = Client(server.url, verbose=False, download_files=False)
    theirs, status, *_ = other.predict(handle_file(str(clip(tmp_path / "theirs.mp4"))), api_name="/upload")
    assert "theirs.mp4" in status
    out = call(server.url, "upload", [{"path": theirs["path"], "meta": {"_type": "gradio.FileData"}}],
               tab.session_hash)["data"]
    assert "already registered" in out[1], out[1]  # another session's upload, named by its path
    assert EXAMPLE in tab.predict(8.0, "global", api_name="/tick")[0]  # the refusals changed nothing
    for t in (tab, other):
        heartbeat_ends(server.url, t.session_hash)
        t.close()


@pytest.mark.timeout(300)
def test_reads_and_stop_with_unknown_hashes_create_no_session(server):
    before = health(server.url)["sessions"]
    started = time.monotonic()
    for name, data in [("stop", []), ("telemetry", []), ("export", ["global"]), ("tick", [1.0, "global"]),
                       ("study", [256]), ("ask", ["what colour is the circle now ?"])] * 2:
        out = call(server.url, name, data)
        text = json.dumps(out)
        assert "no session" in text, (name, text[:300])
    elapsed = time.monotonic() - started
    assert health(server.url)["sessions"] == before, "a read created a session"
    print(f"12 reads with unknown hashes in {elapsed:.2f} s, sessions {before} -> {before}")


@pytest.mark.timeout(300)
def test_a_single_client_cannot_take_more_than_its_share(server):
    before = health(server.url)
    hashes = [uuid.uuid4().hex for _ in range(4)]
    outs = [call(server.url, "play_example", [EXAMPLE], h, xff="198.51.100.10") for h in hashes[:3]]
    statuses = [o["data"][1] for o in outs]
    assert EXAMPLE in statuses[0] and EXAMPLE in statuses[1]
    assert "at most 2 per visitor" in statuses[2], statuses[2]
    spoofed = call(server.url, "play_example", [EXAMPLE], hashes[3], xff="192.0.2.200, 198.51.100.10")
    assert "at most 2 per visitor" in spoofed["data"][1]  # what the client claims is not who it is
    other_tab = uuid.uuid4().hex
    other = call(server.url, "on_load", [], other_tab, xff="198.51.100.10, 198.51.100.11")  # another client
    assert "Choose an example" in other["data"][0]
    after = health(server.url)
    assert after["sessions"] == before["sessions"] + 3 and after["clients"] == before["clients"] + 2
    for h in hashes[:2]:
        heartbeat_ends(server.url, h, "198.51.100.10")
    assert wait_for(lambda: health(server.url)["sessions"] == before["sessions"] + 1)
    assert EXAMPLE in call(server.url, "play_example", [EXAMPLE], hashes[2], xff="198.51.100.10")["data"][1]
    heartbeat_ends(server.url, hashes[2], "198.51.100.10")
    heartbeat_ends(server.url, other_tab, "198.51.100.11")


@pytest.mark.timeout(300)
def test_another_client_with_the_hash_can_neither_read_nor_free_a_session(server):
    victim, xff = uuid.uuid4().hex, "198.51.100.20"
    assert EXAMPLE in call(server.url, "play_example", [EXAMPLE], victim, xff=xff)["data"][1]
    call(server.url, "tick", [8.0, "global"], victim, xff=xff)
    sessions = health(server.url)["sessions"]
    assert "no session" in call(server.url, "telemetry", [], victim, xff="203.0.113.66")["data"][0]["error"]
    call(server.url, "unload", [], victim, xff=xff)  # the unload function through the queue API, as its owner
    heartbeat_ends(server.url, victim, xff="203.0.113.66")  # a heartbeat for the hash from another address
    time.sleep(2)
    assert health(server.url)["sessions"] == sessions
    trace = call(server.url, "telemetry", [], victim, xff=xff)["data"][0]
    assert trace["source"] == EXAMPLE and trace["status"]["chunks"] == 1  # untouched
    heartbeat_ends(server.url, victim, xff=xff)  # its own tab closing frees it
    assert wait_for(lambda: health(server.url)["sessions"] == sessions - 1)


BAD_INPUTS = [  # endpoint, inputs, where the message is, what it says
    ("tick", [float("nan"), "global"], 0, "player's time .* got nan"),
    ("tick", [float("inf"), "global"], 0, "player's time .* got inf"),
    ("configure", ["hermes-tiny", "hermes", "off", float("nan"), 16, 2.0, 0.1, 0.7, True, True, "lazy"], 0,
     "budget_frames must be a finite number, got nan"),
    ("configure", ["hermes-tiny", "hermes", "off", 32, float("nan"), 2.0, 0.1, 0.7, True, True, "lazy"], 0,
     "chunk_frames must be a finite number, got nan"),
    ("configure", ["hermes-tiny", "hermes", "off", 32, 16, float("nan"), 0.1, 0.7, True, True, "lazy"], 0,
     "fps must be a finite number, got nan"),
    ("study", [float("nan")], 1, "Cannot run the study:.* the study's budget must be a finite number, got nan"),
    ("ask", ["what colour is the \udcff circle ?"], 2, "not valid text"),
    ("ask", [" " * 3000 + "x" * 501], 2, r"too long \(501 characters; at most 500\)"),
    ("play_example", [[EXAMPLE]], 1, "the example must be named by one string"),
]


@pytest.fixture(scope="module")
def streaming_tab(server):
    """A session 8 s into the example (one chunk in memory)."""
    tab = uuid.uuid4().hex
    call(server.url, "play_example", [EXAMPLE], tab)
    call(server.url, "tick", [8.0, "global"], tab)
    yield tab
    heartbeat_ends(server.url, tab)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("name, data, at, words", BAD_INPUTS, ids=[f"{b[0]}-{i}" for i, b in enumerate(BAD_INPUTS)])
def test_bad_numbers_and_text_from_the_api_give_one_clear_line(server, streaming_tab, name, data, at, words):
    import re

    out = call(server.url, name, data, streaming_tab)
    message = out["data"][at]
    assert re.search(words, message) and "\n" not in message, message
    status = call(server.url, "tick", [8.0, "global"], streaming_tab)["data"][0]  # the stream and session go on
    assert EXAMPLE in status and "1 chunk)" in status and "stopped" not in status, status


@pytest.mark.timeout(300)
def test_exports_are_served_from_the_session_few_at_a_time_and_go_with_it(server):
    from gradio_client import Client

    def on_disk() -> list[Path]:
        return sorted(p for p in server.tmp.rglob("hermes-*") if p.is_file())

    tab = Client(server.url, verbose=False, download_files=False)
    tab.predict(EXAMPLE, api_name="/play_example")
    tab.predict(8.0, "global", api_name="/tick")
    served = [[Path(f["path"]) for f in tab.predict("global", api_name="/export")] for _ in range(5)]
    assert {p.name for p in served[-1]} == {"hermes-trace.json", "hermes-figures.html"}
    assert set(on_disk()) == set(served[-3] + served[-2] + served[-1])  # the newest 3; gradio made no copy
    exports_root = server.tmp / "gradio" / SessionFiles.ROOT / str(server.proc.pid)
    assert all(p.parent.parent.parent == exports_root for p in served[-1])
    trace = httpx.get(f"{server.url}gradio_api/file={next(p for p in served[-1] if p.suffix == '.json')}", timeout=30)
    assert trace.status_code == 200 and trace.json()["source"] == EXAMPLE  # the page can download it
    heartbeat_ends(server.url, tab.session_hash)
    tab.close()
    assert wait_for(lambda: not on_disk()), on_disk()
