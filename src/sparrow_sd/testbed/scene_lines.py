"""The scene reader's text: one short line per frame, and the true lines of a Scene.

The testbed's visual encoder (:mod:`.scene_reader`) writes what is on screen and
what changed since the previous frame as one line per frame for the language
model to read::

    Frame 7: small blue circle in the centre, large red square on the right. Changes: small blue circle moves left; large red square appears.

A move spans several frames. With ``moves="every_frame"`` it is written on each
of them; with ``moves="once"`` (what the testbed reads) it is written on the
frame it starts and a stop ("small blue circle stops on the left") on the
frame it ends, so each event of the clip is stated once: repeated move lines
were what the tuned model copied into looping answers (docs/testbed.md).

The lines must be exact, so one line writer (:func:`frame_lines`) is fed by
two producers: :func:`~sparrow_sd.testbed.scene_reader.read_frames` (pixels
only) and :func:`truth_frames` (the Scene's arrays and the renderer's exact
rasterisation). A test can then compare the reader's lines with the true ones
string for string. Objects are :class:`FrameObject`; contacts between them are
found the same way for both producers (:func:`with_touching`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Iterable, Sequence

import numpy as np

from ..errors import InvalidInputError
from ..synth.describe import REGION_PHRASES as REGIONS   # the describer's 3x3 phrases are the source
from ..synth.render import object_pixels
from ..synth.scene import Scene
from ..synth.vocab import SHAPES, SIZES

__all__ = [
    "MOVE_THRESHOLD_PX",
    "MOVE_STYLES",
    "FrameObject",
    "frame_lines",
    "place_of",
    "truth_frames",
    "truth_lines",
    "with_touching",
]

# A centroid shift of at most this many pixels is not a move.  After H.264 a
# still object's centroid wanders by a few hundredths of a pixel; a moving one
# shifts by at least MIN_MOVE / MAX_DURATION of the short side per frame
# (1.7 px at 112x112, 0.84 px at 56x56).
MOVE_THRESHOLD_PX = 0.75

Identity = tuple[str, str]          # (shape, size): unique within a clip
MOVE_STYLES = ("every_frame", "once")


@dataclass(frozen=True)
class FrameObject:
    """One object on one frame: its words plus the measurements behind them.

    Equality covers only the words (shape, size, colour, place), which is what
    a line shows.  centroid is (row, col) in pixels, a pixel's centre being at
    +0.5; pixels is the mask's area; touching holds the identities of the
    objects whose masks are 8-adjacent to this one.  The line writer needs
    centroid and touching to find moves and meets; reader and truth measure
    them slightly differently, so they take no part in equality.
    """

    shape: str
    size: str
    colour: str
    place: str
    centroid: tuple[float, float] = field(default=(0.0, 0.0), compare=False)
    pixels: int = field(default=0, compare=False)
    touching: frozenset[Identity] = field(default=frozenset(), compare=False)

    @property
    def identity(self) -> Identity:
        """(shape, size): never changes and is unique in a clip, so it names
        the object across frames even when its colour changes."""
        return (self.shape, self.size)

    def name(self, colour: str | None = None) -> str:
        """"large red square", or with another colour (e.g. the old one)."""
        return f"{self.size} {colour or self.colour} {self.shape}"


def place_of(row: float, col: float, height: int, width: int) -> str:
    """Region phrase of a point (pixel units) on the frame's 3x3 grid."""
    r = min(2, max(0, int(3 * row / height)))
    c = min(2, max(0, int(3 * col / width)))
    return REGIONS[r][c]


_SHAPE_ORDER = {name: k for k, name in enumerate(SHAPES)}
_SIZE_ORDER = {name: k for k, name in enumerate(SIZES)}      # small before large


def _identity_key(identity: Identity) -> tuple[int, int]:
    """Sort key: shape in vocab order, then small before large."""
    shape, size = identity
    return (_SHAPE_ORDER.get(shape, len(SHAPES)), _SIZE_ORDER.get(size, len(SIZES)))


# --- the line writer -------------------------------------------------------------

def frame_lines(objects_per_frame: Sequence[Iterable[FrameObject]], moves: str = "every_frame") -> list[str]:
    """One line per frame: what is on screen and what changed since the frame before.

    ``Frame {t}: {objects}.`` (t from 1, ``nothing`` for an empty frame), then
    `` Changes: {changes}.`` when anything changed; frame 1 has no changes.
    Objects are sorted by identity; changes by kind (disappear, appear,
    colour, move, stop, meet), then by identity, so equal facts give equal text.
    ``moves`` (one of MOVE_STYLES) says whether a move is written on every
    frame it spans or once where it starts, with a stop where it ends.
    Objects are matched across frames by identity, which must therefore be
    unique within a frame (InvalidInputError otherwise).
    """
    if moves not in MOVE_STYLES:
        raise InvalidInputError(f"moves must be one of {MOVE_STYLES}, got {moves!r}")
    lines: list[str] = []
    prev: dict[Identity, FrameObject] | None = None
    moving: dict[Identity, str] = {}          # direction of each object's move into the previous frame
    for t, objs in enumerate(objects_per_frame, start=1):
        objs = list(objs)
        now = {o.identity: o for o in objs}
        if len(now) != len(objs):
            raise InvalidInputError(f"frame {t} holds two objects of the same shape and size; "
                                    "(shape, size) must name one object")
        listing = ", ".join(f"{now[k].name()} {now[k].place}"
                            for k in sorted(now, key=_identity_key))
        line = f"Frame {t}: {listing or 'nothing'}."
        if prev is not None:
            changes, moving = _changes(prev, now, moving if moves == "once" else None)
            if changes:
                line += " Changes: " + "; ".join(changes) + "."
        lines.append(line)
        prev = now
    return lines


def _changes(prev: dict[Identity, FrameObject], now: dict[Identity, FrameObject],
             moving: dict[Identity, str] | None) -> tuple[list[str], dict[Identity, str]]:
    """The change phrases between two consecutive frames, in the fixed order,
    and the direction each object moved in between them.

    A disappearing object and a colour change are named with the old colour
    (that is the object the reader last saw); everything else with the new.
    ``moving`` (the directions of the step before) is given when each move is
    written once: a move in the same direction as before goes unsaid, and an
    object that moved before and not now stops.
    """
    gone = sorted((k for k in prev if k not in now), key=_identity_key)
    new = sorted((k for k in now if k not in prev), key=_identity_key)
    kept = sorted((k for k in now if k in prev), key=_identity_key)
    out = [f"{prev[k].name()} disappears" for k in gone]
    out += [f"{now[k].name()} appears" for k in new]
    out += [f"{prev[k].name()} turns {now[k].colour}"
            for k in kept if prev[k].colour != now[k].colour]
    directions = {k: d for k in kept if (d := _move_direction(prev[k].centroid, now[k].centroid))}
    before = moving or {}
    out += [f"{now[k].name()} moves {d}" for k, d in directions.items() if before.get(k) != d]
    if moving is not None:
        out += [f"{now[k].name()} stops {now[k].place}" for k in kept if k in before and k not in directions]
    out += [f"{now[a].name()} meets {now[b].name()}" for a, b in _new_contacts(prev, now)]
    return out, directions


def _move_direction(before: tuple[float, float], after: tuple[float, float]) -> str | None:
    """Direction of the centroid shift along its dominant axis (rows grow
    downwards, so a negative row shift is "up"), or None when the shift is
    at most MOVE_THRESHOLD_PX."""
    dr, dc = after[0] - before[0], after[1] - before[1]
    if np.hypot(dr, dc) <= MOVE_THRESHOLD_PX:
        return None
    if abs(dc) >= abs(dr):
        return "right" if dc > 0 else "left"
    return "down" if dr > 0 else "up"


def _new_contacts(prev: dict[Identity, FrameObject],
                  now: dict[Identity, FrameObject]) -> list[tuple[Identity, Identity]]:
    """Pairs (each in identity order) that touch now and did not touch on the
    previous frame, sorted; an object absent before did not touch anything."""
    pairs: set[tuple[Identity, Identity]] = set()
    for k, o in now.items():
        for other in o.touching:
            if other == k or other not in now:
                continue
            a, b = sorted((k, other), key=_identity_key)
            if not (a in prev and b in prev[a].touching):
                pairs.add((a, b))
    return sorted(pairs, key=lambda p: (_identity_key(p[0]), _identity_key(p[1])))


# --- contacts, shared by reader and truth ----------------------------------------

_HALF_NEIGHBOURHOOD = ((0, 1), (1, 0), (1, 1), (1, -1))   # each 8-neighbour pair once


def _touching_pairs(labels: np.ndarray) -> set[tuple[int, int]]:
    """Label pairs (a < b) that own 8-adjacent pixels; labels < 0 are background."""
    h, w = labels.shape
    pairs: set[tuple[int, int]] = set()
    for dr, dc in _HALF_NEIGHBOURHOOD:
        a = labels[0:h - dr, max(0, -dc):w - max(0, dc)]
        b = labels[dr:h, max(0, dc):w - max(0, -dc)]
        hit = (a >= 0) & (b >= 0) & (a != b)
        if hit.any():
            for x, y in set(zip(a[hit].tolist(), b[hit].tolist())):
                pairs.add((min(x, y), max(x, y)))
    return pairs


def with_touching(objs: list[FrameObject], labels: np.ndarray) -> list[FrameObject]:
    """objs with their touching sets filled in; label k in labels is objs[k]."""
    touch: list[set[Identity]] = [set() for _ in objs]
    for a, b in _touching_pairs(labels):
        touch[a].add(objs[b].identity)
        touch[b].add(objs[a].identity)
    return [replace(o, touching=frozenset(touch[k])) for k, o in enumerate(objs)]


# --- ground truth ----------------------------------------------------------------

def truth_frames(scene: Scene, height: int, width: int) -> list[list[FrameObject]]:
    """The objects of every frame from the Scene and exact rasterisation.

    Centroids and contacts come from render.object_pixels, the very masks the
    renderer draws at this size, never from classifying a rendered frame, so
    the truth cannot share a reader's mistake.
    """
    if height < 1 or width < 1:
        raise InvalidInputError(f"height and width must be positive, got {height}x{width}")
    out: list[list[FrameObject]] = []
    labels = np.empty((height, width), np.int32)
    for t in range(scene.num_frames):
        labels.fill(-1)
        objs: list[FrameObject] = []
        for i in scene.visible_ids(t):
            rows, cols, mask = object_pixels(scene, i, t, height, width)
            rr, cc = np.nonzero(mask)
            if rr.size == 0:            # wholly outside the frame: nothing to see
                continue
            row = float(rr.mean()) + rows.start + 0.5
            col = float(cc.mean()) + cols.start + 0.5
            labels[rows, cols][mask] = len(objs)
            o = scene.objects[i]
            objs.append(FrameObject(o.shape, o.size, scene.colour_name(i, t),
                                    place_of(row, col, height, width), (row, col), int(rr.size)))
        out.append(with_touching(objs, labels))
    return out


def truth_lines(scene: Scene, height: int, width: int, moves: str = "every_frame") -> list[str]:
    """The exact lines the reader must produce for this scene at this size."""
    return frame_lines(truth_frames(scene, height, width), moves)
