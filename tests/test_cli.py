"""The command line: streams a file, answers at the requested times, prints cache lengths."""

from __future__ import annotations

import re

import numpy as np

from hermes.cli import main
from hermes.video import write_video
from tests.conftest import random_frames


def test_cli_streams_video_and_answers(tmp_path, capsys):
    path = write_video(tmp_path / "clip.mp4", random_frames(30, height=48, width=64), fps=10)
    code = main(["run", str(path), "--model", "random-tiny", "--policy", "fifo", "--budget", "40", "--fps", "5",
                 "--chunk-frames", "4", "--ask", "what is on the screen now ?", "--ask-at", "1.5",
                 "--ask", "how many circles ?", "--max-new-tokens", "3"])
    out = capsys.readouterr().out
    assert code == 0
    answers = re.findall(r"\[(.*?)\] Q: (.*)\n\s+A: '.*'\s+\(TTFT ([\d.]+) ms, (\d) tokens\)", out)
    assert [(when, q) for when, q, _, _ in answers] == [("1.5 s", "what is on the screen now ?"),
                                                         ("end, 2.8 s", "how many circles ?")]
    assert all(float(ttft) > 0 for _, _, ttft, _ in answers)
    lengths = re.search(r"cache lengths per layer: ([\d ]+)", out).group(1).split()
    assert len(lengths) == 12 and all(int(n) == 40 for n in lengths)
    assert "frames 15 |" in out


def test_cli_reports_bad_video_without_traceback(tmp_path, capsys):
    path = tmp_path / "notes.mp4"
    path.write_text("not a video at all\n")
    assert main(["run", str(path), "--model", "random-tiny", "--policy", "fifo"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == "error: notes.mp4 is a text file, not a video"


def test_cli_rejects_unknown_policy(tmp_path, capsys):
    path = write_video(tmp_path / "clip.mp4", np.zeros((4, 32, 32, 3), np.uint8), fps=4)
    assert main(["run", str(path), "--model", "random-tiny", "--policy", "nope"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown policy 'nope'; available: ") and "fifo" in err


def test_cli_runs_with_int8_weights_and_says_so(tmp_path, capsys):
    path = write_video(tmp_path / "clip.mp4", random_frames(8, height=48, width=64), fps=4)
    code = main(["run", str(path), "--model", "random-tiny", "--quantize", "int8", "--fps", "4", "--chunk-frames",
                 "4", "--ask", "what is on the screen now ?", "--max-new-tokens", "2"])
    out = capsys.readouterr().out
    assert code == 0 and "in float32, int8 weights (" in out and "A: '" in out
