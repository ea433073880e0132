"""Draw a Scene into uint8 RGB frames with hard-edged, flat-coloured shapes.

Flat colours and hard edges (no anti-aliasing, no texture, no noise) make the
content easy for a small vision tower and let tests read ground truth straight
from pixels.  Each object is rasterised only inside its bounding box, and a
frame whose state equals the previous one is copied, so 160 frames at
112x112 render in a few milliseconds.

Pixel (row r, col c) is covered when its centre (c+0.5, r+0.5) falls inside the
shape.  Boxes are half-open ([-1, 1) in local units) so two objects whose
edges meet exactly share no pixel and leave no gap.
"""

from __future__ import annotations

import numpy as np

from .scene import Scene
from .vocab import BACKGROUND, PALETTE, SHAPES

_RGB = np.array(list(PALETTE.values()), np.uint8)
_CROSS_ARM = 0.38      # half-thickness of the cross's bars, in local units


def shape_mask(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Inside-test in local coordinates (u right, v down, box is [-1, 1)^2).

    The triangle points up with a full-width base and a slightly flattened tip,
    and the diamond's tips are flattened a little, so both keep a visible pixel
    where they touch another object at 56x56.
    """
    box = (u >= -1) & (u < 1) & (v >= -1) & (v < 1)
    if shape == "square":
        inside = box
    elif shape == "circle":
        inside = u * u + v * v <= 1.0
    elif shape == "triangle":
        inside = np.abs(u) <= (v + 1.0) * 0.5 + 0.12
    elif shape == "diamond":
        inside = np.abs(u) + np.abs(v) <= 1.12
    elif shape == "cross":
        inside = (np.abs(u) <= _CROSS_ARM) | (np.abs(v) <= _CROSS_ARM)
    else:
        raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")
    return box & inside


def object_pixels(scene: Scene, obj_id: int, t: int, height: int, width: int
                  ) -> tuple[slice, slice, np.ndarray]:
    """(row slice, col slice, mask) of one object on frame t at this size."""
    scale = min(height, width)
    o = scene.objects[obj_id]
    cx, cy = scene.centre[t, obj_id] * scale
    h = o.half_size * scale
    r0, r1 = max(0, int(np.floor(cy - h))), min(height, int(np.ceil(cy + h)) + 1)
    c0, c1 = max(0, int(np.floor(cx - h))), min(width, int(np.ceil(cx + h)) + 1)
    v = (np.arange(r0, r1) + 0.5 - cy)[:, None] / h
    u = (np.arange(c0, c1) + 0.5 - cx)[None, :] / h
    return slice(r0, r1), slice(c0, c1), shape_mask(o.shape, u, v)


def render_frames(scene: Scene, height: int = 112, width: int | None = None,
                  background: tuple[int, int, int] = BACKGROUND) -> np.ndarray:
    """Render every frame of the scene: (T, height, width, 3) uint8.

    width defaults to height * scene.aspect, so a scene planned for square
    frames renders square.  Objects never overlap, so draw order is irrelevant.
    """
    if width is None:
        width = int(round(height * scene.aspect))
    if height < 8 or width < 8:
        raise ValueError(f"frames must be at least 8x8, got {height}x{width}")
    if abs(width / height - scene.aspect) > 0.05 * scene.aspect:
        raise ValueError(f"{width}x{height} does not match the scene's aspect {scene.aspect:.3f}")
    T = scene.num_frames
    frames = np.empty((T, height, width, 3), np.uint8)
    blank = np.empty((height, width, 3), np.uint8)
    blank[:] = background
    for t in range(T):
        if t > 0 and _same_state(scene, t - 1, t):
            frames[t] = frames[t - 1]
            continue
        frame = frames[t]
        frame[:] = blank
        for i in scene.visible_ids(t):
            rows, cols, mask = object_pixels(scene, i, t, height, width)
            frame[rows, cols][mask] = _RGB[scene.colour[t, i]]
    return frames


def _same_state(scene: Scene, a: int, b: int) -> bool:
    return (np.array_equal(scene.visible[a], scene.visible[b])
            and np.array_equal(scene.colour[a], scene.colour[b])
            and np.array_equal(scene.centre[a], scene.centre[b]))
