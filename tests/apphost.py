"""Start app.py in a subprocess on a free loopback port (for the gradio_client and browser
tests), and open it in headless Debian Chromium (playwright) with the project's flags."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "tests" / "artifacts"  # screenshots and app logs of the browser tests
CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--autoplay-policy=no-user-gesture-required"]
needs_chromium = pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="Debian chromium is not installed")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class AppServer:
    def __init__(self, env: dict[str, str] | None = None, log: Path | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        full_env = {**os.environ, "GRADIO_SERVER_PORT": str(self.port), "GRADIO_SERVER_NAME": "127.0.0.1",
                    "GRADIO_ANALYTICS_ENABLED": "False", "OMP_NUM_THREADS": "1", **(env or {})}
        self.log = open(log or os.devnull, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=full_env, stdout=self.log,
                                     stderr=subprocess.STDOUT)

    def wait(self, timeout: float = 90.0) -> AppServer:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"app.py exited with {self.proc.returncode}")
            try:
                urllib.request.urlopen(self.url, timeout=2)
                return self
            except OSError:
                time.sleep(0.5)
        raise TimeoutError(f"app.py did not answer on {self.url} in {timeout} s")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


@contextmanager
def served(log_name: str, env: dict[str, str] | None = None) -> Iterator[AppServer]:
    """An app.py on loopback for the block, its output in tests/artifacts/`log_name`."""
    ARTIFACTS.mkdir(exist_ok=True)
    app = AppServer(env=env, log=ARTIFACTS / log_name).wait()
    try:
        yield app
    finally:
        app.stop()


@contextmanager
def chromium(extra_flags: tuple[str, ...] = ()) -> Iterator:
    """A headless Chromium (playwright Browser) for the block."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=[*FLAGS, *extra_flags])
        try:
            yield browser
        finally:
            browser.close()


def open_app(opener, url: str, viewport: dict[str, int] | None = None):
    """A new tab of `opener` (a Browser, or a BrowserContext whose viewport is set) on the app,
    once its first plot has drawn."""
    page = opener.new_page(viewport=viewport) if viewport else opener.new_page()
    page.goto(url, wait_until="load")
    page.wait_for_selector("#attention .js-plotly-plot", timeout=60_000)
    return page
