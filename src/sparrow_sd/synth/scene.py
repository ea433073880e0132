"""The world model of a SynthVideo clip: objects, events and per-frame state.

A Scene is resolution-free: positions are in "world units" where 1.0 is the
shorter side of the frame, so the same seed can be rendered at 56x56 or at
112x112 and show the same thing.  The per-frame arrays are the single source of
truth that the renderer draws, the describer narrates and the tests check the
pixels against, which is what keeps text and frames from drifting apart.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .vocab import COLOURS, SIZES


@dataclass(frozen=True)
class ObjectSpec:
    """An object's fixed identity: its shape and size never change in a clip.

    The (shape, size) pair is unique within a clip, so every object has a
    short unambiguous name (see Scene.name).
    """

    id: int
    shape: str
    size: str

    @property
    def half_size(self) -> float:
        """Half the side of the object's box, in world units."""
        return SIZES[self.size] / 2.0


@dataclass(frozen=True)
class Event:
    """One thing that happens, with the frames on which it is visible.

    frame is the first frame that shows the change (the frame before it shows
    the old state); end_frame is the last frame of a gradual change (move,
    meet) and equals frame for instantaneous ones (appear, disappear,
    colour_change).  objects lists object ids; for "meet" the upper one first.
    """

    kind: str
    frame: int
    end_frame: int
    objects: tuple[int, ...]
    direction: str | None = None
    colour_from: str | None = None
    colour_to: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready form, for dataset files."""
        return {
            "kind": self.kind,
            "frame": self.frame,
            "end_frame": self.end_frame,
            "objects": list(self.objects),
            "direction": self.direction,
            "colour_from": self.colour_from,
            "colour_to": self.colour_to,
        }


@dataclass
class Scene:
    """Objects, events and the state of every object on every frame.

    visible: (T, N) bool, centre: (T, N, 2) float (x, y) in world units,
    colour: (T, N) int index into vocab.COLOURS, -1 on frames before the
    object first appears (it does not exist yet).  At any frame, no two
    existing objects share a colour, hidden ones included.  The world spans
    [0, aspect] x [0, 1] when aspect >= 1 (width >= height), else
    [0, 1] x [0, 1/aspect].
    """

    seed: int
    aspect: float
    objects: list[ObjectSpec]
    events: list[Event]
    visible: np.ndarray
    centre: np.ndarray
    colour: np.ndarray
    _names: dict[int, str] = field(default_factory=dict, repr=False)

    @property
    def num_frames(self) -> int:
        return int(self.visible.shape[0])

    @property
    def world_size(self) -> tuple[float, float]:
        """(width, height) of the world in units of the frame's shorter side."""
        return world_size(self.aspect)

    def name(self, obj_id: int) -> str:
        """Shortest unambiguous name: "square", or "large square" when the
        clip holds two squares.  Used in QA questions and answers."""
        if not self._names:
            for o in self.objects:
                twins = sum(1 for p in self.objects if p.shape == o.shape)
                self._names[o.id] = o.shape if twins == 1 else f"{o.size} {o.shape}"
        return self._names[obj_id]

    def colour_name(self, obj_id: int, t: int) -> str:
        c = int(self.colour[t, obj_id])
        if c < 0:
            raise ValueError(f"object {obj_id} does not exist yet at frame {t}")
        return COLOURS[c]

    def visible_ids(self, t: int) -> list[int]:
        return [int(i) for i in np.flatnonzero(self.visible[t])]

    def events_of(self, obj_id: int, kind: str | None = None) -> list[Event]:
        """Events that involve obj_id, optionally of one kind."""
        return [e for e in self.events
                if obj_id in e.objects and (kind is None or e.kind == kind)]

    def to_dict(self) -> dict[str, Any]:
        """Ground truth in plain form (no arrays), for dataset files."""
        return {
            "seed": self.seed,
            "num_frames": self.num_frames,
            "aspect": self.aspect,
            "objects": [{"id": o.id, "shape": o.shape, "size": o.size,
                         "name": self.name(o.id)} for o in self.objects],
            "events": [e.to_dict() for e in self.events],
        }


def world_size(aspect: float) -> tuple[float, float]:
    """World (width, height) for a frame of width/height == aspect."""
    return (aspect, 1.0) if aspect >= 1.0 else (1.0, 1.0 / aspect)
