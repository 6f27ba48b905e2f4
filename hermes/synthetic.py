"""ShapeStream: a deterministic procedural streaming-video world with exact questions.

    from hermes.synthetic import generate
    stream = generate(seed=7, seconds=48, fps=2, size=(64, 64))
    stream.frames       # uint8 (T, H, W, 3)
    stream.timestamps   # (T,) seconds
    stream.events       # the event log (appear / colour / leave / scene), time-ordered
    stream.questions    # Question(question, answer, time, category), answers from the event log

The world: up to four shapes (circle, square, triangle, cross), each at most once per
stream and in its own quarter of the screen, appear, drift, change colour and leave; the
background shade changes now and then. The world is continuous (seconds, unit square),
so the same stream renders at any fps and size: large in the app, 64 px for the model.

Question categories (DESIGN section 5): real-time perception (what is on screen now),
backward tracing (evidence in the past), counting (how many so far), temporal order
(did X come before Y). A question at time t is about the frames with timestamp <= t.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

SHAPES = ("circle", "square", "triangle", "cross")
COLOURS = {"red": (220, 50, 47), "green": (60, 190, 70), "blue": (50, 100, 230), "yellow": (235, 215, 40)}
BACKGROUNDS = ((96, 96, 96), (40, 40, 40), (150, 150, 150))
CATEGORIES = ("perception", "backward", "counting", "order")
QUADRANTS = ((0.25, 0.25), (0.25, 0.75), (0.75, 0.25), (0.75, 0.75))  # (y, x) centres
MIN_SEGMENT_S = 2.5  # every lifetime and colour segment lasts at least this long (visible when sampled)


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
        return self.quadrant[0] + 0.06 * np.sin(angle), self.quadrant[1] + 0.06 * np.cos(angle)


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
            frame[_shape_mask(o.shape, yy, xx, cy, cx, o.radius)] = COLOURS[o.colour_at(t)]
    return frame


def cell_labels(stream: Stream, grid: int) -> tuple[np.ndarray, np.ndarray]:
    """Dense per-frame targets: for a grid x grid split of each frame, the shape and colour
    index (0 = nothing) of the object covering the cell's centre region most. (T, grid*grid) each."""
    n = len(stream.timestamps)
    shapes = np.zeros((n, grid * grid), np.int64)
    colours = np.zeros((n, grid * grid), np.int64)
    res = grid * 4
    yy, xx = np.mgrid[0:res, 0:res]
    yy, xx = (yy + 0.5) / res, (xx + 0.5) / res
    for i, t in enumerate(stream.timestamps):
        best = np.zeros((grid, grid))
        for o in stream.objects:
            if not o.visible(t):
                continue
            cy, cx = o.centre(t)
            cover = _shape_mask(o.shape, yy, xx, cy, cx, o.radius).reshape(grid, 4, grid, 4).mean(axis=(1, 3))
            win = (cover > 0.2) & (cover > best)
            best[win] = cover[win]
            shapes[i][win.reshape(-1)] = SHAPES.index(o.shape) + 1
            colours[i][win.reshape(-1)] = list(COLOURS).index(o.colour_at(t)) + 1
    return shapes, colours


# ---- questions ---------------------------------------------------------------------------

NUMBERS = ("zero", "one", "two", "three", "four", "five")


def questions_at(objects: list[ShapeObject], t: float, rng: np.random.Generator) -> list[Question]:
    """Every question template that has a well-defined answer from the frames up to time t;
    one instance per template (random choice of the object it is about)."""
    seen = sorted((o for o in objects if o.appear <= t), key=lambda o: o.appear)
    now = [o for o in seen if o.visible(t)]
    out: list[Question] = []

    def pick(items):
        return items[int(rng.integers(len(items)))]

    if now:
        o = pick(now)
        out.append(Question(f"what colour is the {o.shape} now ?", o.colour_at(t), t, "perception"))
    out.append(Question("how many shapes are on the screen now ?", NUMBERS[len(now)], t, "perception"))
    changed = [o for o in seen if len([c for c in o.colours if c[0] <= t]) > 1]
    if changed:
        o = pick(changed)
        out.append(Question(f"what colour was the {o.shape} when it appeared ?", o.colours[0][1], t, "backward"))
    if seen:
        out.append(Question("which shape appeared first ?", seen[0].shape, t, "backward"))
    out.append(Question("how many shapes have appeared so far ?", NUMBERS[len(seen)], t, "counting"))
    if seen:
        o = pick(seen)
        n_changes = len([c for c in o.colours[1:] if c[0] <= t])
        out.append(Question(f"how many times did the {o.shape} change colour ?", NUMBERS[n_changes], t, "counting"))
    if len(seen) >= 2:
        i, j = rng.permutation(len(seen))[:2]
        a, b = seen[i], seen[j]
        out.append(Question(f"did the {a.shape} appear before the {b.shape} ?", "yes" if i < j else "no", t,
                            "order"))
    return out


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
