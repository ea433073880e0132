"""The Clip: rendered frames plus all ground truth, made from one seed.

make_clip is the one call a data pipeline needs.  Scene planning, wording and
questions draw from separate seeded streams, so the frames of a seed do not
change if the describer or the question set grows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .describe import describe_scene
from .planner import make_scene, scene_rng
from .qa import QA, make_qa
from .render import render_frames
from .scene import Event, ObjectSpec, Scene


@dataclass
class Clip:
    """A rendered clip and its ground truth.

    frames: (T, H, W, 3) uint8 RGB.  scene: the per-frame world state the
    frames were drawn from.  description: detailed caption in temporal order.
    qa: question/answer pairs with short canonical answers.
    """

    seed: int
    frames: np.ndarray
    scene: Scene
    description: str
    qa: list[QA]
    fps: float = 8.0

    @property
    def events(self) -> list[Event]:
        return self.scene.events

    @property
    def objects(self) -> list[ObjectSpec]:
        return self.scene.objects

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def height(self) -> int:
        return int(self.frames.shape[1])

    @property
    def width(self) -> int:
        return int(self.frames.shape[2])

    def pixel_of(self, obj_id: int, t: int) -> tuple[int, int]:
        """(row, col) of the pixel under an object's centre on frame t; that
        pixel always shows the object's colour when it is visible."""
        scale = min(self.height, self.width)
        x, y = self.scene.centre[t, obj_id] * scale
        return int(y), int(x)

    def ground_truth(self) -> dict[str, Any]:
        """Everything except the pixels, in JSON-ready form."""
        gt = self.scene.to_dict()
        gt.update(height=self.height, width=self.width, fps=self.fps,
                  description=self.description, qa=[q.to_dict() for q in self.qa])
        return gt


def make_clip(seed: int, num_frames: int = 32, height: int = 112, width: int = 112,
              num_events: int | None = None, *, max_visible: int = 5, max_objects: int = 6,
              fps: float = 8.0) -> Clip:
    """Plan, render, describe and question one clip; fully determined by seed.

    num_frames from 1 upward (4-8 for short clips, 128-160 for long ones);
    num_events defaults to about one per 16 frames (see
    planner.default_num_events) and is capped at num_frames - 1.  Keep height
    and width even if the clip is to be written as H.264.
    """
    scene = make_scene(seed, num_frames, num_events, aspect=width / height,
                       max_visible=max_visible, max_objects=max_objects)
    frames = render_frames(scene, height, width)
    description = describe_scene(scene, scene_rng(seed, 1))
    qa = make_qa(scene, scene_rng(seed, 2))
    return Clip(seed=int(seed), frames=frames, scene=scene, description=description,
                qa=qa, fps=float(fps))
