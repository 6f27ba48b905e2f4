"""ShapeStream: a deterministic procedural streaming-video world with exact questions.

    from hermes.shapestream import generate
    stream = generate(seed=7, seconds=48, fps=2, size=(64, 64))
    stream.frames       # uint8 (T, H, W, 3)
    stream.timestamps   # (T,) seconds
    stream.events       # the event log (appear / colour / leave / scene), time-ordered
    stream.questions    # Question(question, answer, time, category), answers from the event log

The world: up to four shapes (circle, square, triangle, cross; black outlines), each at
most once per stream and in its own quarter of the screen, appear, drift, change colour and leave; the
background shade changes now and then. The world is continuous (seconds, unit square),
so the same stream renders at any fps and size: large in the app, 64 px for the model
(hermes.shapestream_render draws the pixels).

Question categories (DESIGN section 5): real-time perception (what is on screen now),
backward tracing (evidence in the past), counting (how many so far), temporal order
(did X come before Y). A question at time t is about the frames with timestamp <= t.
TEMPLATES is the one table of them (how to ask, parse, answer, find the evidence, the answers
allowed), why_not() says why a question has no answer at a time, and grade() is the one rule
for whether a reply is right.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from hermes.shapestream_render import BACKGROUNDS, COLOURS, render

SHAPES = ("circle", "square", "triangle", "cross")
CATEGORIES = ("perception", "backward", "counting", "order")
QUADRANTS = ((0.25, 0.25), (0.25, 0.75), (0.75, 0.25), (0.75, 0.75))  # (y, x) centres
MIN_SEGMENT_S = 2.5  # every lifetime and colour segment lasts at least this long (visible when sampled)
DRIFT = 0.06  # how far a shape wanders from its quarter's centre, in screen sides


@dataclass(frozen=True)
class Event:
    time: float
    kind: str  # "appear", "colour", "leave", "scene"
    shape: str = ""
    colour: str = ""  # new colour ("appear", "colour"); background index for "scene"


@dataclass(frozen=True)
class Question:
    question: str
    answer: str
    time: float  # asked after the frame at this time
    category: str


@dataclass
class ShapeObject:
    shape: str
    appear: float
    leave: float  # may be past the end of the stream
    colours: list[tuple[float, str]]  # (from time, colour), first at `appear`
    quadrant: tuple[float, float]
    radius: float  # in units of the screen side
    phase: float
    speed: float

    def colour_at(self, t: float) -> str:
        return [c for start, c in self.colours if start <= t][-1]

    def visible(self, t: float) -> bool:
        return self.appear <= t < self.leave

    def centre(self, t: float) -> tuple[float, float]:
        """A slow circular drift inside its quadrant."""
        angle = self.phase + self.speed * (t - self.appear)
        return self.quadrant[0] + DRIFT * np.sin(angle), self.quadrant[1] + DRIFT * np.cos(angle)


@dataclass
class Stream:
    seed: int
    seconds: float
    fps: float
    frames: np.ndarray  # uint8 (T, H, W, 3)
    timestamps: np.ndarray  # (T,)
    events: list[Event]
    objects: list[ShapeObject]
    scenes: list[tuple[float, int]]  # (from time, background index)
    questions: list[Question] = field(default_factory=list)


# ---- world (rendered by hermes.shapestream_render) ---------------------------------------


def _world(rng: np.random.Generator, seconds: float) -> tuple[list[ShapeObject], list[tuple[float, int]]]:
    n_obj = int(rng.integers(2, len(SHAPES) + 1))
    shapes = [str(s) for s in rng.permutation(SHAPES)[:n_obj]]
    quadrants = list(rng.permutation(len(QUADRANTS))[:n_obj])
    last_start = max(seconds * 0.75, MIN_SEGMENT_S)
    starts = np.sort(rng.uniform(0.0, last_start, size=n_obj))
    starts[0] = rng.uniform(0.0, min(2.0, seconds / 4))  # something is on screen early
    objects = []
    for shape, quadrant, appear in zip(shapes, quadrants, starts, strict=True):
        appear = float(np.round(appear, 2))
        life = rng.uniform(max(MIN_SEGMENT_S * 2, seconds * 0.3), seconds * 1.2)
        leave = float(np.round(appear + life, 2))
        colours = [(appear, str(rng.choice(list(COLOURS))))]
        for _ in range(int(rng.integers(0, 3))):  # 0-2 colour changes, each segment long enough
            t = colours[-1][0] + rng.uniform(MIN_SEGMENT_S, MIN_SEGMENT_S + seconds * 0.3)
            if t > min(leave, seconds) - MIN_SEGMENT_S:
                break
            new = str(rng.choice([c for c in COLOURS if c != colours[-1][1]]))
            colours.append((float(np.round(t, 2)), new))
        objects.append(ShapeObject(shape=shape, appear=appear, leave=leave, colours=colours,
                                   quadrant=QUADRANTS[quadrant], radius=float(rng.uniform(0.15, 0.2)),
                                   phase=float(rng.uniform(0, 2 * np.pi)), speed=float(rng.uniform(0.2, 0.6))))
    scenes = [(0.0, int(rng.integers(len(BACKGROUNDS))))]
    for _ in range(int(rng.integers(0, 3))):
        t = float(np.round(rng.uniform(0.0, seconds), 2))
        scenes.append((t, int(rng.choice([i for i in range(len(BACKGROUNDS)) if i != scenes[-1][1]]))))
        scenes.sort()
    return objects, scenes


def _events(objects: list[ShapeObject], scenes: list[tuple[float, int]], seconds: float) -> list[Event]:
    events = [Event(t, "scene", colour=str(b)) for t, b in scenes[1:] if t < seconds]
    for o in objects:
        events.append(Event(o.appear, "appear", o.shape, o.colours[0][1]))
        events += [Event(t, "colour", o.shape, c) for t, c in o.colours[1:]]
        if o.leave < seconds:
            events.append(Event(o.leave, "leave", o.shape))
    return sorted(events, key=lambda e: (e.time, e.kind))


# ---- questions: ONE table of templates --------------------------------------------------

NUMBERS = ("zero", "one", "two", "three", "four", "five")


def _seen(objects: list[ShapeObject], t: float) -> list[ShapeObject]:
    return sorted((o for o in objects if o.appear <= t), key=lambda o: o.appear)


def by_shape(objects: list[ShapeObject], shape: str) -> ShapeObject | None:
    return next((o for o in objects if o.shape == shape), None)


@dataclass
class Moment:
    """What a question may be asked about at time t (the templates' `subjects` read it)."""

    seen: list[ShapeObject]  # appeared by t, in order of appearance
    now: list[ShapeObject]  # on screen at t
    changed: list[ShapeObject]  # changed colour by t
    rng: np.random.Generator

    def pick(self, items: list[ShapeObject]) -> tuple[str]:
        return (items[int(self.rng.integers(len(items)))].shape,)


@dataclass
class Frames:
    """The sampled frames up to a question (the templates' `evidence` reads them)."""

    timestamps: np.ndarray
    now: int  # index of the newest frame at the question's time
    sampled: list[ShapeObject]  # appeared and on some frame so far, in order of appearance

    def first_frame(self, o: ShapeObject) -> int:
        return next(i for i in range(self.now + 1) if o.visible(float(self.timestamps[i])))

    def changes(self, o: ShapeObject) -> list[int]:
        ts = self.timestamps
        return [i for i in range(1, self.now + 1) if o.visible(float(ts[i])) and o.visible(float(ts[i - 1]))
                and o.colour_at(float(ts[i])) != o.colour_at(float(ts[i - 1]))]

    def appearances(self, *named: ShapeObject | None) -> list[list[tuple[int, str]]]:
        """One slot per named object: the frame where it was first seen ([] unless all were)."""
        if not named or not all(o in self.sampled for o in named):
            return []
        return [[(self.first_frame(o), o.shape)] for o in named]


@dataclass(frozen=True)
class Template:
    """One ShapeStream question template: how to ask it, answer it, find its evidence.

    ask: the question text, "{}" where it names a shape; its normalised form (lower-case
    words, "{}" as a shape name) is the pattern a question is parsed with, and "X" for each
    "{}" is its name (the row label of the per-template tables).
    subjects(moment) -> the shapes to name (() for none), or None when it cannot be asked.
    solve(objects, t, *shapes) -> the answer from the world up to t, None when it has none.
    evidence(frames, *objects) -> per object the question is about (two for order, one
    otherwise) the (frame index, shape) pairs whose tokens show the answer ("" = whole frame).
    options: every answer it can have (its chance level is one over their number).
    on_screen: the shapes it names must be on the screen at its time (else it has no answer;
    `why_not` says so)."""

    category: str
    ask: str
    subjects: Callable[[Moment], tuple[str, ...] | None]
    solve: Callable[..., str | None]
    evidence: Callable[..., list[list[tuple[int, str]]]]
    options: tuple[str, ...]
    on_screen: bool = False

    @property
    def name(self) -> str:
        return self.ask.format(*["X"] * self.ask.count("{}"))

    @property
    def pattern(self) -> str:
        return " ".join(r"(\w+)" if w == "{}" else w for w in self.ask.split() if w != "?")


def _colour_now(objects, t, shape):
    o = by_shape(_seen(objects, t), shape)
    return o.colour_at(t) if o and o.visible(t) else None


def _colour_first(objects, t, shape):
    o = by_shape(_seen(objects, t), shape)
    return o.colours[0][1] if o else None


def _changes(objects, t, shape):
    o = by_shape(_seen(objects, t), shape)
    return NUMBERS[len([c for c in o.colours[1:] if c[0] <= t])] if o else None


def _before(objects, t, a, b):
    seen = [o.shape for o in _seen(objects, t)]
    return ("yes" if seen.index(a) < seen.index(b) else "no") if a in seen and b in seen and a != b else None


def _latest_change(f: Frames, o: ShapeObject | None) -> list[list[tuple[int, str]]]:
    return [[((f.changes(o) or [f.first_frame(o)])[-1], o.shape)]] if o in f.sampled else []


def _two_seen(m: Moment) -> tuple[str, str] | None:
    return tuple(m.seen[i].shape for i in m.rng.permutation(len(m.seen))[:2]) if len(m.seen) >= 2 else None


# The order is the order questions are generated in (it fixes what each seed asks).
TEMPLATES: tuple[Template, ...] = (
    Template("perception", "what colour is the {} now ?", lambda m: m.pick(m.now) if m.now else None, _colour_now,
             lambda f, o: [[(f.now, o.shape)] if o and o.visible(float(f.timestamps[f.now])) else []],
             tuple(COLOURS), on_screen=True),
    Template("perception", "how many shapes are on the screen now ?", lambda m: (),
             lambda objects, t: NUMBERS[len([o for o in objects if o.visible(t)])],
             lambda f: [[(f.now, "")]], NUMBERS[:len(SHAPES) + 1]),
    Template("backward", "what colour was the {} when it appeared ?",
             lambda m: m.pick(m.changed) if m.changed else None, _colour_first, Frames.appearances, tuple(COLOURS)),
    Template("backward", "which shape appeared first ?", lambda m: () if m.seen else None,
             lambda objects, t: _seen(objects, t)[0].shape if _seen(objects, t) else None,
             lambda f: f.appearances(f.sampled[0]) if f.sampled else [], SHAPES),
    Template("counting", "how many shapes have appeared so far ?", lambda m: (),
             lambda objects, t: NUMBERS[len(_seen(objects, t))],
             lambda f: f.appearances(f.sampled[-1]) if f.sampled else [], NUMBERS[1:len(SHAPES) + 1]),
    Template("counting", "how many times did the {} change colour ?", lambda m: m.pick(m.seen) if m.seen else None,
             _changes, _latest_change, NUMBERS[:3]),  # 0-2 changes per shape
    Template("order", "did the {} appear before the {} ?", _two_seen, _before, Frames.appearances, ("yes", "no")),
)


def template_of(question: str) -> tuple[Template, tuple[str, ...]] | None:
    """The template a question is in and the shapes it names, or None outside the templates
    (case, punctuation and spacing do not matter)."""
    text = " ".join(re.findall(r"[a-z]+", question.lower()))
    for template in TEMPLATES:
        m = re.fullmatch(template.pattern, text)
        if m and all(g in SHAPES for g in m.groups()):
            return template, m.groups()
    return None


def template_name(question: str) -> str:
    """The name of a question's template ("did the X appear before the X ?"); the question itself
    outside the templates."""
    found = template_of(question)
    return found[0].name if found else question


def chance_level(question: str) -> float:
    """The chance level of a question in the templates: one over the answers its template allows."""
    return 1 / len(template_of(question)[0].options)


def grade(answer_text: str, truth: str) -> bool:
    """Is a reply right? Its first word, lower-cased with full stops as spaces, is the truth's
    ("Red." and "red it is" pass for "red"; "blue red", "reddish" and "" do not). The one grading
    rule of the project: the accuracy study, the soak, the benchmarks, the trainer's evaluation and
    the app's check mark all call it."""

    def first_word(text: str) -> str:
        words = text.strip().lower().replace(".", " ").split()
        return words[0] if words else ""

    return first_word(answer_text) == first_word(truth)


def answer(objects: list[ShapeObject], question: str, t: float) -> tuple[str, str] | None:
    """(answer, category) of a question in one of ShapeStream's templates about the frames up
    to time t, or None when the text matches no template or has no answer at t."""
    found = template_of(question)
    if found is None:
        return None
    template, shapes = found
    result = template.solve(objects, t, *shapes)
    return (result, template.category) if result is not None else None


def why_not(objects: list[ShapeObject], question: str, t: float) -> str | None:
    """Why a question has no answer from the frames up to time t, in words ("the cross has not
    appeared by 12.0 s"); None when it has one. The templates' own rules: a shape named twice,
    a named shape not appeared yet, or not on the screen for a template that asks about now."""
    found = template_of(question)
    if found is None:
        return "it is not one of ShapeStream's question templates"
    template, shapes = found
    if template.solve(objects, t, *shapes) is not None:
        return None
    if len(shapes) == 2 and shapes[0] == shapes[1]:
        return f"it names the {shapes[0]} twice"
    for shape in shapes:
        o = by_shape(_seen(objects, t), shape)
        if o is None:
            return f"the {shape} has not appeared by {t:.1f} s"
        if template.on_screen and not o.visible(t):
            return f"the {shape} is not on the screen at {t:.1f} s"
    return f"it has no answer from the frames up to {t:.1f} s"


def evidence(stream: Stream, question: Question) -> list[list[tuple[int, str]]]:
    """Where a question's answer can be seen: for each object the question is about (two for
    an order question, one otherwise) the (frame index, shape) pairs whose tokens show it
    (shape "" = the whole frame): the newest frame for questions about now, the frame where
    a shape appeared (for "how many so far", the newest appearance: its rank is the count),
    the frame of a shape's latest colour change. [] for questions outside the templates."""
    found = template_of(question.question)
    if found is None:
        return []
    template, shapes = found
    ts = stream.timestamps
    now = int(np.searchsorted(ts, question.time + 1e-6)) - 1
    seen = _seen(stream.objects, float(ts[now]))
    sampled = [o for o in seen if any(o.visible(float(t)) for t in ts[: now + 1])]  # on some frame so far
    return template.evidence(Frames(ts, now, sampled), *[by_shape(seen, s) for s in shapes])


def questions_at(objects: list[ShapeObject], t: float, rng: np.random.Generator) -> list[Question]:
    """Every question template that has a well-defined answer from the frames up to time t;
    one instance per template (random choice of the object it is about)."""
    seen = _seen(objects, t)
    moment = Moment(seen, [o for o in seen if o.visible(t)],
                    [o for o in seen if len([c for c in o.colours if c[0] <= t]) > 1], rng)
    out = []
    for template in TEMPLATES:
        shapes = template.subjects(moment)
        if shapes is not None:
            out.append(Question(template.ask.format(*shapes), template.solve(objects, t, *shapes), t,
                                template.category))
    return out


def world(seed: int, seconds: float) -> tuple[list[ShapeObject], list[tuple[float, int]]]:
    """The objects and scenes of a stream without rendering it (same as generate's)."""
    return _world(np.random.default_rng(seed), seconds)


def generate(seed: int, seconds: float = 48.0, fps: float = 2.0, size: tuple[int, int] = (64, 64),
             question_every: float | None = 8.0) -> Stream:
    """A ShapeStream: same seed -> same world, frames, events and questions.

    question_every: ask the question set after the frame at every multiple of this many
    seconds (default 8 s = 16 frames at 2 fps, the engine's chunk), and at the end."""
    rng = np.random.default_rng(seed)
    objects, scenes = _world(rng, seconds)
    n = int(np.floor(seconds * fps + 1e-9))
    timestamps = np.round(np.arange(n) / fps, 6)
    frames = np.stack([render(objects, scenes, float(t), size) for t in timestamps]) if n else np.zeros(
        (0, *size, 3), np.uint8)
    stream = Stream(seed, seconds, fps, frames, timestamps, _events(objects, scenes, seconds), objects, scenes)
    if question_every:
        qrng = np.random.default_rng([seed, 1])
        times = sorted({float(timestamps[min(n, round(k * question_every * fps)) - 1])
                        for k in range(1, int(seconds / question_every) + 1)} | {float(timestamps[-1])})
        for t in times:
            stream.questions += questions_at(objects, t, qrng)
    return stream
