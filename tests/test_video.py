"""Video reading: formats x readers at a requested fps, and clear errors for bad input."""

from __future__ import annotations

import os
import time
from pathlib import Path

import av
import numpy as np
import pytest

import hermes.video as video
from hermes import HermesError, VideoError
from hermes.video import iter_frames, read_video, write_video

NATIVE_FPS, SECONDS = 30, 2


def ramp(n: int = NATIVE_FPS * SECONDS, height: int = 60, width: int = 100) -> np.ndarray:
    """Frame i has red level 4 * i, so a decoded frame tells which source frame it was."""
    frames = np.zeros((n, height, width, 3), np.uint8)
    frames[..., 0] = (4 * np.arange(n, dtype=np.uint8))[:, None, None]
    frames[..., 1] = 90
    return frames


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("videos")
    out = {name: write_video(root / name, ramp(), NATIVE_FPS) for name in ("h264.mp4", "vp9.webm", "av1.mkv")}
    out["av1.mp4"] = write_video(root / "av1.mp4", ramp(), NATIVE_FPS, codec="libsvtav1")
    return out


CASES = [  # file, reader
    ("h264.mp4", "decord"), ("h264.mp4", "pyav"),
    ("vp9.webm", "decord"), ("vp9.webm", "pyav"),
    ("av1.mkv", "pyav"), ("av1.mp4", "pyav"),
]


@pytest.mark.parametrize("name, backend", CASES)
@pytest.mark.parametrize("fps, expected_count", [(2, 4), (5, 10), (30, 60), (100, 60)])
def test_reads_at_requested_fps(videos, name, backend, fps, expected_count):
    frames, times = read_video(videos[name], fps, backend=backend)
    assert frames.shape == (expected_count, 60, 100, 3) and frames.dtype == np.uint8
    step = max(1.0 / fps, 1.0 / NATIVE_FPS)
    np.testing.assert_allclose(times, np.arange(expected_count) * step, atol=2e-3)
    # the red level says which source frame was decoded: the one at each sample time
    source = np.round(frames[:, 30, 50, 0].astype(float) / 4)
    np.testing.assert_allclose(source, np.round(times * NATIVE_FPS), atol=1)


def test_auto_falls_back_to_pyav_when_decord_cannot_open(videos, monkeypatch):
    def refuse(*args):
        raise RuntimeError("decord cannot open this")

    monkeypatch.setattr(video.decord, "VideoReader", refuse)
    frames, times = read_video(videos["av1.mkv"], 2)
    assert len(frames) == 4 and times[-1] == pytest.approx(1.5, abs=2e-3)


def decord_fails_to_copy(monkeypatch) -> None:
    """decord opens files but fails to copy frames out (decord2 3.4 did this for some frame
    sizes, e.g. "The size must exactly match")."""
    real = video.decord.VideoReader

    class FailsToCopy:
        def __init__(self, *args, **kwargs):
            self.inner = real(*args, **kwargs)

        def __getattr__(self, name):
            return getattr(self.inner, name)

        def __len__(self):
            return len(self.inner)

        def get_batch(self, index):
            raise RuntimeError("The size must exactly match")

    monkeypatch.setattr(video.decord, "VideoReader", FailsToCopy)


def test_auto_goes_on_with_pyav_when_decord_fails_to_decode(tmp_path, monkeypatch):
    # the decord backend says so, auto goes on with PyAV
    path = write_video(tmp_path / "odd.mp4", ramp(height=64, width=96), NATIVE_FPS)
    decord_fails_to_copy(monkeypatch)
    with pytest.raises(VideoError, match="decoding failed"):
        read_video(path, 2, backend="decord")
    frames, times = read_video(path, 2)
    assert frames.shape == (4, 64, 96, 3)
    np.testing.assert_allclose(times, [0, 0.5, 1.0, 1.5], atol=2e-3)


def test_auto_uses_pyav_where_decord_is_missing(videos, monkeypatch):
    monkeypatch.setattr(video, "decord", None)
    assert len(read_video(videos["h264.mp4"], 2)[0]) == 4
    with pytest.raises(VideoError, match="decord reader is not installed"):
        read_video(videos["h264.mp4"], 2, backend="decord")


def test_iter_frames_streams_in_order(videos):
    times = [t for _, t in iter_frames(videos["vp9.webm"], 4)]
    assert times == sorted(times) and len(times) == 8


def _audio_only(path: Path) -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=16000)
        for _ in range(10):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate = 16000
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _make_bad(kind: str, root: Path, videos: dict[str, Path]) -> Path:
    path = root / f"{kind}.mp4"
    if kind == "missing":
        return root / "no-such-video.mp4"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text("These are my holiday notes, not a video.\n" * 20)
    elif kind == "image":
        path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(200))
    elif kind == "truncated_mp4":
        data = videos["h264.mp4"].read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "truncated_webm":
        data = videos["vp9.webm"].read_bytes()
        path = root / "truncated.webm"
        path.write_bytes(data[: len(data) // 2])
    elif kind == "corrupt_header":
        data = bytearray(videos["h264.mp4"].read_bytes())
        data[40:400] = bytes(360)
        path.write_bytes(bytes(data))
    elif kind == "audio_only":
        _audio_only(path)
    elif kind == "folder":
        path = root / "a-folder.mp4"
        path.mkdir()
    return path


BAD = [  # kind, fps, message pattern
    ("missing", 2, r"video file not found: .*no-such-video\.mp4"),
    ("empty", 2, r"empty \(0 bytes\)"),
    ("text", 2, r"is a text file, not a video"),
    ("image", 2, r"is a PNG image, not a video"),
    ("truncated_mp4", 2, r"truncated"),
    ("truncated_webm", 2, r"truncated: it should last 2\.0 s but its frames end at"),
    ("corrupt_header", 2, r"truncated or corrupt"),
    ("audio_only", 2, r"has no video stream \(it holds: audio\)"),
    ("folder", 2, r"is a folder, not a video file"),
    ("good", 0, r"fps must be a number greater than 0"),
    ("good", -1.5, r"fps must be a number greater than 0"),
    ("good", float("nan"), r"fps must be a number greater than 0"),
]


@pytest.mark.parametrize("backend", ["auto", "pyav"])
@pytest.mark.parametrize("kind, fps, message", BAD, ids=[f"{k}-{f}" for k, f, _ in BAD])
def test_bad_input_gives_a_clear_video_error(tmp_path, videos, kind, fps, message, backend):
    path = videos["h264.mp4"] if kind == "good" else _make_bad(kind, tmp_path, videos)
    with pytest.raises(VideoError, match=message) as info:
        read_video(path, fps, backend=backend)
    assert isinstance(info.value, HermesError)
    assert "Traceback" not in str(info.value) and len(str(info.value)) < 300


def test_truncated_stream_yields_what_it_decoded_before_the_error(tmp_path, videos):
    path = _make_bad("truncated_webm", tmp_path, videos)
    got = []
    with pytest.raises(VideoError, match="truncated"):
        for _frame, t in iter_frames(path, 10):
            got.append(t)
    assert len(got) >= 3 and got == sorted(got)


# ---- abandoning a stream: the file and the decoder are freed at once, nothing hangs ---------
def held(path: Path) -> tuple[int, set[str]]:
    """(open descriptors on `path`, ids of the threads alive) of this process, from /proc."""
    def target(fd: str) -> str:
        try:
            return os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # closed meanwhile (the listing's own descriptor)
            return ""

    fds = sum(target(fd) == str(path.resolve()) for fd in os.listdir("/proc/self/fd"))
    return fds, set(os.listdir("/proc/self/task"))


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="reads /proc")
@pytest.mark.parametrize("backend", ["auto", "decord", "pyav", "auto after decord failed"])
@pytest.mark.parametrize("how", ["close", "drop"])
def test_a_stream_holds_its_file_once_and_frees_it_and_its_threads_when_dropped(videos, monkeypatch,
                                                                                 backend, how):
    path = videos["h264.mp4"]
    if backend == "auto after decord failed":  # PyAV goes on: decord's reader is gone by then
        decord_fails_to_copy(monkeypatch)
        backend = "auto"
    _, before = held(path)
    frames = iter_frames(path, 2, backend=backend)
    next(frames)
    fds, during = held(path)
    assert fds == 1  # one reader has the file open
    if how == "close":
        frames.close()
    del frames  # "drop": the last reference goes, as when a consumer moves on
    # the decoder's threads (those that started while the stream was open) are gone; a thread some
    # other library starts meanwhile is not the stream's. A thread may take a moment to leave
    # /proc after its reader let it go (seen once under the full suite's load): up to 2 s
    deadline = time.monotonic() + 2.0
    while True:
        fds, after = held(path)
        if (fds == 0 and not (during - before) & after) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert fds == 0 and not (during - before) & after


def test_reading_bad_files_prints_nothing_on_the_terminal(tmp_path, videos, capfd):
    # FFmpeg writes to the process's stderr (fd 2) from C; its noise is off for both readers,
    # without a Python log callback (see hermes.video), and our VideoError says what is wrong
    capfd.readouterr()
    for kind in ("truncated_mp4", "truncated_webm", "corrupt_header"):
        for backend in ("auto", "decord", "pyav"):
            with pytest.raises(VideoError):
                read_video(_make_bad(kind, tmp_path, videos), 10, backend=backend)
    assert capfd.readouterr().err == ""


def test_a_variable_frame_rate_file_keeps_each_frames_time(tmp_path):
    times = [0.0, 0.007, 0.107, 0.157, 0.19, 0.29, 0.34, 0.347, 0.447, 0.5]
    path = write_video(tmp_path / "vfr.mkv", ramp(len(times)), 30, codec="libx264", times=times)
    for backend in ("decord", "pyav"):
        frames, got = read_video(path, 1000, backend=backend)  # more than the native rate: every frame
        np.testing.assert_allclose(got, times, atol=1e-3)
        np.testing.assert_allclose(frames[:, 30, 50, 0] / 4, np.arange(len(times)), atol=1)
        _, sampled = read_video(path, 10, backend=backend)  # the first frame at or after each 0.1 s step
        np.testing.assert_allclose(sampled, [0.0, 0.107, 0.29, 0.34, 0.447, 0.5], atol=1e-3)


@pytest.mark.parametrize("times", [
    [0.0, 0.1], [0.0, 0.1, 0.1], [0.0, 0.2, 0.1], [-0.1, 0.0, 0.1], [0.0, 0.1, float("nan")],
    [0.0, 0.1, float("inf")], [0.0, 0.0004, 0.1], ["a", "b", "c"],
], ids=["too-few", "repeated", "backwards", "negative", "nan", "inf", "under-1ms", "text"])
def test_bad_frame_times_are_refused_with_a_clear_message(tmp_path, times):
    with pytest.raises(VideoError, match=r"times must give each of the 3 frames a time in seconds"):
        write_video(tmp_path / "bad.mkv", ramp(3), 30, codec="libx264", times=times)


def test_written_mp4_is_h264_faststart(videos):
    with av.open(str(videos["h264.mp4"])) as container:
        assert container.streams.video[0].codec_context.name == "h264"
    head = videos["h264.mp4"].read_bytes()[:4096]
    assert head.find(b"moov") < head.find(b"mdat") or b"mdat" not in head


# ---- resolution: full up to 1080p, larger frames scaled down once while decoding -----------
def halves(n: int, height: int, width: int) -> np.ndarray:
    """Left half red, right half blue: what a scaled frame must still show."""
    frames = np.zeros((n, height, width, 3), np.uint8)
    frames[:, :, : width // 2, 0] = 220
    frames[:, :, width // 2:, 2] = 220
    return frames


@pytest.mark.parametrize("backend", ["auto", "decord", "pyav"])
def test_a_720p_clip_comes_out_at_full_resolution(tmp_path, backend):
    path = write_video(tmp_path / "720p.mp4", halves(2, 720, 1280), 2)
    frames, _ = read_video(path, 2, backend=backend)
    assert frames.shape == (2, 720, 1280, 3)  # the model's resize to its vision input is the only one


def test_a_4k_clip_is_scaled_down_once_to_1080p(tmp_path):
    path = write_video(tmp_path / "4k.mp4", halves(2, 2160, 3840), 2)
    frames, _ = read_video(path, 2)
    assert frames.shape == (2, 1080, 1920, 3)
    left, right = frames[0, 100:-100, 100:860].mean((0, 1)), frames[0, 100:-100, 1060:-100].mean((0, 1))
    assert left[0] > 200 > 20 > left[2] and right[2] > 200 > 20 > right[0]  # scaled, not cropped
    with pytest.raises(VideoError, match="decord reader cannot scale 3840x2160 frames to fit 1920x1080"):
        read_video(path, 2, backend="decord")
    assert read_video(path, 2, max_size=None)[0].shape == (2, 2160, 3840, 3)  # asked for full size


@pytest.mark.parametrize("size, scaled", [
    ((1280, 720), None), ((1920, 1080), None), ((1080, 1920), None), ((640, 480), None),
    ((3840, 2160), (1920, 1080)), ((2160, 3840), (1080, 1920)), ((2560, 1440), (1920, 1080)),
    ((2048, 2048), (1080, 1080)), ((3840, 1600), (1920, 800)),
])
def test_frames_are_scaled_only_when_they_do_not_fit_1080p(size, scaled):
    assert video.scaled_size(*size) == scaled
    assert video.scaled_size(*size, max_size=None) is None
