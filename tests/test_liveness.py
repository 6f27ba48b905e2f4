"""Liveness (issue 19): abandoning a decode never hangs the process, in the library or in the app.

Dropping a decode generator after one frame (the upload's first-frame check, stop, Apply,
closing a session) used to hang the process for good on some files: PyAV's Python log
callback took the GIL on FFmpeg's frame threads while the decoder was freed under the GIL.
Here, in a subprocess with a timeout so a hang fails the test instead of stalling the
suite: 200 open-one-frame-drop cycles per reader on a variable-frame-rate mkv (with the old
options, PANIC-level Python log callback and frame threads, PyAV hung after 10 to 40 cycles
in 3 of 3 runs). Then the app on loopback: 200 rounds of upload (a 1280x720 H.264 clip) +
tick + stop, with ``GET /config`` answering within 2 s after each round (an app whose PyAV
reader had the old options hung in round 18).
"""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from hermes.video import iter_frames, write_video
from tests.apphost import ROOT, AppServer

CYCLES = 200
CYCLES_TIMEOUT_S = 120  # 200 cycles take ~2 s (PyAV) and ~6 s (decord) on 2 busy cores
ROUNDS = 200
CONFIG_WITHIN_S = 2.0
CALL_WITHIN_S = 30.0  # a round takes ~0.4 s on 2 busy cores; past this the server hangs


def textured(n: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """n frames of 8x8 blocks of random colour sliding sideways: real work for the decoder."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (height // 8 + 1, width // 8 + 1, 3), np.uint8).repeat(8, 0).repeat(8, 1)
    return np.stack([np.roll(base, 5 * i, axis=1)[:height, :width] for i in range(n)])


def bar(n: int, height: int, width: int) -> np.ndarray:
    """n frames of a white bar crossing a grey field: cheap to decode, a real picture."""
    frames = np.full((n, height, width, 3), 90, np.uint8)
    for i in range(n):
        x = i * (width - 64) // max(n - 1, 1)
        frames[i, :, x:x + 64] = 255
    return frames


def vfr_mkv(path: Path, n: int = 60, height: int = 240, width: int = 320) -> Path:
    """H.264 in Matroska at a variable frame rate (gaps of 7 to 100 ms, as phones and screen
    recorders write): the kind of file that hung."""
    gaps = np.random.default_rng(1).choice([0.007, 0.02, 0.033, 0.05, 0.1], size=n - 1)
    return write_video(path, textured(n, height, width), 30, codec="libx264",
                       times=np.concatenate([[0.0], np.cumsum(gaps)]))


def open_one_frame_drop(path: str, backend: str, cycles: int) -> None:
    """What the subprocess runs: open, take one frame, drop the generator; a line per 10
    cycles done, then the seconds they took."""
    start = time.monotonic()
    for i in range(cycles):
        frames = iter_frames(path, 2, backend=backend)
        next(frames)
        del frames
        if i % 10 == 9:
            print(i + 1, flush=True)
    print(f"{time.monotonic() - start:.2f}", flush=True)


def run_cycles(path: Path, backend: str, cycles: int = CYCLES, timeout: float = CYCLES_TIMEOUT_S,
               prelude: str = "") -> float:
    """Seconds the cycles took in a fresh interpreter (its start not counted); fails the
    test, saying after how many cycles, when it hangs past `timeout` (its start included).
    `prelude`: code run first (to try other decoding options)."""
    code = (f"{prelude}\nfrom tests.test_liveness import open_one_frame_drop\n"
            f"open_one_frame_drop({str(path)!r}, {backend!r}, {cycles})")
    try:
        done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired as hung:
        out = hung.stdout.decode() if isinstance(hung.stdout, bytes) else (hung.stdout or "")
        lines = out.split()
        pytest.fail(f"{backend}: the process hung after {lines[-1] if lines else 'fewer than 10'} of "
                    f"{cycles} open-one-frame-drop cycles ({timeout:.0f} s timeout)")
    assert done.returncode == 0, done.stderr[-2000:]
    *_, counted, seconds = done.stdout.split()
    assert counted == str(cycles)
    return float(seconds)


@pytest.fixture(scope="module")
def vfr_clip(tmp_path_factory) -> Path:
    return vfr_mkv(tmp_path_factory.mktemp("liveness") / "vfr.mkv")


def test_the_clip_has_a_variable_frame_rate(vfr_clip):
    times = [t for _, t in iter_frames(vfr_clip, 1000, backend="pyav")]
    gaps = np.round(np.diff(times), 3)
    assert len(times) == 60 and set(gaps) == {0.007, 0.02, 0.033, 0.05, 0.1}


@pytest.mark.timeout(2 * CYCLES_TIMEOUT_S + 60)
@pytest.mark.parametrize("backend", ["pyav", "decord"])
def test_opening_a_vfr_mkv_taking_one_frame_and_dropping_it_never_hangs(vfr_clip, backend):
    seconds = run_cycles(vfr_clip, backend)
    print(f"{backend}: {CYCLES} cycles in {seconds:.1f} s")


# ---- the app ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def server():
    app = AppServer().wait()
    yield app
    app.stop()


def answer(client, *args, api_name: str, round_no: int):
    """client.predict, failing the test (not waiting for ever) when the app does not answer."""
    try:
        return client.submit(*args, api_name=api_name).result(timeout=CALL_WITHIN_S)
    except TimeoutError:
        pytest.fail(f"round {round_no}: {api_name} did not answer within {CALL_WITHIN_S:.0f} s (the server hangs)")


def config_seconds(url: str) -> float:
    """Seconds `GET /config` took to answer (fails past CONFIG_WITHIN_S)."""
    start = time.monotonic()
    try:
        with urllib.request.urlopen(url + "config", timeout=CONFIG_WITHIN_S) as reply:
            assert reply.status == 200 and b"components" in reply.read()
    except OSError as err:  # a timeout included
        pytest.fail(f"GET /config did not answer within {CONFIG_WITHIN_S} s ({err})")
    return time.monotonic() - start


@pytest.mark.timeout(600)
def test_200_rounds_of_upload_tick_stop_leave_the_server_answering(server, tmp_path):
    from gradio_client import Client, handle_file

    clip = write_video(tmp_path / "clip-720p.mp4", bar(20, 720, 1280), 10)  # 2 s, H.264, 6 kB
    # plain HTTP on loopback: no certificate to verify (httpx loading the CA bundle for every
    # request was 90% of the client's CPU), and the player's copy of the clip is not fetched back
    client = Client(server.url, verbose=False, download_files=False, ssl_verify=False)
    start, slowest = time.monotonic(), 0.0
    for i in range(ROUNDS):
        _, status, *_ = answer(client, handle_file(str(clip)), api_name="/upload", round_no=i)
        assert not status.startswith("⚠️"), f"round {i}: {status}"
        status = answer(client, 1.0, "global", api_name="/tick", round_no=i)[0]  # mid-file: stop drops a live reader
        assert "clip-720p.mp4" in status, f"round {i}: {status}"
        answer(client, api_name="/stop", round_no=i)
        slowest = max(slowest, config_seconds(server.url))
    print(f"{ROUNDS} rounds in {time.monotonic() - start:.1f} s; slowest GET /config {slowest:.2f} s")
