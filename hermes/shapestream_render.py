"""Pixels of the ShapeStream world: the palette and one frame at any time and size.

    from hermes.shapestream_render import render
    frame = render(objects, scenes, t=12.5, size=(64, 64))   # uint8 (64, 64, 3)

The world itself (objects, scenes, events, questions) is hermes.shapestream; generate() there
renders every frame of a stream through this module.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from hermes.shapestream import ShapeObject

COLOURS = {"red": (220, 50, 47), "green": (60, 190, 70), "blue": (50, 100, 230), "yellow": (235, 215, 40)}
BACKGROUNDS = ((120, 120, 120), (165, 165, 165), (205, 205, 205))
# A black outline this thick (in screen sides) around every shape: it gives a shape the same
# edges whatever its colour, which a small vision tower learns far faster than colour-dependent edges.
OUTLINE = 0.045


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
