"""A real browser (headless Debian Chromium via playwright) against app.py on loopback.

The page loads, the example video plays (currentTime advances), the attention and
occupancy plots change while it plays, a typed question gets an answer in the chat, and a
1280x800 screenshot is saved to tests/artifacts/app.png.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from tests.apphost import ARTIFACTS, chromium, needs_chromium, open_app, served

pytestmark = [needs_chromium, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def server():
    with served("browser-app.log") as app:
        yield app


def sessions(server) -> int:
    from gradio_client import Client

    return Client(server.url, verbose=False).predict(api_name="/health")["sessions"]


def plot_signature(page, elem_id: str) -> str:
    """What a plotly plot currently draws (its traces' z / y data), as a string."""
    return page.evaluate(
        """(id) => { const d = document.querySelector('#' + id + ' .js-plotly-plot');
                     return d && d.data ? JSON.stringify(d.data.map(t => [t.z, t.y, t.x])) : ''; }""", elem_id)


def test_the_page_plays_an_example_draws_memory_and_answers(server):
    with chromium() as browser:
        page = open_app(browser, server.url, {"width": 1280, "height": 800})
        empty_att, empty_occ = plot_signature(page, "attention"), plot_signature(page, "occupancy")

        page.get_by_role("button", name="▶ Play").click()
        page.wait_for_selector("#player video", timeout=30_000)
        times = []
        for _ in range(40):
            time.sleep(0.5)
            times.append(page.evaluate("() => document.querySelector('#player video').currentTime"))
            if times[-1] > 9.0:
                break
        assert times[-1] > times[0] + 5.0, f"the video did not play: currentTime {times}"

        page.wait_for_function("() => /[1-9]\\d* chunks?\\)/.test(document.querySelector('#status').innerText)")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and plot_signature(page, "occupancy") == empty_occ:
            time.sleep(0.5)
        first_att, first_occ = plot_signature(page, "attention"), plot_signature(page, "occupancy")
        assert first_occ != empty_occ and first_att != empty_att, "the plots did not draw while the video played"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and plot_signature(page, "occupancy") == first_occ:
            time.sleep(0.5)
        assert plot_signature(page, "occupancy") != first_occ, "the occupancy map did not change as the video played"

        page.locator("#question textarea").fill("how many shapes are on the screen now ?")
        page.locator("#ask").click()
        page.wait_for_function(
            "() => [...document.querySelectorAll('#chat .message')].some(m => m.innerText.includes('hermes'))",
            timeout=30_000)
        page.wait_for_function("() => document.querySelector('#attention').innerText.includes('question:')",
                               timeout=30_000)  # after the answer the map shows where the question looked
        reply = page.locator("#chat .message").last.inner_text()
        assert "hermes" in reply and "ground truth" in reply
        page.screenshot(path=str(ARTIFACTS / "app.png"), full_page=False)
        page.screenshot(path=str(ARTIFACTS / "app-full.png"), full_page=True)

        page.get_by_role("tab", name="Study").click()  # the committed figures, and the study on this stream
        page.wait_for_selector("#study-mechanistic img", timeout=30_000)
        assert page.locator("#study-efficiency img").count() == 1
        page.locator("#study-run").click()
        page.wait_for_function("() => /^Over \\d+ (question|local pseudo-quer)/.test("
                               "document.querySelector('#study-reading').innerText)", timeout=60_000)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not plot_signature(page, "study-plot"):
            time.sleep(0.5)  # the text can arrive a moment before plotly has drawn
        drawn = plot_signature(page, "study-plot")
        assert re.search(r'"shape":"12, ?32"', drawn), drawn[-300:]  # a 12-layer x 32-bin heatmap was drawn
        page.screenshot(path=str(ARTIFACTS / "study.png"), full_page=False)
        assert sessions(server) >= 1
        page.close()  # closing the tab frees its session (demo.unload)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and sessions(server) > 0:
            time.sleep(1)
        assert sessions(server) == 0


def write_y4m(path: Path, n: int = 20, width: int = 160, height: int = 120) -> Path:
    """A fake camera feed: a bright square moving over grey (YUV 4:2:0, what Chromium's
    --use-file-for-fake-video-capture reads; it loops the file)."""
    import numpy as np

    with open(path, "wb") as f:
        f.write(f"YUV4MPEG2 W{width} H{height} F10:1 Ip A1:1 C420jpeg\n".encode())
        for i in range(n):
            y = np.full((height, width), 100, np.uint8)
            x0 = (i * 6) % (width - 30)
            y[40:70, x0:x0 + 30] = 230
            chroma = np.full((height // 2, width // 2), 128, np.uint8)
            f.write(b"FRAME\n" + y.tobytes() + chroma.tobytes() + chroma.tobytes())
    return path


def test_the_webcam_streams_frames_into_the_engine(server, tmp_path):
    feed = write_y4m(tmp_path / "feed.y4m")
    fake_camera = ("--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
                   f"--use-file-for-fake-video-capture={feed}")
    with chromium(fake_camera) as browser:
        context = browser.new_context(viewport={"width": 1280, "height": 800}, permissions=["camera"])
        page = open_app(context, server.url)
        page.get_by_role("tab", name="Webcam").click()
        page.get_by_text("Click to Access Webcam").click()
        page.wait_for_selector("video[data-testid=webcam-video]", timeout=30_000)
        page.locator("button[aria-label='capture photo']:visible").click()
        page.wait_for_function("() => /webcam.*\\((\\d+) frames/.test(document.querySelector('#status').innerText) "
                               "&& +document.querySelector('#status').innerText.match(/\\((\\d+) frames/)[1] >= 4",
                               timeout=60_000)
        assert "webcam" in page.locator("#status").inner_text()
