"""Playhead and ingest in step, in a real browser (headless Debian Chromium via playwright)
against app.py on loopback: after Apply and after switching examples memory restarts with the
player; Stop pauses ingest and the player's own play resumes it; seeking back and forward and
the end of the stream are said in the status; a warning stays readable after the timer has
ticked; unapplied settings are flagged; the attention view says "global" on a new stream; an
answer says what memory it covers. Screenshots go to tests/artifacts/sync-*.png.

    .venv/bin/python -m pytest -q tests/test_browser_sync.py
"""

from __future__ import annotations

import re
import time

import pytest

from tests.apphost import ARTIFACTS, chromium, needs_chromium, open_app, served

pytestmark = [needs_chromium, pytest.mark.timeout(400)]
RATE = 2.0  # the player plays this much faster than real time, to reach 20 s in 10 s


@pytest.fixture(scope="module")
def server():
    with served("browser-sync-app.log") as app:
        yield app


@pytest.fixture(scope="module")
def page(server):
    with chromium() as browser:
        yield open_app(browser, server.url, {"width": 1280, "height": 800})


def status(page) -> str:
    return page.locator("#status").inner_text()


def read_to(page) -> float:
    """How far memory has read, from the status line ("... frames read, to 12.5 s; ...")."""
    found = re.search(r"frames? read, to ([\d.]+) s", status(page))
    return float(found.group(1)) if found else -1.0


def player(page, js: str = "v.currentTime") -> float:
    return page.evaluate(f"() => {{ const v = document.querySelector('#player video'); return {js}; }}")


def wait_for(what, timeout: float = 30.0, every: float = 0.25):
    """Poll `what()` until it is truthy; returns its last value (falsy on timeout)."""
    deadline = time.monotonic() + timeout
    while not (value := what()) and time.monotonic() < deadline:
        time.sleep(every)
    return value


def play(page, example: str) -> None:
    page.locator("#example input").fill(example)
    page.locator("#example input").press("Enter")
    page.get_by_role("button", name="▶ Play").click()
    page.wait_for_selector("#player video", timeout=30_000)
    assert wait_for(lambda: example in status(page) and player(page) > 0.2), status(page)
    page.evaluate(f"() => {{ document.querySelector('#player video').playbackRate = {RATE}; }}")


def follows_the_player(page, samples: int = 6) -> list[tuple[float, float]]:
    """(memory read to, player time) a few times, half a second apart: memory never runs ahead of
    the player (by more than a tick at RATE), and moves on with it. How close it keeps up depends
    on the machine (the status says how far behind it is); the two cores here are shared."""
    pairs = []
    for _ in range(samples):
        time.sleep(0.5)
        pairs.append((read_to(page), player(page)))  # memory first: the player only moves on meanwhile
    assert all(0 <= read <= at + 1.0 + 0.5 * RATE for read, at in pairs), pairs
    assert pairs[-1][0] > pairs[0][0], pairs
    return pairs


def shot(page, name: str, top: bool = True) -> None:
    if top:  # the player, the status, the notice and the maps
        page.evaluate("() => window.scrollTo(0, 0)")
    page.screenshot(path=str(ARTIFACTS / f"sync-{name}.png"), full_page=False)


def test_apply_and_a_new_example_restart_memory_with_the_player(page):
    play(page, "shapestream-901")
    assert wait_for(lambda: player(page) >= 20.0 and read_to(page) >= 18.0, timeout=40), (player(page), status(page))
    page.locator("#question textarea").fill("how many shapes are on the screen now ?")
    page.locator("#ask").click()  # the answer says what memory it covers; the view goes to "question"
    page.wait_for_function("() => document.querySelector('#chat').innerText.includes('answered from memory up to')",
                           timeout=30_000)
    reply = page.locator("#chat .message").last.inner_text()
    assert re.search(r"answered from memory up to [\d.]+ s; the player was at [\d.]+ s", reply), reply
    assert wait_for(lambda: page.locator("#view input[value=question]").is_checked(), timeout=20)
    attention = page.locator("#attention")  # new chunks land: still the question's map, at the question's time
    assert wait_for(lambda: "streamed since" in attention.inner_text(), timeout=30), attention.inner_text()
    assert "question:" in attention.inner_text() and "asked with memory up to" in attention.inner_text()
    shot(page, "question-map")

    page.get_by_text("Engine settings").first.click()
    page.get_by_role("button", name="Apply", exact=True).click()
    assert wait_for(lambda: player(page) < 4.0 and 0 <= read_to(page) < 5.0, timeout=20), (player(page), status(page))
    assert "restarts from 0 s" in page.locator("#notice").inner_text()
    assert page.locator("#view input[value=global]").is_checked()  # the radio says what the map shows
    assert "global pseudo-query" in page.locator("#attention").inner_text() or "No attention yet" in page.locator(
        "#attention").inner_text()
    follows_the_player(page)  # from 0 s, not from the old video's 20 s
    shot(page, "after-apply")

    play(page, "shapestream-902")  # another example: memory restarts with its player
    assert read_to(page) < 5.0 and "shapestream-902" in status(page), status(page)
    follows_the_player(page)


def test_stop_then_the_players_play_resumes_ingest(page):
    assert wait_for(lambda: read_to(page) >= 2.0, timeout=20), status(page)
    page.get_by_role("button", name="■ Stop").click()
    assert wait_for(lambda: "stopped at" in status(page) and player(page, "v.paused"), timeout=10), status(page)
    assert "■ Stopped: memory keeps what it read" in page.locator("#notice").inner_text()
    frozen = read_to(page)
    time.sleep(2.0)
    assert read_to(page) == frozen and "stopped at" in status(page)
    shot(page, "stopped")
    page.evaluate("() => document.querySelector('#player video').play()")  # the player's own control
    assert wait_for(lambda: read_to(page) > frozen + 1.0 and "stopped" not in status(page), timeout=15), status(page)
    assert "Stopped" not in page.locator("#notice").inner_text()  # resuming was the next action


def test_seeks_back_and_forward_are_said_in_the_status(page):
    assert wait_for(lambda: read_to(page) >= 8.0, timeout=20), status(page)
    page.evaluate("() => { document.querySelector('#player video').currentTime = 1.0; }")
    assert wait_for(lambda: "◀◀ player at" in status(page), timeout=10), status(page)
    assert "ingest continues from" in status(page)
    shot(page, "seek-back")
    page.evaluate("() => { document.querySelector('#player video').currentTime = 40.0; }")
    assert wait_for(lambda: "▶▶ the player jumped from" in status(page), timeout=10), status(page)
    assert wait_for(lambda: read_to(page) >= 39.5, timeout=20), status(page)  # caught up, frames in between read
    shot(page, "seek-forward")


def test_the_end_of_the_stream_and_play_restarts_it(page):
    page.evaluate("() => { document.querySelector('#player video').currentTime = 62.0; }")
    assert wait_for(lambda: "stream ended" in status(page), timeout=30), status(page)
    assert player(page, "v.ended")
    page.get_by_role("button", name="▶ Play").click()  # the loaded example again: from 0 s
    assert wait_for(lambda: player(page) < 3.0 and not player(page, "v.paused") and 0 <= read_to(page) < 3.0,
                    timeout=20), (player(page), status(page))


def test_warnings_stay_readable_and_unapplied_settings_are_flagged(page):
    play(page, "shapestream-903")
    page.locator("#question textarea").fill("what colour is the circle now ?")
    page.locator("#ask").click()  # before the first chunk
    assert wait_for(lambda: "Not asked: nothing is in memory yet" in page.locator("#notice").inner_text(), timeout=10)
    time.sleep(3.0)  # six ticks of the timer
    assert "nothing is in memory yet" in page.locator("#notice").inner_text()
    assert "nothing is in memory" not in status(page)  # the status ticks on, separately
    shot(page, "warning")
    budget = page.locator("#budget input[type=number]")
    budget.fill("16")
    budget.press("Enter")
    assert wait_for(lambda: "budget frames 32 → 16" in page.locator("#unapplied").inner_text(), timeout=10)
    assert page.get_by_text("1 not applied").count() >= 1  # the panel's title says so too, closed or open
    page.locator("#unapplied").scroll_into_view_if_needed()
    shot(page, "unapplied", top=False)
    page.get_by_role("button", name="Apply", exact=True).click()
    assert wait_for(lambda: page.locator("#unapplied").inner_text().strip() == "", timeout=15)
    assert "Settings applied (16 frames" in page.locator("#notice").inner_text()
