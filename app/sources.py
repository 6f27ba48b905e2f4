"""What a session can play, and the checks a file passes before it is played.

    from app import sources
    sources.list_examples()                        # name -> path of the bundled example streams
    src = sources.example("shapestream-901")        # with its ShapeStream world and suggested questions
    src = sources.upload(path, settings, fps=2.0)   # checked first: a bad file raises VideoError
    src = sources.webcam()
    for frame, t in src.frames(fps=2.0, max_size=(1920, 1080)): ...   # full resolution up to 1080p
    sources.downscale(frame, 1920)                  # webcam frames, nearest neighbour
    files = SessionFiles(); mine = files.adopt(path); files.close()   # a session's own folder
    out = files.export_folder(served_root, keep=3)   # a new folder for one export (the oldest beyond 3 go)
    gate = UploadGate(window_s=600); gate.watch(uploaded); gate.claim(path)   # may this file be an upload?

Uploads: the browser's file lands in gradio's upload cache, where identical bytes from two
users share one path. A session plays its own copy (a hard link where the file system
allows it, else a copy) in a folder it created (`SessionFiles`), and deletes only that
folder; gradio's cache is left to gradio. Its exports go to a folder of its own under the
folder gradio serves files from (gradio then serves them as they are, without a copy of its
own), only its newest few are kept, and they go with the session. `UploadGate` decides what /upload may register:
a file that gradio's upload route received (the Blocks' upload_file_set), recently, not
registered before, and not a bundled example.

No gradio and no engine here: sources only decode, check and describe videos.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
import re
import shutil
import stat
import tempfile
import threading
import time
from collections.abc import Collection, Iterator
from contextlib import closing, suppress
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from app.settings import Settings, duration_text
from hermes import shapestream
from hermes.errors import HermesError, VideoError
from hermes.examples import EXAMPLES
from hermes.video import check_complete, iter_frames, probe

LOG = logging.getLogger("hermes.studio")
Frames = Iterator[tuple[np.ndarray, float]]  # (H, W, 3) uint8 frame and its time in seconds, in order


@dataclass
class Source:
    """What is playing: a file (example or upload) or the webcam."""

    name: str
    path: Path | None = None  # None for the webcam
    duration_s: float = 0.0
    world: list | None = None  # ShapeStream objects: ground truth for questions
    suggestions: list[dict] = field(default_factory=list)  # {question, answer, time, category}

    def frames(self, fps: float, max_size: tuple[int, int]) -> Frames | None:
        """The file's frames sampled at `fps`, one at a time: at full resolution, or scaled down
        once to fit `max_size` (long side, short side) when larger; None for the webcam."""
        return iter_frames(self.path, fps, max_size=max_size) if self.path else None

    def frames_until(self, t: float, fps: float, max_size: tuple[int, int]) -> Frames:
        """The file's frames up to time `t`, decoded again one at a time as `frames` does (none
        for the webcam); the file is closed after the last, or when the generator is closed."""
        frames = self.frames(fps, max_size)
        if frames is None:
            return
        with closing(frames):
            for frame, ft in frames:
                if ft > t + 1e-6:
                    return
                yield frame, ft


def list_examples() -> dict[str, Path]:
    """name -> video path of the bundled example streams (ShapeStream first)."""
    videos = sorted(EXAMPLES.glob("*.mp4"), key=lambda p: (not p.stem.startswith("shapestream"), p.stem))
    return {p.stem: p for p in videos}


def example(name: str) -> Source:
    """A bundled example by name (never a path), with its world and questions when it has them."""
    examples = list_examples()
    if not isinstance(name, str):
        raise HermesError(f"the example must be named by one string; choose one of {', '.join(examples)} "
                          f"(got {type(name).__name__})")
    if name not in examples:
        raise HermesError(f"unknown example {name[:80]!r}; choose one of {', '.join(examples)}")
    path = examples[name]
    meta_path = path.with_suffix(".json")
    world, suggestions = None, []
    if meta_path.exists():
        meta = json.loads(meta_path.read_text())
        world, _ = shapestream.world(meta["seed"], meta["seconds"])
        suggestions = meta["questions"]
    return Source(name, path, probe(path).duration_s, world, suggestions)


def upload(path: str | Path, settings: Settings, fps: float, name: str | None = None) -> Source:
    """A file to play, checked: size, container, resolution, duration, complete data, and
    that its first frame decodes. A bad file raises VideoError saying what is wrong."""
    p = Path(path)
    if not p.is_file():
        raise VideoError("the upload did not arrive: no file was received")
    size_mb = p.stat().st_size / 2**20
    if size_mb > settings.max_upload_mb:
        raise VideoError(f"the file is too large ({size_mb:.0f} MB; at most {settings.max_upload_mb} MB)")
    info = probe(p)
    if max(info.width, info.height) > settings.max_side_px:
        raise VideoError(f"the video's frames are {info.width}x{info.height} pixels; at most "
                         f"{settings.max_side_px} pixels a side are accepted")
    if info.duration_s is not None and info.duration_s > settings.max_video_s:
        raise VideoError(f"the video is too long ({duration_text(info.duration_s)}; at most "
                         f"{settings.max_video_text})")
    check_complete(p)
    source = Source(name or p.name, p, info.duration_s or 0.0)
    try:
        next(source.frames(fps, settings.decode_max_size))
    except StopIteration:
        raise VideoError("the video has no frames that could be decoded") from None
    return source


def webcam() -> Source:
    return Source("webcam")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def _ours(path: Path) -> bool:
    """True if `path` is a real folder (not a link) that this user owns: safe to keep files in."""
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid()


_process_roots: dict[Path, Path] = {}
_process_root_lock = threading.Lock()


def process_root(base: Path | None = None) -> Path:
    """This process's folder of session folders, `<base>/hermes-sessions/<pid>/` (`base`:
    default $TMPDIR). Made on first use, when the folders a killed process left behind (a dead
    pid's, or this pid's from an earlier process) are deleted; a live process's are never
    touched. `<base>/hermes-sessions` is used only if it is a real folder this user owns (it
    is made mode 0700); otherwise (another user's, or a link) this process uses a fresh
    private folder of its own, `<base>/hermes-sessions-XXXX/`, instead."""
    base = Path(base or tempfile.gettempdir())
    with _process_root_lock:
        if base not in _process_roots:
            shared = base / SessionFiles.ROOT
            with suppress(OSError):  # e.g. a file or a dangling link of that name: not ours
                shared.mkdir(mode=0o700, exist_ok=True)
            if _ours(shared):
                os.chmod(shared, 0o700)
                for old in shared.iterdir():
                    if old.is_dir() and (not old.name.isdigit() or int(old.name) == os.getpid()
                                         or not _alive(int(old.name))):
                        shutil.rmtree(old, ignore_errors=True)
                root = shared / str(os.getpid())
                root.mkdir(mode=0o700)
            else:
                LOG.warning("%s is not a folder of this user's: session files go to a private folder instead", shared)
                root = Path(tempfile.mkdtemp(prefix=f"{SessionFiles.ROOT}-", dir=base))
            _process_roots[base] = root
        return _process_roots[base]


class SessionFiles:
    """The folders one session owns, under this process's roots (`process_root`, created on
    first use): the files it plays are adopted into one, its exports written into another
    (under the folder they are served from), and only what is in them is ever deleted. Once
    closed, nothing more is made: a late upload or export (the tab closed meanwhile) raises
    HermesError instead of leaving a file nobody deletes."""

    ROOT = "hermes-sessions"

    def __init__(self) -> None:
        self._folder: Path | None = None
        self._exports: Path | None = None  # the session's folder of exports, one numbered subfolder each
        self._names = itertools.count(1)
        self._closed = False
        self._lock = threading.Lock()

    @property
    def closed(self) -> bool:
        return self._closed

    def _check_open(self) -> None:
        if self._closed:
            raise HermesError("this tab's session has ended (the tab was closed, or it idled out): reload the page")

    @property
    def folder(self) -> Path:
        """The session's own folder (made on first use); HermesError once closed."""
        with self._lock:
            self._check_open()
            if self._folder is None:
                self._folder = Path(tempfile.mkdtemp(prefix="session-", dir=process_root()))
            return self._folder

    def adopt(self, path: str | Path) -> Path:
        """This session's own copy of `path`: a hard link where the file system allows it (no
        bytes copied; it stays when the original is deleted or replaced), else a copy."""
        src = Path(path)
        if not src.is_file():
            raise VideoError("the upload did not arrive: no file was received")
        safe = re.sub(r"[^A-Za-z0-9._-]", "_", src.name)[-100:] or "upload"
        folder = self.folder
        with self._lock:  # close() waits for the copy, then deletes it with the folder
            self._check_open()
            dest = folder / f"{next(self._names)}-{safe}"
            try:
                os.link(src, dest)
            except OSError:
                shutil.copyfile(src, dest)
            return dest

    def export_folder(self, root: str | Path, keep: int) -> Path:
        """A new, empty folder for one export, in the session's folder of exports under `root`
        (the same every call: the folder gradio serves files from, so that it serves them as
        they are instead of copying them into its cache); the oldest exports beyond the newest
        `keep` (this one included) are deleted. HermesError once closed."""
        with self._lock:
            self._check_open()
            if self._exports is None:
                self._exports = Path(tempfile.mkdtemp(prefix="exports-", dir=process_root(Path(root))))
            folder = self._exports / str(next(self._names))
            folder.mkdir()
            made = sorted((d for d in self._exports.iterdir() if d.name.isdigit()), key=lambda d: int(d.name))
            for old in made[:-max(1, keep)]:
                shutil.rmtree(old, ignore_errors=True)
            return folder

    def owns(self, path: Path) -> bool:
        return self._folder is not None and path.parent == self._folder

    def remove(self, path: Path) -> None:
        """Delete `path` if it is one of this session's files (anything else is left alone)."""
        if self.owns(path):
            path.unlink(missing_ok=True)

    def close(self) -> None:
        """Delete the folders and everything the session put in them; nothing is made after."""
        with self._lock:
            self._closed = True
            for folder in (self._folder, self._exports):
                if folder is not None:
                    shutil.rmtree(folder, ignore_errors=True)
            self._folder = self._exports = None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class UploadGate:
    """What /upload may register: only a file that came with an upload, once.

    gradio's upload route takes no session, and stores a file by its content hash, so the
    gate asks of the path: did the upload route receive it (what a Blocks' upload_file_set
    holds: app.ui `watch`es each Blocks it builds), is it not one of the bundled
    examples (those are played from the Examples tab), is this delivery (its inode and
    modification time: every upload is a fresh file renamed into place) not registered by
    any session yet, and did it arrive within `window_s`? Anything else is refused with a
    HermesError saying what to do."""

    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        self._received: list[Collection[str]] = []  # every path gradio's upload routes have returned
        self._claimed: dict[tuple[int, int, int, int], float] = {}  # delivery -> when it was registered
        self._examples: dict[str, str] | None = None  # sha256 -> example name, computed on first need
        self._lock = threading.Lock()

    def watch(self, received: Collection[str]) -> None:
        """Accept the files in `received` too (a Blocks' upload_file_set: gradio adds the absolute
        path of every file its upload route stores). Each Blocks built adds its own."""
        self._received.append(received)

    def claim(self, path: str | Path) -> None:
        """Register `path` as an upload, or raise HermesError (VideoError when no file is there)."""
        p = os.path.abspath(path)
        if not any(str(path) in received or p in received for received in self._received):
            raise HermesError("that file was not uploaded here: only a file sent with the upload can be played as "
                              "one (use the Upload tab)")
        try:
            st = os.stat(p)
        except OSError:
            raise VideoError("the upload did not arrive: no file was received") from None
        name = self.example_of(Path(p), st.st_size)
        if name is not None:
            raise HermesError(f"that file is the bundled example {name!r}: play it from the Examples tab (it comes "
                              "with its questions and ground truth)")
        delivery = (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)
        now = time.time()
        with self._lock:
            self._claimed = {k: t for k, t in self._claimed.items() if now - t <= 2 * self.window_s}
            if delivery in self._claimed:
                raise HermesError("that upload was already registered by a session: upload the file again")
            if now - st.st_mtime > self.window_s:
                raise HermesError(f"that upload arrived more than {self.window_s / 60:g} min ago: upload the file "
                                  "again")
            self._claimed[delivery] = now

    def example_of(self, path: Path, size: int) -> str | None:
        """The bundled example with exactly these bytes, if any (hashed only when a size matches)."""
        examples = list_examples()
        if not any(p.stat().st_size == size for p in examples.values()):
            return None
        with self._lock:
            if self._examples is None:
                self._examples = {_sha256(p): name for name, p in examples.items()}
            known = self._examples
        return known.get(_sha256(path))


def downscale(frame: np.ndarray, longest: int) -> np.ndarray:
    """Nearest-neighbour downscale so the longer side is at most `longest` pixels (RGB of RGBA)."""
    h, w = frame.shape[:2]
    step = int(np.ceil(max(h, w) / longest))
    return np.ascontiguousarray(frame[::step, ::step, :3]) if step > 1 else frame[..., :3]
