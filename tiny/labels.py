"""Dense per-frame training targets that ShapeStream knows exactly (training only).

    from tiny.labels import cell_labels, event_labels
    shapes, colours = cell_labels(stream, grid=4)    # (T, 16) each: what is in each cell
    events = event_labels(stream, grid=4)            # what happened in each cell of each frame

Read by the frame loss (tiny.heads.AuxHeads), the event probes (tiny.heads.EventHeads) and the
retrieval supervision (tiny.samples.build_sample: the cells of a shape's quarter).
"""

from __future__ import annotations

import numpy as np
import torch

from hermes.shapestream import COLOURS, SHAPES, Stream

EVENT_CLASSES = ("none", "steady", "appeared", "appeared first", "colour changed")


def quadrant_cells(quadrant: tuple[float, float], grid: int) -> np.ndarray:
    """Row-major indices of the grid x grid cells inside a quarter of the screen."""
    rows, cols = np.divmod(np.arange(grid * grid), grid)
    top = (rows + 0.5) / grid < 0.5
    left = (cols + 0.5) / grid < 0.5
    return np.nonzero((top == (quadrant[0] < 0.5)) & (left == (quadrant[1] < 0.5)))[0]


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


def dense_labels(stream: Stream, grid: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """cell_labels as tensors on `device`, (T, grid * grid) each."""
    shapes, colours = cell_labels(stream, grid)
    return torch.from_numpy(shapes).to(device), torch.from_numpy(colours).to(device)


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
