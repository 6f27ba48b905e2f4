"""Compare mode and the Live tab's layout in a real browser (headless Debian Chromium via playwright).

    .venv/bin/python -m pytest -q tests/test_browser_compare.py      # about two minutes

One policy: play ~20 s of the example, ask; at 1280x800 the player, the question box, and the
attention and occupancy maps are all on screen without scrolling, and no plot's title,
subtitle, legend, subplot titles or axis titles overlap or are cut off (also at 1920x1080).
Compare mode: Apply with compare = fifo (budget 16 frames), play, ask; both policies' attention and occupancy maps
and the kept-by-A-not-by-B map are drawn on one time axis, the chat's verdicts name each
policy, and the running accuracy names both. Screenshots of both modes at both sizes go to
tests/artifacts/ (app-1280.png, app-1920.png, app-compare-1280.png, app-compare-1920.png; each
also as the whole page, *-full.png).
"""

from __future__ import annotations

import re
import time

import pytest

from tests.apphost import ARTIFACTS, chromium, needs_chromium, open_app, served
from tests.test_browser import plot_signature

pytestmark = [needs_chromium, pytest.mark.timeout(300)]

QUESTION = "how many shapes are on the screen now ?"  # ShapeStream: a ground truth at any time
SIZES = {"1280": {"width": 1280, "height": 800}, "1920": {"width": 1920, "height": 1080}}
ON_SCREEN = ["#player video", "#question textarea", "#ask", "#attention .js-plotly-plot", "#occupancy .js-plotly-plot"]

# The drawn boxes of every plot's texts that must not overlap each other or leave their figure:
# title, subtitle, each legend entry, annotations (subplot titles), axis titles. Returns
# [[plot id, what, detail], ...]: nothing when the page is right.
OVERLAPS_JS = """() => {
  const box = e => { const b = e.getBoundingClientRect(); return {l: b.left, t: b.top, r: b.right, b: b.bottom}; };
  const meet = (a, b) => a.l < b.r - 1 && b.l < a.r - 1 && a.t < b.b - 1 && b.t < a.b - 1;
  const found = [];
  for (const plot of document.querySelectorAll('.js-plotly-plot')) {
    if (!plot.offsetParent) continue;  // hidden (compare mode off)
    const id = plot.closest('[id]').id, svg = box(plot.querySelector('.main-svg'));
    const parts = [];
    const add = (sel, name) => plot.querySelectorAll(sel).forEach((e, i) => {
      const b = box(e); if (b.r - b.l > 0 && b.b - b.t > 0) parts.push([name + (i ? ' ' + i : ''), b]); });
    add('.gtitle', 'title'); add('.gtitle-subtitle', 'subtitle'); add('.legend .traces', 'legend entry');
    add('.annotation', 'annotation'); add('.xtitle, .x2title, .x3title', 'x title');
    for (const [name, b] of parts) {
      if (b.l < svg.l - 1 || b.r > svg.r + 1 || b.t < svg.t - 1 || b.b > svg.b + 1)
        found.push([id, name + ' is cut off', JSON.stringify([b, svg])]);
    }
    for (let i = 0; i < parts.length; i++) for (let j = i + 1; j < parts.length; j++)
      if (meet(parts[i][1], parts[j][1])) found.push([id, parts[i][0] + ' overlaps ' + parts[j][0], '']);
  }
  return found; }"""

# the x range every layer x frame map shows (its heatmap's axis: the occupancy map's is its second)
RANGES_JS = """(ids) => ids.map(id => { const gd = document.querySelector('#' + id + ' .js-plotly-plot');
  if (!gd || !gd._fullLayout) return null;
  const heat = gd.data.find(t => t.type === 'heatmap' && !(t.x && t.x[0] === 'Σ'));
  const axis = gd._fullLayout['xaxis' + ((heat && heat.xaxis) || 'x').slice(1)];
  return axis.range.map(v => Math.round(v * 100) / 100); })"""


@pytest.fixture(scope="module")
def server():
    with served("browser-compare-app.log") as app:
        yield app


@pytest.fixture()
def browser():
    with chromium() as browser:
        yield browser


def open_page(browser, server):
    return open_app(browser, server.url, SIZES["1280"])


def play_and_ask(page, seconds: float = 20.0) -> str:
    """Play the example for `seconds` of video, ask QUESTION, wait for every answer, scroll to
    the top; returns the reply's text. The video plays on."""
    page.get_by_role("button", name="▶ Play").click()
    page.wait_for_selector("#player video", timeout=30_000)
    deadline = time.monotonic() + 90
    while page.evaluate("() => document.querySelector('#player video').currentTime") < seconds:
        assert time.monotonic() < deadline, "the video did not play"
        time.sleep(0.5)
    page.wait_for_function("() => /\\b[2-9] chunks/.test(document.querySelector('#status').innerText)",
                           timeout=60_000)
    page.locator("#question textarea").fill(QUESTION)
    page.locator("#ask").click()
    page.wait_for_function("() => document.querySelector('#attention').innerText.includes('question:')",
                           timeout=60_000)  # the last output of the answer: every policy has answered
    page.wait_for_function("() => document.querySelector('#accuracy').innerText.includes('right')", timeout=30_000)
    page.evaluate("() => window.scrollTo(0, 0)")
    return page.locator("#chat .message").last.inner_text()


def stop(page) -> None:
    """Stop ingesting; a tick in flight lands."""
    page.get_by_role("button", name="■ Stop").click()
    time.sleep(1.5)


def check_layout(page, size: str, shot: str) -> None:
    """At `size`: nothing in any plot overlaps or is cut off; at 1280x800 the player, the question
    box and the two maps are on screen without scrolling. Saves the screenshot `shot`."""
    page.set_viewport_size(SIZES[size])
    time.sleep(1.5)  # plotly redraws at the new width
    page.evaluate("() => window.scrollTo(0, 0)")
    page.screenshot(path=str(ARTIFACTS / shot), full_page=False)  # before the checks: a failure is seen too
    overlaps = page.evaluate(OVERLAPS_JS)
    page.screenshot(path=str(ARTIFACTS / shot.replace(".png", "-full.png")), full_page=True)  # the panels below
    assert overlaps == []
    if size == "1280":
        for selector in ON_SCREEN:
            element = page.locator(selector).first
            element.wait_for(state="visible", timeout=10_000)  # a tick may be redrawing the plot this moment
            box = element.bounding_box()
            assert box and box["y"] >= 0 and box["y"] + box["height"] <= 800 and box["x"] + box["width"] <= 1280, \
                f"{selector} is not on the 1280x800 screen: {box}"


def test_one_policy_the_player_chat_and_maps_fit_1280x800_with_nothing_overlapping(server, browser):
    page = open_page(browser, server)
    assert not page.locator("#attention-b").is_visible() and not page.locator("#keep-diff").is_visible()
    reply = play_and_ask(page)
    check_layout(page, "1280", "app-1280.png")  # while it plays, the question answered
    check_layout(page, "1920", "app-1920.png")
    assert re.search(r"ground truth: \S+ [✓✗] hermes$", reply, re.M), reply  # the verdict names its policy
    assert re.search(r"hermes 1/1 right|hermes 0/1 right", page.locator("#accuracy").inner_text())
    stop(page)
    chunks = int(re.search(r"(\d+) chunks", page.locator("#status").inner_text()).group(1))
    assert f"after chunk {chunks} (ending at" in page.locator("#occupancy").inner_text()  # counted as the status counts
    page.close()


def test_compare_mode_draws_both_policies_their_difference_and_labelled_verdicts(server, browser):
    page = open_page(browser, server)
    page.get_by_role("button", name=re.compile("^Engine settings")).click()
    page.get_by_label("compare with").click()
    page.get_by_role("option", name="fifo", exact=True).click()
    budget = page.locator("#budget input[type='number']")
    budget.fill("16")  # 8 s of frames: by 20 s both policies have evicted, each its own way
    budget.press("Enter")
    page.get_by_role("button", name="Apply", exact=True).click()
    page.wait_for_selector("#attention-b .js-plotly-plot", state="visible", timeout=30_000)
    page.get_by_role("button", name=re.compile("^Engine settings")).click()  # closed again
    reply = play_and_ask(page)
    check_layout(page, "1920", "app-compare-1920.png")  # first: the wide one is the README's
    check_layout(page, "1280", "app-compare-1280.png")
    stop(page)  # the maps hold still while they are read
    assert re.search(r"ground truth: \S+ [✓✗] hermes · [✓✗] fifo$", reply, re.M), reply  # which mark is whose
    assert "hermes" in reply and "fifo" in reply
    accuracy = page.locator("#accuracy").inner_text()
    assert re.search(r"hermes [01]/1 right", accuracy) and re.search(r"fifo [01]/1 right", accuracy), accuracy

    for elem, says in [("attention", "question:"), ("attention-b", "question:"), ("occupancy", "hermes, budget"),
                       ("occupancy-b", "fifo, budget"), ("keep-diff", "Kept by hermes, not by fifo")]:
        assert says in page.locator(f"#{elem}").inner_text(), elem
        assert "[[" in plot_signature(page, elem), f"{elem} drew no map"  # a heatmap's rows
    assert "— hermes" in page.locator("#attention").inner_text()
    assert "— fifo" in page.locator("#attention-b").inner_text()
    diff = page.locator("#keep-diff").inner_text()
    counts = re.search(r"cells: both (\d+) · only hermes (\d+) · only fifo (\d+) · neither (\d+)", diff)
    assert counts and int(counts.group(2)) > 0, diff  # hermes keeps older frames that fifo has dropped
    ranges = page.evaluate(RANGES_JS, ["attention", "attention-b", "occupancy", "occupancy-b", "keep-diff"])
    assert None not in ranges and len({tuple(r) for r in ranges}) == 1, ranges  # one full-stream time axis
    assert ranges[0][0] < 0.5  # from the stream's first frame, though fifo no longer holds it
    page.close()
