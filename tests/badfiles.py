"""Bad inputs for the reliability tests, written on demand (PyAV, numpy; seconds at most)."""

from __future__ import annotations

import zlib
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

EXAMPLE = Path(__file__).resolve().parent.parent / "assets" / "examples" / "shapestream-901.mp4"


def png_bytes() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    raw = b"".join(b"\0" + b"\x80\x80\x80" * 8 for _ in range(8))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", (8).to_bytes(4, "big") * 2 + b"\x08\x02\0\0\0")
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def audio_only(path: Path) -> Path:
    with av.open(str(path), "w") as c:
        stream = c.add_stream("aac", rate=16000)
        stream.layout = "mono"
        for i in range(10):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 16000, i * 1024
            for packet in stream.encode(frame):
                c.mux(packet)
        for packet in stream.encode():
            c.mux(packet)
    return path


def _h264(path: Path, size: int, pts: list[int]) -> Path:
    with av.open(str(path), "w") as c:
        stream = c.add_stream("libx264", rate=1)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.time_base = Fraction(1, 1)
        stream.options = {"preset": "ultrafast"}
        for t in pts:
            frame = av.VideoFrame(size, size, "yuv420p")
            for plane in frame.planes:
                plane.update(np.full(plane.buffer_size, 128, np.uint8).tobytes())
            frame.pts = t
            for packet in stream.encode(frame):
                c.mux(packet)
        for packet in stream.encode():
            c.mux(packet)
    return path


def huge_frames(path: Path) -> Path:
    """One 8000x8000 frame (a real header and a real frame)."""
    return _h264(path, 8000, [0])


def ten_hours(path: Path) -> Path:
    """Two tiny frames ten hours apart: the container declares a 10 h video."""
    return _h264(path, 64, [0, 36_000])


def truncated(path: Path) -> Path:
    data = EXAMPLE.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    return path


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


# name -> (maker(tmp_path) -> file, the words the message must contain)
BAD_FILES = {
    "zero bytes": (lambda d: write(d / "empty.mp4", b""), "empty"),
    "random bytes named .mp4": (lambda d: write(d / "noise.mp4", np.random.default_rng(0).bytes(8192)),
                                "not a video"),
    "PNG named .mp4": (lambda d: write(d / "picture.mp4", png_bytes()), "PNG image"),
    "JPEG named .mp4": (lambda d: write(d / "photo.mp4", b"\xff\xd8\xff\xe0\0\x10JFIF\0" + bytes(500)), "JPEG"),
    "text file": (lambda d: write(d / "notes.mp4", b"my notes, not a video\n" * 40), "text file"),
    "non-UTF-8 text file": (lambda d: write(d / "latin.mp4", "café crème, déjà vu\n".encode("latin-1") * 40),
                            "not a video"),
    "truncated mp4": (lambda d: truncated(d / "cut.mp4"), "truncated"),
    "audio only": (lambda d: audio_only(d / "sound.mp4"), "no video stream"),
    "8000x8000 frames": (lambda d: huge_frames(d / "huge.mp4"), "8000x8000"),
    "declares 10 hours": (lambda d: ten_hours(d / "long.mp4"), "too long"),
}
