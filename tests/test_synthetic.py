"""ShapeStream: deterministic, renders at any size, answers agree with the event log; the one
template table and the one grading rule."""

from __future__ import annotations

import numpy as np
import pytest

from hermes.shapestream import (
    CATEGORIES,
    COLOURS,
    NUMBERS,
    SHAPES,
    TEMPLATES,
    Event,
    answer,
    by_shape,
    chance_level,
    evidence,
    generate,
    grade,
    template_name,
    template_of,
    world,
)


def test_same_seed_same_stream():
    a, b = generate(11, seconds=32), generate(11, seconds=32)
    assert np.array_equal(a.frames, b.frames) and np.array_equal(a.timestamps, b.timestamps)
    assert a.events == b.events and a.questions == b.questions
    c = generate(12, seconds=32)
    assert c.events != a.events


def test_renders_at_any_size_and_rate_with_the_same_world():
    small, large = generate(5, seconds=24, fps=2, size=(64, 64)), generate(5, seconds=24, fps=6, size=(192, 256))
    assert small.frames.shape == (48, 64, 64, 3) and large.frames.shape == (144, 192, 256, 3)
    assert small.events == large.events
    np.testing.assert_allclose(large.timestamps[::3], small.timestamps)


def answer_from_log(events: list[Event], question: str, t: float) -> str:
    """An independent reading of the event log: what the answer must be at time t."""
    log = [e for e in events if e.time <= t]
    appeared = [e for e in log if e.kind == "appear"]
    left = {e.shape for e in log if e.kind == "leave"}
    words = question.split()

    def colour_now(shape: str) -> str:
        return [e.colour for e in log if e.shape == shape and e.kind in ("appear", "colour")][-1]

    if question.startswith("what colour is the"):
        return colour_now(words[4])
    if question == "how many shapes are on the screen now ?":
        return NUMBERS[len([e for e in appeared if e.shape not in left])]
    if question.startswith("what colour was the"):
        return next(e.colour for e in appeared if e.shape == words[4])
    if question == "which shape appeared first ?":
        return appeared[0].shape
    if question == "how many shapes have appeared so far ?":
        return NUMBERS[len(appeared)]
    if question.startswith("how many times did the"):
        return NUMBERS[len([e for e in log if e.kind == "colour" and e.shape == words[5]])]
    if question.startswith("did the"):
        order = [e.shape for e in appeared]
        return "yes" if order.index(words[2]) < order.index(words[6]) else "no"
    raise AssertionError(f"unknown template: {question}")


@pytest.mark.parametrize("seed", range(12))
def test_answers_agree_with_the_event_log(seed):
    stream = generate(seed, seconds=float(32 + 8 * (seed % 5)))
    assert stream.questions
    for q in stream.questions:
        assert q.answer == answer_from_log(stream.events, q.question, q.time), q
        assert q.time in stream.timestamps


@pytest.mark.parametrize("seed", range(6))
def test_the_last_frame_shows_what_perception_questions_say(seed):
    stream = generate(seed, seconds=40, size=(96, 96))
    for q in stream.questions:
        if q.question.startswith("what colour is the"):
            frame = stream.frames[list(stream.timestamps).index(q.time)]
            colour = np.array(COLOURS[q.answer], np.uint8)
            assert (frame == colour).all(axis=-1).sum() > 30  # the shape is on screen in that colour


def test_every_category_and_vocabulary():
    streams = [generate(seed, seconds=48) for seed in range(10)]
    questions = [q for s in streams for q in s.questions]
    assert {q.category for q in questions} == set(CATEGORIES)
    answers = {q.answer for q in questions}
    assert answers <= set(SHAPES) | set(COLOURS) | set(NUMBERS) | {"yes", "no"}
    from hermes.tokenizer import build_tokenizer
    tok = build_tokenizer()
    for q in questions:
        ids = tok(q.question + " " + q.answer, add_special_tokens=False)["input_ids"]
        assert tok.unk_token_id not in ids, q.question


@pytest.mark.parametrize("seed", [3, 11, 904])
def test_answer_reproduces_every_generated_question_from_the_world_alone(seed):
    stream = generate(seed, seconds=64.0)
    objects, _ = world(seed, 64.0)
    for q in stream.questions:
        assert answer(objects, q.question, q.time) == (q.answer, q.category)
        assert answer(objects, q.question.upper().replace(" ?", "?"), q.time) == (q.answer, q.category)


@pytest.mark.parametrize("question", ["what is the meaning of life ?", "what colour is the nonagon now ?", ""])
def test_answer_is_none_for_questions_outside_the_templates(question):
    objects, _ = world(3, 64.0)
    assert answer(objects, question, 30.0) is None


def _first_frame(stream, shape):
    return next(i for i, t in enumerate(stream.timestamps) if by_shape(stream.objects, shape).visible(float(t)))


# question start -> what must hold for each (frame, shape) of its evidence, given the stream and question
EVIDENCE_CASES = {
    "what colour is": lambda s, q, now, i, shape: i == now and by_shape(s.objects, shape).colour_at(
        float(s.timestamps[i])) == q.answer,
    "how many shapes are on": lambda s, q, now, i, shape: i == now and shape == "",
    "what colour was": lambda s, q, now, i, shape: i == _first_frame(s, shape) and by_shape(s.objects, shape).colour_at(
        float(s.timestamps[i])) == q.answer,
    "which shape appeared": lambda s, q, now, i, shape: shape == q.answer and i == _first_frame(s, shape),
    "how many shapes have": lambda s, q, now, i, shape: i == _first_frame(s, shape) and max(
        o.appear for o in s.objects if o.appear <= q.time) == by_shape(s.objects, shape).appear,
    "how many times": lambda s, q, now, i, shape: (i == _first_frame(s, shape)) if q.answer == "zero" else (
        by_shape(s.objects, shape).colour_at(float(s.timestamps[i]))
        != by_shape(s.objects, shape).colour_at(float(s.timestamps[i - 1]))),
    "did the": lambda s, q, now, i, shape: i == _first_frame(s, shape),
}


@pytest.mark.parametrize("start", list(EVIDENCE_CASES))
def test_evidence_points_at_the_frames_that_show_the_answer(start):
    checked = 0
    for seed in range(6):
        stream = generate(seed, seconds=64.0)
        for q in (q for q in stream.questions if q.question.startswith(start)):
            now = int(np.searchsorted(stream.timestamps, q.time + 1e-6)) - 1
            slots = evidence(stream, q)
            assert len(slots) == (2 if start == "did the" else 1)
            for where in slots:
                assert len(where) == 1
                for i, shape in where:
                    shown = shape == "" or by_shape(stream.objects, shape).visible(float(stream.timestamps[i]))
                    assert i <= now and shown
                    assert EVIDENCE_CASES[start](stream, q, now, i, shape), (q, where)
                    checked += 1
    assert checked >= 10


def test_the_template_table_parses_names_and_bounds_every_generated_question():
    questions = [q for seed in range(10) for q in generate(seed, seconds=48.0, size=(8, 8)).questions]
    assert {t.category for t in TEMPLATES} == set(CATEGORIES)
    assert {template_name(q.question) for q in questions} == {t.name for t in TEMPLATES}  # every template asked
    for q in questions:
        template, shapes = template_of(q.question)
        assert template.ask.format(*shapes) == q.question and template.category == q.category
        assert q.answer in template.options and chance_level(q.question) == 1 / len(template.options)
        assert template_of(q.question.upper().replace(" ?", "?")) == (template, shapes)
    assert template_name("did the circle appear before the cross ?") == "did the X appear before the X ?"
    assert template_of("what colour is the nonagon now ?") is None and template_name("hello") == "hello"


def test_every_answer_a_template_allows_is_one_word_that_grades_as_itself():
    """So grade(reply, truth) is exactly the accuracy study's "first word of the reply == truth"."""
    for template in TEMPLATES:
        for option in template.options:
            assert option.split() == [option] and option == option.lower() and "." not in option
            assert grade(option, option) and not any(grade(other, option) for other in template.options
                                                     if other != option)


# (template, reply, truth, is it right?): the forms a reply comes in, and replies that must not pass
GRADE_CASES = [
    ("what colour is the X now ?", "red", "red", True),
    ("what colour is the X now ?", "Red.", "red", True),
    ("what colour is the X now ?", "  red .", "red", True),
    ("what colour is the X now ?", "red it is", "red", True),
    ("what colour is the X now ?", "blue", "red", False),
    ("what colour is the X now ?", "blue red", "red", False),  # only the first word counts
    ("what colour is the X now ?", "reddish", "red", False),
    ("what colour is the X now ?", "the red one", "red", False),
    ("what colour is the X now ?", "red,", "red", False),  # only a full stop separates (the study's rule)
    ("what colour is the X now ?", "", "red", False),
    ("how many shapes are on the screen now ?", "two", "two", True),
    ("how many shapes are on the screen now ?", "Two.", "two", True),
    ("how many shapes are on the screen now ?", "2", "two", False),  # digits are not the number word
    ("how many shapes are on the screen now ?", "three", "two", False),
    ("what colour was the X when it appeared ?", "GREEN", "green", True),
    ("what colour was the X when it appeared ?", "yellow", "green", False),
    ("which shape appeared first ?", "circle", "circle", True),
    ("which shape appeared first ?", "circle.", "circle", True),
    ("which shape appeared first ?", "circles", "circle", False),
    ("which shape appeared first ?", "square", "circle", False),
    ("how many shapes have appeared so far ?", "four", "four", True),
    ("how many shapes have appeared so far ?", "for", "four", False),
    ("how many times did the X change colour ?", "zero", "zero", True),
    ("how many times did the X change colour ?", "none", "zero", False),
    ("how many times did the X change colour ?", "one two", "two", False),
    ("did the X appear before the X ?", "yes", "yes", True),
    ("did the X appear before the X ?", "Yes.", "yes", True),
    ("did the X appear before the X ?", "no", "yes", False),
    ("did the X appear before the X ?", "yes no", "no", False),
    ("did the X appear before the X ?", "y", "yes", False),
]


def test_the_grade_table_covers_every_template():
    assert {name for name, *_ in GRADE_CASES} == {t.name for t in TEMPLATES}
    assert all(truth in next(t for t in TEMPLATES if t.name == name).options for name, _, truth, _ in GRADE_CASES)


@pytest.mark.parametrize("name, reply, truth, right", GRADE_CASES)
def test_grade(name, reply, truth, right):
    assert grade(reply, truth) is right
