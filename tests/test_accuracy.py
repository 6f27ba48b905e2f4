"""The accuracy script's unified streaming-benchmark path, on a tiny made-up file, and its
grading: the one rule (hermes.shapestream.grade) the app's check mark uses too."""

from __future__ import annotations

import json

import pytest

from analysis import accuracy
from app import render
from hermes import HermesError, shapestream
from hermes.shapestream import generate
from hermes.video import write_video


@pytest.fixture
def bench_file(tmp_path):
    stream = generate(3, seconds=16, fps=2, size=(64, 64))
    write_video(tmp_path / "clip.mp4", stream.frames, fps=2)
    entries = [{
        "video_id": "clip",
        "video_path": "clip.mp4",  # relative to the JSON file
        "conversations": [
            {"question": "how many shapes are on the screen now ?", "answer": "one", "end_time": 4.0,
             "task": "perception"},
            {"question": "which colour ?", "answer": "B", "choices": ["red", "blue"], "end_time": 15.5,
             "task": "perception"},
            {"question": "did the circle appear first ?", "answer": "yes", "end_time": 15.5, "task": "order"},
        ],
    }]
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(entries))
    return path


def test_benchmark_mode_scores_a_unified_schema_file(bench_file, tmp_path, capsys):
    out = tmp_path / "result.md"
    accuracy.main(["--benchmark", str(bench_file), "--model", "random-tiny", "--policy", "fifo", "--budget", "64",
                   "--fps", "2", "--max-new-tokens", "2", "--out", str(out)])
    text = out.read_text()
    assert "| perception | 2 |" in text and "| order | 1 |" in text and "| all | 3 |" in text


@pytest.mark.parametrize("broken, message", [
    ([{"video_path": "x.mp4", "conversations": []}], "has no 'video_id'"),
    ([{"video_id": "a", "video_path": "x.mp4", "conversations": [{"question": "q", "answer": "a"}]}],
     "has no 'end_time'"),
    ({"video_id": "a"}, "expected a JSON list"),
])
def test_benchmark_loader_names_what_is_missing(tmp_path, broken, message):
    path = tmp_path / "b.json"
    path.write_text(json.dumps(broken))
    with pytest.raises(HermesError, match=message):
        accuracy.load_benchmark(path)


@pytest.mark.parametrize("conv, said, ok", [
    ({"answer": "red"}, "red .", True),
    ({"answer": "red"}, "blue", False),
    ({"answer": "B", "choices": ["red", "blue"]}, "B. blue", True),
    ({"answer": "blue", "choices": ["red", "blue"]}, "b", True),
    ({"answer": "blue", "choices": ["red", "blue"]}, "A", False),
    ({"answer": "blue", "choices": ["red", "blue"]}, "blue it is", True),
])
def test_answer_matching(conv, said, ok):
    assert accuracy.correct(conv, said) is ok


@pytest.mark.parametrize("reply, truth", [("Red.", "red"), ("red", "red"), ("blue red", "red"), ("two .", "two"),
                                           ("reddish", "red"), ("", "red")])
def test_the_app_check_mark_agrees_with_what_the_accuracy_study_counts(reply, truth):
    """The chat's ✓ / ✗ (app.render.chat_messages) says what the accuracy study would count."""
    entry = {"question": "what colour is the square now ?", "time": 3.0, "truth": truth,
             "answers": {"hermes": reply, "fifo": "yellow"}, "ttft_ms": {"hermes": 5.0, "fifo": 6.0}}
    line = render.chat_messages([entry])[1]["content"].rsplit("ground truth: ", 1)[1]
    counted = accuracy.correct({"answer": truth}, reply)  # an empty reply counts as wrong there and here
    assert line == f"**{truth}** {'✓' if counted else '✗'} hermes · ✗ fifo"  # each verdict names its policy
    assert counted is shapestream.grade(reply, truth)


def test_a_policy_subset_writes_beside_the_sweep_and_says_its_command(tmp_path):
    accuracy.main(["--model", "random-tiny", "--streams", "1", "--policies", "full", "--out", str(tmp_path)])
    md = (tmp_path / "accuracy_full-random-tiny.md").read_text()
    assert "`python -m analysis.accuracy --policies full` with `random-tiny`" in md
    rows = (tmp_path / "accuracy_full-random-tiny.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["full"] and not (tmp_path / "accuracy-random-tiny.md").exists()
    with pytest.raises(HermesError, match="unknown policies nope"):
        accuracy.main(["--model", "random-tiny", "--streams", "1", "--policies", "full,nope", "--out", str(tmp_path)])
