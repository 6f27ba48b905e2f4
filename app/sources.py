"""What a session can play, and the checks a file passes before it is played.

    from app import sources
    sources.list_examples()                        # name -> path of the bundled example streams
    src = sources.example("shapestream-901")        # with its ShapeStream world and suggested questions
    src = sources.upload(path, settings, fps=2.0)   # checked first: a bad file raises VideoError
    src = sources.webcam()
    for frame, t in src.frames(fps=2.0, max_size=(1920, 1080)): ...   # full resolution up to 1080p
    src.ground_truth("which shape appeared first ?", t=7.5)
    sources.deletable(path)                        # True only for files in the temp dirs
    sources.downscale(frame, 1920)                  # webcam frames, nearest neighbour

No gradio and no engine here: sources only decode, check and describe videos.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from app.settings import Settings
from hermes import shapestream
from hermes.errors import HermesError, VideoError
from hermes.examples import EXAMPLES
from hermes.video import check_complete, iter_frames, probe

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

    def frames_until(self, t: float, fps: float, max_size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """Every frame up to time `t`, decoded again and held at once (choose `max_size` for
        that): (T, H, W, 3) uint8 and (T,) seconds."""
        frames, times = [], []
        for frame, ft in self.frames(fps, max_size) or ():
            if ft > t + 1e-6:
                break
            frames.append(frame)
            times.append(ft)
        return np.stack(frames), np.array(times)

    def ground_truth(self, question: str, t: float) -> str | None:
        """A ShapeStream example's answer from its event log at time `t` (None: not known)."""
        if self.world is None:
            return None
        found = shapestream.answer(self.world, question, t)
        return found[0] if found else None


def list_examples() -> dict[str, Path]:
    """name -> video path of the bundled example streams (ShapeStream first)."""
    videos = sorted(EXAMPLES.glob("*.mp4"), key=lambda p: (not p.stem.startswith("shapestream"), p.stem))
    return {p.stem: p for p in videos}


def example(name: str) -> Source:
    """A bundled example by name (never a path), with its world and questions when it has them."""
    examples = list_examples()
    if name not in examples:
        raise HermesError(f"unknown example {name!r}; choose one of {', '.join(examples)}")
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
        raise VideoError(f"the video is too long ({info.duration_s / 60:.0f} min; at most "
                         f"{settings.max_video_s // 60} min)")
    check_complete(p)
    source = Source(name or p.name, p, info.duration_s or 0.0)
    try:
        next(source.frames(fps, settings.decode_max_size))
    except StopIteration:
        raise VideoError("the video has no frames that could be decoded") from None
    return source


def webcam() -> Source:
    return Source("webcam")


def deletable(path: Path) -> bool:
    """A second guard on deleting uploads: only files under the system / gradio temp dir,
    and never the bundled examples (a checkout may itself live under /tmp)."""
    resolved = path.resolve()
    if resolved.is_relative_to(EXAMPLES.resolve()):
        return False
    roots = {Path(tempfile.gettempdir()).resolve()}
    if os.environ.get("GRADIO_TEMP_DIR"):
        roots.add(Path(os.environ["GRADIO_TEMP_DIR"]).resolve())
    return any(resolved.is_relative_to(root) for root in roots)


def downscale(frame: np.ndarray, longest: int) -> np.ndarray:
    """Nearest-neighbour downscale so the longer side is at most `longest` pixels (RGB of RGBA)."""
    h, w = frame.shape[:2]
    step = int(np.ceil(max(h, w) / longest))
    return np.ascontiguousarray(frame[::step, ::step, :3]) if step > 1 else frame[..., :3]
