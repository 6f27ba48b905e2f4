"""Memory benchmark: memory comes back after sessions are freed, the study's memory does not
grow with the upload, and exports stay few.

    python -m analysis.bench_memory            # 5 waves of 8 sessions, a 60-minute upload studied, 50 exports
    python -m analysis.bench_memory --quick    # 2 waves of 2, a 2-minute upload, 5 exports (the test runs it)

Everything runs against app.py on a free loopback port (as tests/test_load.py does), driven
by gradio_client, and reads the server's resident memory (VmRSS) from /proc:

1. **Waves.** Each wave starts `--sessions` clients at once; each plays its own ShapeStream
   example, ticks to 8 s (one chunk), asks the example's first question, and closes (its
   heartbeat ends: the app frees the session). Once /health reports no session, the server's
   RSS is read. The baseline is the RSS with no session before the first wave (the app
   started, the model not yet loaded). Limit: the RSS after the last wave within
   baseline + 300 MB.
2. **Exports.** One session exports `--exports` times; the trace and figure files on disk
   (in gradio's folder and the session's) are counted after the last export and after the
   session is freed. Limit: at most a few (3 exports, 6 files) while it lives, none after.
3. **Study.** A `--minutes`-long 10 fps upload (128x96, written here with PyAV one frame at a
   time) is uploaded, played to its end at the app's 2 fps (the RSS growth while it plays is
   reported too), and the Study tab's study is run on all of it; a thread samples the
   server's RSS every 20 ms. The growth is the highest sample during the study less the RSS
   just before it. The server's heap has room freed by what ran before, which the study may
   reuse, so the same study also runs alone in a fresh process (the model loaded, nothing
   else): its growth is the study's own footprint. Limit, both: 500 MB. The RSS once that
   session is freed is reported too.

Writes analysis/results/bench_memory.md and .csv (--out; `_quick` with --quick): one row per
measurement with its limit and whether it held. The allocator settings in force are the
app's own (app.py: glibc arenas and trimming); `--server-env KEY=VALUE` runs the server with
other ones, to compare.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from analysis import common
from tests.apphost import AppServer

EXAMPLES = [f"shapestream-{seed}" for seed in range(901, 909)]
EXAMPLE_DIR = Path(__file__).resolve().parent.parent / "assets" / "examples"
EXPORT_NAMES = ("hermes-trace.json", "hermes-figures.html")
WAVE_LIMIT_MB = 300
STUDY_LIMIT_MB = 500
EXPORTS_LIMIT = 2 * 3  # the session's newest 3 exports, two files each


@dataclass
class Row:
    measurement: str
    value: float
    unit: str
    limit: str
    held: bool | None
    note: str = ""


def rss_mb(pid: int) -> float:
    """The resident memory of process `pid` now, MB (2^20 bytes), from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


class Sampler:
    """The highest RSS of a process while the `with` block runs, sampled every `every_s`."""

    def __init__(self, pid: int, every_s: float = 0.02) -> None:
        self.pid, self.every_s, self.peak = pid, every_s, 0.0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._done.is_set():
            self.peak = max(self.peak, rss_mb(self.pid))
            self._done.wait(self.every_s)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()
        self.peak = max(self.peak, rss_mb(self.pid))


def client(url: str):
    from gradio_client import Client

    # a generous timeout: on a loaded machine the app can take a while to answer with 8 sessions at work
    return Client(url, verbose=False, download_files=False, httpx_kwargs={"timeout": 300})


def sessions(url: str) -> int:
    c = client(url)
    try:
        return int(c.predict(api_name="/health")["sessions"])
    finally:
        c.close()


def settle(url: str, timeout_s: float = 60.0) -> None:
    """Wait until the app holds no session (each closed client's heartbeat has ended)."""
    deadline = time.monotonic() + timeout_s
    while sessions(url) and time.monotonic() < deadline:
        time.sleep(0.25)
    if sessions(url):
        raise RuntimeError(f"sessions were not freed within {timeout_s:g} s of their clients closing")


def visit(url: str, example: str) -> None:
    """One visitor: play the example, tick to 8 s (one chunk), ask its first question, leave."""
    question = json.loads((EXAMPLE_DIR / f"{example}.json").read_text())["questions"][0]["question"]
    c = client(url)
    try:
        _, status, *_ = c.predict(example, api_name="/play_example")
        if example not in status:
            raise RuntimeError(f"{example} did not start: {status}")
        for playhead in (2.0, 4.0, 6.0, 8.0):
            c.predict(playhead, "global", api_name="/tick")
        chat, *_ = c.predict(question, api_name="/ask")
        if not chat:
            raise RuntimeError(f"{example}: no answer")
    finally:
        c.close()


def waves(server: AppServer, n_waves: int, per_wave: int) -> tuple[list[dict], float]:
    """RSS with no session before the first wave and after each; (rows for the CSV, baseline)."""
    baseline = rss_mb(server.proc.pid)
    rows = []
    for wave in range(1, n_waves + 1):
        with ThreadPoolExecutor(per_wave) as pool, Sampler(server.proc.pid) as peak:
            list(pool.map(lambda ex: visit(server.url, ex), [EXAMPLES[i % len(EXAMPLES)] for i in range(per_wave)]))
        settle(server.url)
        rows.append({"wave": wave, "sessions": per_wave, "peak_rss_mb": round(peak.peak, 1),
                     "rss_after_mb": round(rss_mb(server.proc.pid), 1)})
        print(f"wave {wave}: peak {peak.peak:.0f} MB, with no session {rows[-1]['rss_after_mb']:.0f} MB "
              f"(baseline {baseline:.0f} MB)", flush=True)
    return rows, baseline


def export_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.name in EXPORT_NAMES and p.is_file())


def exports(server: AppServer, tmp: Path, n: int) -> tuple[int, int, float]:
    """(export files on disk after `n` exports, after the session is freed, MB they held)."""
    c = client(server.url)
    try:
        c.predict(EXAMPLES[0], api_name="/play_example")
        c.predict(8.0, "global", api_name="/tick")
        for _ in range(n):
            c.predict("global", api_name="/export")
        left = export_files(tmp)
        size = sum(p.stat().st_size for p in left) / 2**20
    finally:
        c.close()
    settle(server.url)
    return len(left), len(export_files(tmp)), size


def long_video(path: Path, minutes: float, fps: int = 10, size: tuple[int, int] = (128, 96)) -> Path:
    """A `minutes`-long video, written one frame at a time (never held whole): a bar sweeping
    across a grey field that brightens every second, so every frame differs."""
    width, height = size
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(int(minutes * 60 * fps)):
            frame = np.full((height, width, 3), 40 + (i // fps) % 160, np.uint8)
            x = (i * 3) % (width - 8)
            frame[:, x:x + 8] = 255
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@dataclass
class Studied:
    played_mb: float  # RSS growth while the upload played to its end (the session's telemetry)
    before_mb: float  # RSS just before the study
    growth_mb: float  # the study's peak RSS growth
    frames: int
    took_s: float
    after_mb: float  # RSS once that session was freed


def study(server: AppServer, video: Path) -> Studied:
    """The upload played to its end, then the Study tab's study on all of it (FIFO, 256 tokens)."""
    from gradio_client import handle_file

    c = client(server.url)
    try:
        _, status, *_ = c.predict(handle_file(str(video)), api_name="/upload")
        if video.name not in status:
            raise RuntimeError(f"the upload was refused: {status}")
        uploaded, end = rss_mb(server.proc.pid), 24 * 3600.0  # the whole file
        while "stream ended" not in status:
            status = c.predict(end, "global", api_name="/tick")[0]
            if "⚠️" in status:
                raise RuntimeError(f"ingest failed: {status}")
        frames = len(c.predict(api_name="/telemetry")["frame_times"])
        before = rss_mb(server.proc.pid)
        started = time.monotonic()
        with Sampler(server.proc.pid) as peak:
            _, reading = c.predict(256, api_name="/study")
        took = time.monotonic() - started
        if "Cannot run" in reading:
            raise RuntimeError(reading)
    finally:
        c.close()
    settle(server.url)
    return Studied(before - uploaded, before, peak.peak - before, frames, took, rss_mb(server.proc.pid))


def study_alone(video: Path, fps: float = 2.0, budget: int = 256) -> tuple[float, float, float]:
    """In a fresh process (run it in one): the study's code alone on `video`, as the Study tab
    runs it with no question asked (the local pseudo-query after every chunk), with nothing
    else's freed memory to reuse: (RSS before, once the model is loaded; peak growth; seconds)."""
    from hermes.backbones import load_backbone
    from hermes.studies.mechanistic import study_stream
    from hermes.video import iter_frames

    backbone, pid = load_backbone("hermes-tiny"), os.getpid()
    before, started = rss_mb(pid), time.monotonic()
    with Sampler(pid) as peak:
        profiles, _ = study_stream(backbone, iter_frames(video, fps), [], budget,
                                   every_chunk=backbone.pseudo_queries["local"])
    if not profiles:
        raise RuntimeError("the study measured nothing")
    return before, peak.peak - before, time.monotonic() - started


def run(args) -> tuple[list[dict], list[Row]]:
    tmp = Path(tempfile.mkdtemp(prefix="bench-memory-"))
    env = {"TMPDIR": str(tmp), "GRADIO_TEMP_DIR": str(tmp / "gradio"), "HERMES_MAX_SESSIONS": str(args.sessions),
           **dict(kv.split("=", 1) for kv in args.server_env)}
    server = AppServer(env=env, log=tmp / "server.log").wait()
    try:
        wave_rows, baseline = waves(server, args.waves, args.sessions)
        after = wave_rows[-1]["rss_after_mb"]
        kept, left, size = exports(server, tmp, args.exports)
        video = long_video(tmp / f"long-{args.minutes:g}min.mp4", args.minutes)
        studied = study(server, video)
    except BaseException:
        print(f"failed: the server's log is {tmp / 'server.log'}", flush=True)
        raise
    finally:
        server.stop()
    os.environ["MALLOC_ARENA_MAX"] = "2"  # the child's allocator as the app's (glibc reads it at start)
    try:
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as alone:
            alone_before, alone_growth, alone_took = alone.submit(study_alone, video).result()
    finally:
        del os.environ["MALLOC_ARENA_MAX"]
    shutil.rmtree(tmp, ignore_errors=True)
    peak = max(r["peak_rss_mb"] for r in wave_rows)
    return wave_rows, [
        Row("RSS with no session before the first wave (baseline)", round(baseline, 1), "MB", "-", None),
        Row(f"highest RSS during the waves ({args.sessions} sessions at once)", round(peak, 1), "MB", "-", None),
        Row(f"RSS with no session after wave {args.waves}", after, "MB", f"<= baseline + {WAVE_LIMIT_MB}",
            after <= baseline + WAVE_LIMIT_MB, f"+{after - baseline:.0f} MB"),
        Row(f"export files on disk after {args.exports} exports by one session", kept, "files",
            f"<= {EXPORTS_LIMIT}", kept <= EXPORTS_LIMIT, f"{size:.1f} MB"),
        Row("export files on disk after that session is freed", left, "files", "0", left == 0),
        Row(f"RSS growth while that upload played to its end ({studied.frames} frames in memory)",
            round(studied.played_mb, 1), "MB", "-", None),
        Row(f"the study's peak RSS growth on a {args.minutes:g}-minute upload ({studied.frames} frames at 2 fps)",
            round(studied.growth_mb, 1), "MB", f"<= {STUDY_LIMIT_MB}", studied.growth_mb <= STUDY_LIMIT_MB,
            f"from {studied.before_mb:.0f} MB; the study took {studied.took_s:.0f} s"),
        Row("RSS with no session once that session was freed", round(studied.after_mb, 1), "MB", "-", None,
            f"+{studied.after_mb - baseline:.0f} MB over the baseline"),
        Row("the same study alone in a fresh process: peak RSS growth", round(alone_growth, 1), "MB",
            f"<= {STUDY_LIMIT_MB}", alone_growth <= STUDY_LIMIT_MB,
            f"from {alone_before:.0f} MB (the model loaded; 2 malloc arenas, as the app); {alone_took:.0f} s"),
    ]


def write(wave_rows: list[dict], rows: list[Row], args) -> None:
    stem = common.stem(args, "bench_memory")
    head = ["measurement", "value", "unit", "limit", "held", "note"]
    cells = [[r.measurement, r.value, r.unit, r.limit, "-" if r.held is None else "yes" if r.held else "NO", r.note]
             for r in rows]
    common.write_csv(f"{stem}.csv", cells, head)
    extra = f" with `{' '.join(args.server_env)}`" if args.server_env else ""
    lines = ["# Memory: sessions freed, the study on a long upload, exports", "",
             f"`python -m analysis.bench_memory{' --quick' if args.quick else ''}`{extra} against app.py on "
             f"loopback (hermes-tiny), {common.machine('cpu')}. RSS is the server process's VmRSS, in MB "
             "(2^20 bytes); see the script's docstring for what each step does.", "",
             *common.table(head, cells), "", "Each wave: RSS with no session once its clients have left.", "",
             *common.table(list(wave_rows[0]), [list(r.values()) for r in wave_rows])]
    common.write_markdown(f"{stem}.md", lines, echo=True)


def main(argv: list[str] | None = None) -> None:
    p = common.parser(__doc__, model=None, device=None, quick="2 waves of 2 sessions, a 2-minute upload, 5 exports")
    p.add_argument("--waves", type=int, default=5)
    p.add_argument("--sessions", type=int, default=8, help="sessions per wave (and the app's cap)")
    p.add_argument("--exports", type=int, default=50)
    p.add_argument("--minutes", type=float, default=60.0, help="length of the upload studied")
    p.add_argument("--server-env", nargs="*", default=[], metavar="KEY=VALUE",
                   help="environment for the server, e.g. MALLOC_ARENA_MAX=8 (to compare allocator settings)")
    args = p.parse_args(argv)
    if args.quick:
        args.waves, args.sessions, args.exports, args.minutes = 2, 2, 5, 2.0
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    wave_rows, rows = run(args)
    write(wave_rows, rows, args)


if __name__ == "__main__":
    main()
