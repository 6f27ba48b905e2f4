"""Video input: decode a file, sample it at a fixed rate, say clearly what is wrong with bad files.

    from hermes.video import read_video, iter_frames
    frames, times = read_video("clip.mp4", fps=2)      # uint8 (T, H, W, 3), seconds (T,)
    for frame, t in iter_frames("clip.mp4", fps=2):     # streaming, one frame at a time
        ...

Readers: decord (from the maintained ``decord2`` package; frame-exact batch access) first,
PyAV (FFmpeg 8 with dav1d, libvpx-vp9, SVT-AV1) as fallback for what decord cannot open
or where it is not installed. ``backend="decord" | "pyav"`` forces one.

Resolution: frames come out at full resolution up to 1080p (``MAX_SIZE``: 1920 on the long
side, 1080 on the short one, either orientation), so the model's own resize to its vision
input is the only resize. Larger frames (4K) are scaled down once, to fit 1080p, while
PyAV converts them (a huge frame is never held as full-size RGB). ``max_size=None`` keeps
every frame at its size; a smaller box bounds memory where many frames are held at once.

Sampling rule (both readers): walk the frames in order and keep a frame when its time
reaches the next sample time k / fps; the next sample time is then the first multiple of
1 / fps after it. So a 30 fps clip read at 2 fps gives the frames at 0, 0.5, 1.0 ... s,
and asking for more than the native rate gives every frame once.

Bad input raises ``VideoError`` with a message a person understands: missing file, empty
file, a text or image file, truncated or corrupt data, no video stream, fps <= 0.

Abandoning a stream is safe: a consumer may take one frame and drop (or ``close()``) the
generator at any point; that closes the file and frees the decoder at once, and can never
hang. Three things make it so. (1) No Python log callback: PyAV's callback takes the GIL on
FFmpeg's own threads, and a decoder freed while Python holds the GIL then waits for ever on
a thread that waits for the GIL. ``av.logging.set_level(None)`` installs PyAV's no-op C
callback instead, which also keeps FFmpeg's console noise off the terminal (our messages
replace it); decord's own FFmpeg copy is set quiet. (2) Slice threading: slice threads work
only inside each decode call (which PyAV makes without the GIL) and are idle between
calls, so freeing a decoder waits on nothing; frame threads keep frames in flight between
calls. Either of (1) and (2) alone ended the hang in tests/test_liveness.py; (2) still holds
if another library installs PyAV's Python log callback. (3) Every reader opens its file in
a ``with`` / ``try``-``finally`` inside its generator and ``iter_frames`` closes the reader
it wraps, so ``close()`` frees both at once; when decord fails and PyAV goes on, decord's
reader is freed first.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from hermes.errors import VideoError

try:  # decord2 provides the `decord` module
    import decord
except ImportError:  # pragma: no cover - exercised where decord2 is not installed
    decord = None

# No Python log callback on FFmpeg's threads (see the module docstring): PyAV's silent C
# callback, and decord's FFmpeg quiet. Our messages replace FFmpeg's console noise.
av.logging.set_level(None)
if decord is not None:
    decord.logging.set_level(decord.logging.QUIET)

BACKENDS = ("auto", "decord", "pyav")
_EPS = 1e-3  # seconds; WebM/Matroska store times in whole milliseconds
_DECORD_BATCH = 16
MAX_SIZE = (1920, 1080)  # (long side, short side): frames up to 1080p come out at full resolution
_THREADS = "SLICE"  # safe to abandon mid-stream; frame threads ("AUTO") are not (module docstring)
_IMAGE_MAGIC = [
    (0, b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (0, b"\xff\xd8\xff", "a JPEG image"),
    (8, b"WEBP", "a WebP image"),
    (0, b"II*\x00", "a TIFF image"),
    (0, b"MM\x00*", "a TIFF image"),
    (0, b"BM", "a BMP image"),
]
_CONTAINER_MAGIC = [
    (4, b"ftyp", "an MP4/MOV video"),
    (0, b"\x1a\x45\xdf\xa3", "a WebM/Matroska video"),
    (8, b"AVI ", "an AVI video"),
    (0, b"OggS", "an Ogg file"),
    (0, b"FLV", "an FLV video"),
]


@dataclass(frozen=True)
class VideoInfo:
    """What the container says about a file's video stream."""

    width: int
    height: int
    native_fps: float
    duration_s: float | None  # of the video data, when the container knows it
    codec: str


class _Sampler:
    """Decides, frame by frame in time order, which frames a fixed-rate sampling keeps."""

    def __init__(self, fps: float) -> None:
        self.fps = fps
        self.next_t = 0.0

    def take(self, t: float) -> bool:
        if t + _EPS < self.next_t:
            return False
        self.next_t = (math.floor((t + _EPS) * self.fps) + 1) / self.fps
        return True


def _check_fps(fps: float) -> float:
    if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not math.isfinite(fps) or fps <= 0:
        raise VideoError(f"fps must be a number greater than 0 (frames sampled per second), got {fps!r}")
    return float(fps)


def _sniff(head: bytes, table: list[tuple[int, bytes, str]]) -> str | None:
    for offset, magic, what in table:
        if head[offset:offset + len(magic)] == magic:
            return what
    return None


def _looks_like_text(head: bytes) -> bool:
    if b"\x00" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as err:  # a multi-byte character cut at the end is still text
        return err.start >= len(head) - 3
    return True


def _check_file(path: str | Path) -> Path:
    """Fail early, in words, on files that cannot be a video."""
    p = Path(path).expanduser()
    if not p.exists():
        raise VideoError(f"video file not found: {p}")
    if p.is_dir():
        raise VideoError(f"{p} is a folder, not a video file")
    if p.stat().st_size == 0:
        raise VideoError(f"{p.name} is empty (0 bytes): there is no video in it")
    with p.open("rb") as fh:
        head = fh.read(4096)
    image = _sniff(head, _IMAGE_MAGIC)
    if image:
        raise VideoError(f"{p.name} is {image}, not a video")
    if _sniff(head, _CONTAINER_MAGIC) is None and _looks_like_text(head):
        raise VideoError(f"{p.name} is a text file, not a video")
    return p


def _open_error(p: Path, err: Exception) -> VideoError:
    with p.open("rb") as fh:
        head = fh.read(64)
    what = _sniff(head, _CONTAINER_MAGIC)
    reason = _reason(err)
    if what:
        return VideoError(f"{p.name} looks like {what} but is truncated or corrupt ({reason})")
    return VideoError(f"{p.name} is not a video file that can be read ({reason})")


def _reason(err: Exception) -> str:
    text = getattr(err, "strerror", None) or str(err)
    return text.strip().splitlines()[0][:160] if text.strip() else type(err).__name__


def probe(path: str | Path) -> VideoInfo:
    """Open a file and describe its video stream; raises VideoError for bad input."""
    p = _check_file(path)
    try:
        container = av.open(str(p))
    except (av.FFmpegError, OSError, ValueError) as err:
        raise _open_error(p, err) from err
    with container:
        streams = container.streams
        if not len(streams):
            raise _open_error(p, ValueError("no streams found"))
        if not streams.video:
            kinds = sorted({s.type for s in streams})
            raise VideoError(f"{p.name} has no video stream (it holds: {', '.join(kinds)})")
        stream = streams.video[0]
        duration = None
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None and len(streams) == 1:
            duration = container.duration / av.time_base
        rate = stream.average_rate or stream.guessed_rate
        return VideoInfo(
            width=stream.codec_context.width,
            height=stream.codec_context.height,
            native_fps=float(rate) if rate else 0.0,
            duration_s=duration,
            codec=stream.codec_context.name,
        )


def check_complete(path: str | Path) -> VideoInfo:
    """probe() plus a read of the container's packets (no decoding, milliseconds): a file
    whose video data stops well before its stated duration raises VideoError (truncated)."""
    info = probe(path)
    p = Path(path).expanduser()
    last_t = None
    try:
        with av.open(str(p)) as container:
            stream = container.streams.video[0]
            for packet in container.demux(stream):
                if packet.pts is not None and packet.time_base is not None:
                    last_t = max(last_t or 0.0, float(packet.pts * packet.time_base))
    except (av.FFmpegError, OSError, ValueError) as err:
        raise _open_error(p, err) from err
    if last_t is None:
        raise VideoError(f"{p.name} is truncated or corrupt: its video stream holds no frames")
    _check_complete(p, info, last_t)
    return info


def scaled_size(width: int, height: int, max_size: tuple[int, int] | None = MAX_SIZE) -> tuple[int, int] | None:
    """(width, height) to decode a width x height frame at so that it fits in `max_size`
    = (long side, short side) with its aspect kept (even sizes), or None when it fits as it is."""
    if not max_size:
        return None
    long_side, short_side = max_size
    scale = min(long_side / max(width, height), short_side / min(width, height))
    if scale >= 1:
        return None
    return max(2, int(width * scale) // 2 * 2), max(2, int(height * scale) // 2 * 2)


def iter_frames(path: str | Path, fps: float, backend: str = "auto", max_size: tuple[int, int] | None = MAX_SIZE
                ) -> Iterator[tuple[np.ndarray, float]]:
    """Yield (uint8 (H, W, 3) RGB frame, time in seconds) sampled at `fps`.

    max_size: (long side, short side); frames that do not fit (default: larger than 1080p)
    are scaled down once, to fit, while they are converted (PyAV / swscale; "auto" picks PyAV
    then, decord2 cannot scale reliably). Frames that fit come out at full resolution.
    Errors found while decoding are raised after the frames decoded before them, so a
    consumer keeps what it already has. Dropping or closing the generator early closes the
    file and frees its decoder at once (safe at any point: see the module docstring)."""
    fps = _check_fps(fps)
    if backend not in BACKENDS:
        raise VideoError(f"backend must be one of {BACKENDS}, got {backend!r}")
    info = probe(path)
    size = scaled_size(info.width, info.height, max_size)
    p = Path(path).expanduser()
    if backend == "decord" and decord is None:
        raise VideoError("the decord reader is not installed (pip install decord2); use backend='pyav'")
    decoded: list[float] = []  # time of the last frame decoded (sampled or not), set by the readers
    last_t, count = None, 0
    try:
        if backend == "decord" and size:
            raise VideoError(f"the decord reader cannot scale {info.width}x{info.height} frames to fit "
                             f"{max_size[0]}x{max_size[1]}; use backend='pyav' or 'auto', or max_size=None")
        with_pyav = not (backend == "decord" or (backend == "auto" and decord is not None and size is None))
        if not with_pyav:
            try:
                with closing(_decord_frames(p, fps, decoded)) as reader:
                    for frame, t in reader:
                        last_t, count = t, count + 1
                        yield frame, t
            except Exception:
                if backend == "decord":
                    raise
                # decord2 fails on some files (AV1 builds, some frame sizes): PyAV goes on from here,
                # once out of this handler (decord's traceback, and the reader it holds, are gone)
                with_pyav = True
        if with_pyav:
            decoded.clear()
            with closing(_pyav_frames(p, fps, decoded, size, after=last_t)) as reader:
                for frame, t in reader:
                    last_t, count = t, count + 1
                    yield frame, t
    except Exception as err:  # any decoder failure means bad data
        at = f"after {last_t:.2f} s" if last_t is not None else "before the first frame"
        raise VideoError(f"{p.name} is truncated or corrupt: decoding failed {at} ({_reason(err)})") from err
    if count == 0:
        raise VideoError(f"{p.name} is truncated or corrupt: no frame could be decoded")
    _check_complete(p, info, decoded[-1] if decoded else last_t)


def _check_complete(p: Path, info: VideoInfo, last_t: float | None) -> None:
    """A file whose decoded frames stop well before its stated duration was cut short."""
    if info.duration_s is None or last_t is None:
        return
    frame_s = 1.0 / info.native_fps if info.native_fps > 0 else 0.0
    if last_t + 2 * frame_s + 0.25 < info.duration_s * 0.97:
        raise VideoError(
            f"{p.name} is truncated: it should last {info.duration_s:.1f} s but its frames end at {last_t:.1f} s"
        )


def read_video(path: str | Path, fps: float, backend: str = "auto", max_size: tuple[int, int] | None = MAX_SIZE
               ) -> tuple[np.ndarray, np.ndarray]:
    """Whole file sampled at `fps`: (uint8 (T, H, W, 3), float64 (T,) seconds); frames
    larger than `max_size` (default 1080p) scaled down once to fit, as in ``iter_frames``."""
    frames, times = [], []
    for frame, t in iter_frames(path, fps, backend=backend, max_size=max_size):
        frames.append(frame)
        times.append(t)
    return np.stack(frames), np.asarray(times, dtype=np.float64)


def _decord_frames(p: Path, fps: float, decoded: list[float]) -> Iterator[tuple[np.ndarray, float]]:
    """Frame-exact batch access: pick the sampled indices from the frame index, fetch in batches.
    The reader is freed when the generator ends, fails or is closed (its only reference is
    dropped in `finally`, so a traceback that keeps this frame alive does not keep the file)."""
    vr = decord.VideoReader(str(p), ctx=decord.cpu(0))
    try:
        times = np.maximum(vr.get_frame_timestamp(list(range(len(vr))))[:, 0], 0.0) if len(vr) else np.zeros(0)
        sampler = _Sampler(fps)
        wanted = [i for i, t in enumerate(times) if sampler.take(float(t))]
        for start in range(0, len(wanted), _DECORD_BATCH):
            batch = wanted[start:start + _DECORD_BATCH]
            arrays = vr.get_batch(batch).asnumpy()  # (b, H, W, 3) uint8
            decoded[:] = [float(times[batch[-1]])]
            for i, frame in zip(batch, arrays, strict=True):
                yield frame, float(times[i])
        if len(times):
            decoded[:] = [float(times[-1])]
    finally:
        del vr


def _pyav_frames(p: Path, fps: float, decoded: list[float], size: tuple[int, int] | None = None,
                 after: float | None = None) -> Iterator[tuple[np.ndarray, float]]:
    """Decode forward once and convert only the sampled frames (seeking per frame is slower).
    `after`: resume a sampling that already yielded the frame at that time."""
    sampler = _Sampler(fps)
    if after is not None:
        sampler.take(after)
    scale = {"width": size[0], "height": size[1]} if size else {}
    stream = None
    with av.open(str(p)) as container:  # closed when the generator ends, fails or is closed
        try:
            stream = container.streams.video[0]
            stream.thread_type = _THREADS
            for frame in container.decode(stream):
                t = max(float(frame.time or 0.0), 0.0)
                decoded[:] = [t]
                if (after is None or t > after + _EPS) and sampler.take(t):
                    yield frame.to_ndarray(format="rgb24", **scale), t
        finally:
            stream = None  # the decoder is freed now, also when a traceback keeps this frame alive


CODECS = {".mp4": "libx264", ".webm": "libvpx-vp9", ".mkv": "libsvtav1"}


def write_video(path: str | Path, frames: np.ndarray, fps: float, codec: str | None = None,
                times: Sequence[float] | None = None) -> Path:
    """Write uint8 (T, H, W, 3) RGB frames (even H and W) as a browser-playable file.

    codec defaults by extension: .mp4 H.264 (yuv420p, faststart), .webm VP9, .mkv AV1.
    times: each frame's time in seconds, for a variable frame rate (as phones and screen
    recorders write); stored in milliseconds, so at least 1 ms apart. Default: i / fps."""
    p = Path(path)
    codec = codec or CODECS.get(p.suffix.lower(), "libx264")
    options = {"movflags": "+faststart"} if p.suffix.lower() in (".mp4", ".mov") else {}
    _, height, width, _ = frames.shape
    if height % 2 or width % 2:
        raise VideoError(f"width and height must be even to write yuv420p video, got {width}x{height}")
    pts = _millisecond_pts(times, len(frames)) if times is not None else None
    with av.open(str(p), "w", options=options) as container:
        stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        if pts is not None:
            stream.time_base = stream.codec_context.time_base = Fraction(1, 1000)
        for i, frame in enumerate(frames):
            picture = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            if pts is not None:
                picture.pts, picture.time_base = pts[i], Fraction(1, 1000)
            for packet in stream.encode(picture):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return p


def _millisecond_pts(times: Sequence[float], n: int) -> list[int]:
    try:
        ms = np.round(np.asarray(times, dtype=np.float64) * 1000)
    except (TypeError, ValueError):
        ms = np.full(1, np.nan)
    if ms.shape != (n,) or not np.isfinite(ms).all() or ms[0] < 0 or (np.diff(ms) < 1).any():
        raise VideoError(f"times must give each of the {n} frames a time in seconds, from 0 up, "
                         f"increasing by at least 1 ms")
    return [int(v) for v in ms]
