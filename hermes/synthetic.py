"""ShapeStream: a deterministic procedural streaming-video world with exact questions.

    from hermes.synthetic import generate
    stream = generate(seed=7, seconds=48, fps=2, size=(64, 64))
    stream.frames       # uint8 (T, H, W, 3)
    stream.timestamps   # (T,) seconds
    stream.events       # the event log (appear / colour / leave / scene), time-ordered
    stream.questions    # Question(question, answer, time, category), answers from the event log

The world: up to four shapes (circle, square, triangle, cross; black outlines), each at
most once per stream and in its own quarter of the screen, appear, drift, change colour and leave; the
background shade changes now and then. The world is continuous (seconds, unit square),
so the same stream renders at any fps and size: large in the app, 64 px for the model.

Question categories (DESIGN section 5): real-time perception (what is on screen now),
backward tracing (evidence in the past), counting (how many so far), temporal order
(did X come before Y). A question at time t is about the frames with timestamp <= t.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

SHAPES = ("circle", "square", "triangle", "cross")
COLOURS = {"red": (220, 50, 47), "green": (60, 190, 70), "blue": (50, 100, 230), "yellow": (235, 215, 40)}
BACKGROUNDS = ((120, 120, 120), (165, 165, 165), (205, 205, 205))
CATEGORIES = ("perception", "backward", "counting", "order")
QUADRANTS = ((0.25, 0.25), (0.25, 0.75), (0.75, 0.25), (0.75, 0.75))  # (y, x) centres
MIN_SEGMENT_S = 2.5  # every lifetime and colour segment lasts at least this long (visible when sampled)
DRIFT = 0.06  # how far a shape wanders from its quarter's centre, in screen sides
# A black outline this thick (in screen sides) around every shape: it gives a shape the same
# edges whatever its colour, which a small vision tower learns far faster than colour-dependent edges.
OUTLINE = 0.045


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


# ---- world -------------------------------------------------------------------------------


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


# ---- rendering ---------------------------------------------------------------------------


def _shape_mask(shape: str, yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, r: float) -> np.ndarray:
    dy, dx = yy - cy, xx - cx
    if shape == "circle":
        return dy**2 + dx**2 <= r**2
    if shape == "square":
        return (np.abs(dy) <= r * 0.85) & (np.abs(dx) <= r * 0.85)
    if shape == "triangle":  # apex up
        return (dy <= r * 0.8) & (dy >= -r) & (np.abs(dx) <= (dy + r) * 0.6)
    arm = r * 0.35  # cross
    return ((np.abs(dy) <= arm) & (np.abs(dx) <= r)) | ((np.abs(dx) <= arm) & (np.abs(dy) <= r))


def render(objects: list[ShapeObject], scenes: list[tuple[float, int]], t: float, size: tuple[int, int]
           ) -> np.ndarray:
    """uint8 (H, W, 3) frame of the world at time t."""
    height, width = size
    background = [b for start, b in scenes if start <= t][-1]
    frame = np.empty((height, width, 3), np.uint8)
    frame[:] = BACKGROUNDS[background]
    yy, xx = np.mgrid[0:height, 0:width]
    yy, xx = (yy + 0.5) / height, (xx + 0.5) / width
    for o in objects:
        if o.visible(t):
            cy, cx = o.centre(t)
            frame[_shape_mask(o.shape, yy, xx, cy, cx, o.radius)] = (0, 0, 0)
            frame[_shape_mask(o.shape, yy, xx, cy, cx, o.radius - OUTLINE)] = COLOURS[o.colour_at(t)]
    return frame


def cell_labels(stream: Stream, grid: int) -> tuple[np.ndarray, np.ndarray]:
    """Dense per-frame targets: for a grid x grid split of each frame, the shape and colour
    index (0 = nothing) of the object in the cell's quarter of the screen (every object stays
    in its own quarter, so each of a quarter's cells names the whole object, not a fragment
    of it). (T, grid*grid) each."""
    n = len(stream.timestamps)
    shapes = np.zeros((n, grid * grid), np.int64)
    colours = np.zeros((n, grid * grid), np.int64)
    for o in stream.objects:
        cells = quadrant_cells(o.quadrant, grid)
        for i, t in enumerate(stream.timestamps):
            if o.visible(float(t)):
                shapes[i, cells] = SHAPES.index(o.shape) + 1
                colours[i, cells] = list(COLOURS).index(o.colour_at(float(t))) + 1
    return shapes, colours


def quadrant_cells(quadrant: tuple[float, float], grid: int) -> np.ndarray:
    """Row-major indices of the grid x grid cells inside a quarter of the screen."""
    rows, cols = np.divmod(np.arange(grid * grid), grid)
    top = (rows + 0.5) / grid < 0.5
    left = (cols + 0.5) / grid < 0.5
    return np.nonzero((top == (quadrant[0] < 0.5)) & (left == (quadrant[1] < 0.5)))[0]


EVENT_CLASSES = ("none", "steady", "appeared", "appeared first", "colour changed")


def event_labels(stream: Stream, grid: int) -> dict[str, np.ndarray]:
    """Dense per-frame *event* targets, each (T, grid*grid), -100 where a label does not apply.

    They name what happened in a frame at the cells of the object it happened to, so the
    evidence a question needs sits in the frame where the event was seen:
    - event: EVENT_CLASSES index (nothing, steady, appeared now, appeared now as the
      stream's first shape, colour changed since the previous frame);
    - ordinal: at an appearance, how many shapes had appeared before it (0-3);
    - change: at a colour change, how many changes of that shape came before it (0-1)."""
    shapes, _ = cell_labels(stream, grid)
    ts = stream.timestamps
    order = sorted(stream.objects, key=lambda o: o.appear)
    by_shape = {o.shape: o for o in stream.objects}
    event = np.where(shapes > 0, 1, 0)
    ordinal = np.full_like(shapes, -100)
    change = np.full_like(shapes, -100)
    for i in range(len(ts)):
        for k in np.unique(shapes[i][shapes[i] > 0]):
            o = by_shape[SHAPES[k - 1]]
            cells = shapes[i] == k
            before = i > 0 and o.visible(float(ts[i - 1]))
            if not before:
                event[i][cells] = 3 if o is order[0] else 2
                ordinal[i][cells] = order.index(o)
            elif o.colour_at(float(ts[i])) != o.colour_at(float(ts[i - 1])):
                event[i][cells] = 4
                change[i][cells] = len([c for c in o.colours[1:] if c[0] <= ts[i]]) - 1
    return {"event": event, "ordinal": ordinal, "change": change}


# ---- questions ---------------------------------------------------------------------------

NUMBERS = ("zero", "one", "two", "three", "four", "five")


def _seen(objects: list[ShapeObject], t: float) -> list[ShapeObject]:
    return sorted((o for o in objects if o.appear <= t), key=lambda o: o.appear)


def by_shape(objects: list[ShapeObject], shape: str) -> ShapeObject | None:
    return next((o for o in objects if o.shape == shape), None)


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


# question template (regex over the normalised text) -> (category, answer from the world at time t;
# None when the question has no answer then, e.g. about a shape not seen yet)
TEMPLATES: list[tuple[str, str, object]] = [
    (r"what colour is the (\w+) now", "perception", _colour_now),
    (r"how many shapes are on the screen now", "perception",
     lambda objects, t: NUMBERS[len([o for o in objects if o.visible(t)])]),
    (r"what colour was the (\w+) when it appeared", "backward", _colour_first),
    (r"which shape appeared first", "backward",
     lambda objects, t: _seen(objects, t)[0].shape if _seen(objects, t) else None),
    (r"how many shapes have appeared so far", "counting", lambda objects, t: NUMBERS[len(_seen(objects, t))]),
    (r"how many times did the (\w+) change colour", "counting", _changes),
    (r"did the (\w+) appear before the (\w+)", "order", _before),
]


def answer(objects: list[ShapeObject], question: str, t: float) -> tuple[str, str] | None:
    """(answer, category) of a question in one of ShapeStream's templates about the frames up
    to time t, or None when the text matches no template or has no answer at t."""
    text = " ".join(re.findall(r"[a-z]+", question.lower()))
    for pattern, category, fn in TEMPLATES:
        m = re.fullmatch(pattern, text)
        if m and all(g in SHAPES for g in m.groups()):
            result = fn(objects, t, *m.groups())
            return (result, category) if result is not None else None
    return None


def evidence(stream: Stream, question: Question) -> list[list[tuple[int, str]]]:
    """Where a question's answer can be seen: for each object the question is about (two for
    an order question, one otherwise) the (frame index, shape) pairs whose tokens show it
    (shape "" = the whole frame): the newest frame for questions about now, the frame where
    a shape appeared (for "how many so far", the newest appearance: its rank is the count),
    the frame of a shape's latest colour change. [] for questions outside the templates."""
    ts = stream.timestamps
    now = int(np.searchsorted(ts, question.time + 1e-6)) - 1
    seen = _seen(stream.objects, float(ts[now]))

    def first_frame(o: ShapeObject) -> int:
        return next(i for i in range(now + 1) if o.visible(float(ts[i])))

    def changes(o: ShapeObject) -> list[int]:
        return [i for i in range(1, now + 1) if o.visible(float(ts[i])) and o.visible(float(ts[i - 1]))
                and o.colour_at(float(ts[i])) != o.colour_at(float(ts[i - 1]))]

    text = " ".join(re.findall(r"[a-z]+", question.question.lower()))
    named = [by_shape(seen, g) for g in re.findall(r"the (circle|square|triangle|cross)", text)]
    sampled = [o for o in seen if any(o.visible(float(t)) for t in ts[: now + 1])]  # on some frame so far
    if text.startswith("how many shapes are on"):
        return [[(now, "")]]
    if text.startswith("what colour is"):
        return [[(now, o.shape) for o in named if o and o.visible(float(ts[now]))]]
    if text.startswith("which shape appeared first"):
        return [[(first_frame(sampled[0]), sampled[0].shape)]] if sampled else []
    if text.startswith("how many shapes have appeared"):
        return [[(first_frame(sampled[-1]), sampled[-1].shape)]] if sampled else []
    if text.startswith("how many times") and named[0] in sampled:
        return [[((changes(named[0]) or [first_frame(named[0])])[-1], named[0].shape)]]
    if named and all(o in sampled for o in named):  # what colour was X when it appeared / did X appear before Y
        return [[(first_frame(o), o.shape)] for o in named]
    return []


def questions_at(objects: list[ShapeObject], t: float, rng: np.random.Generator) -> list[Question]:
    """Every question template that has a well-defined answer from the frames up to time t;
    one instance per template (random choice of the object it is about)."""
    seen = _seen(objects, t)
    now = [o for o in seen if o.visible(t)]
    changed = [o for o in seen if len([c for c in o.colours if c[0] <= t]) > 1]

    def pick(items):
        return items[int(rng.integers(len(items)))]

    texts = []
    if now:
        texts.append(f"what colour is the {pick(now).shape} now ?")
    texts.append("how many shapes are on the screen now ?")
    if changed:
        texts.append(f"what colour was the {pick(changed).shape} when it appeared ?")
    if seen:
        texts.append("which shape appeared first ?")
    texts.append("how many shapes have appeared so far ?")
    if seen:
        texts.append(f"how many times did the {pick(seen).shape} change colour ?")
    if len(seen) >= 2:
        i, j = rng.permutation(len(seen))[:2]
        texts.append(f"did the {seen[i].shape} appear before the {seen[j].shape} ?")
    out = []
    for text in texts:
        reply, category = answer(objects, text, t)
        out.append(Question(text, reply, t, category))
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
