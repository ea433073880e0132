"""Question/answer pairs with short canonical answers, derived from a Scene.

Each question kind is asked only when the scene makes its answer unique
(e.g. "Which way did the square move?" only when the square made exactly one
move and took part in no meet), so an answer can be scored by exact string
match.  Answers are lowercase words from the vocabulary, digits, "yes"/"no",
or an object's clip-unique name ("square", "large square").  evidence_frames
records the frames that decide the answer, for analysing where a model looks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .planner import scene_rng
from .scene import Event, Scene
from .vocab import COLOURS, DIRECTIONS, with_article

_MOTION_EPS = 0.05   # world units of displacement that count as "moving that way"


@dataclass(frozen=True)
class QA:
    """One question, its canonical answer, its kind and the deciding frames."""

    question: str
    answer: str
    kind: str
    evidence_frames: tuple[int, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"question": self.question, "answer": self.answer, "kind": self.kind,
                "evidence_frames": list(self.evidence_frames)}


QA_KINDS: tuple[str, ...] = (
    "count_start", "count_end", "count_appear", "colour_first_appear", "colour_last_appear",
    "move_direction", "which_moved", "colour_change_to", "colour_change_from",
    "count_colour_changes", "shape_disappear", "meet_partner", "colour_end", "colour_exists",
)


def make_qa(scene: Scene, rng: np.random.Generator | None = None) -> list[QA]:
    """Every question kind that this scene answers unambiguously, one each."""
    rng = rng if rng is not None else scene_rng(scene.seed, 2)
    out: list[QA] = []
    for kind in QA_KINDS:
        qa = _ASKERS[kind](scene, rng)
        if qa is not None:
            out.append(qa)
    return out


def _pick(rng: np.random.Generator, options):
    return options[int(rng.integers(len(options)))]


def _of(scene: Scene, kind: str) -> list[Event]:
    return [e for e in scene.events if e.kind == kind]


def _count_start(s: Scene, rng) -> QA:
    q = _pick(rng, ("How many objects are on screen at the start?",
                    "How many objects are visible in the first frame?",
                    "How many objects can be seen when the video begins?"))
    return QA(q, str(len(s.visible_ids(0))), "count_start", (0,))


def _count_end(s: Scene, rng) -> QA:
    q = _pick(rng, ("How many objects are on screen at the end?",
                    "How many objects are visible in the last frame?",
                    "How many objects can be seen when the video ends?"))
    t = s.num_frames - 1
    return QA(q, str(len(s.visible_ids(t))), "count_end", (t,))


def _count_appear(s: Scene, rng) -> QA | None:
    if s.num_frames < 2:
        return None
    q = _pick(rng, ("How many new objects appear after the first frame?",
                    "How many objects appear after the video has started?"))
    ev = _of(s, "appear")
    return QA(q, str(len(ev)), "count_appear", tuple(e.frame for e in ev))


def _colour_appear(s: Scene, rng, which: int, kind: str) -> QA | None:
    ev = _of(s, "appear")
    if not ev or (which == 0 and len(ev) < 2):
        return None
    e = ev[which]
    if s.events_of(e.objects[0], "colour_change"):
        return None   # "what colour is it" would depend on when you look
    if len(ev) == 1:
        q = "What colour is the object that appears during the video?"
    else:
        word = "first" if which == 0 else "last"
        q = _pick(rng, (f"What colour is the object that appears {word}?",
                        f"Of the objects that appear after the start, which colour is the one that appears {word}?"))
    return QA(q, e.colour_to, kind, (e.frame,))


def _move_direction(s: Scene, rng) -> QA | None:
    cands = [o.id for o in s.objects
             if len(s.events_of(o.id, "move")) == 1 and not s.events_of(o.id, "meet")]
    if not cands:
        return None
    i = _pick(rng, cands)
    e = s.events_of(i, "move")[0]
    name = s.name(i)
    q = _pick(rng, (f"Which way did the {name} move?", f"In which direction does the {name} move?",
                    f"Which direction did the {name} move in?"))
    return QA(q, e.direction, "move_direction", (e.frame - 1, e.end_frame))


def _displacements(s: Scene) -> list[tuple[int, np.ndarray, Event]]:
    """(object, displacement, event) for every motion, moves and meets alike."""
    out = []
    for e in s.events:
        if e.kind in ("move", "meet"):
            for i in e.objects:
                out.append((i, s.centre[e.end_frame, i] - s.centre[e.frame - 1, i], e))
    return out


def _which_moved(s: Scene, rng) -> QA | None:
    disp = _displacements(s)
    options = []
    for d, v in DIRECTIONS.items():
        movers = {i for i, dx, _ in disp if float(np.dot(dx, v)) > _MOTION_EPS}
        moves = [e for e in _of(s, "move") if e.direction == d]
        if len(movers) == 1 and moves and moves[0].objects[0] in movers:
            options.append((d, moves[0].objects[0], tuple(e.end_frame for e in moves)))
    if not options:
        return None
    d, i, frames = _pick(rng, options)
    words = {"left": "to the left", "right": "to the right", "up": "upwards", "down": "downwards"}
    q = _pick(rng, (f"Which object moves {words[d]}?", f"Which object travels {words[d]}?"))
    return QA(q, s.name(i), "which_moved", frames)


def _single_recolour(s: Scene, rng) -> tuple[int, Event] | None:
    cands = [o.id for o in s.objects if len(s.events_of(o.id, "colour_change")) == 1]
    if not cands:
        return None
    i = _pick(rng, cands)
    return i, s.events_of(i, "colour_change")[0]


def _colour_change(s: Scene, rng, after: bool) -> QA | None:
    """The colour an object that changes colour once turns into (after) or had before."""
    hit = _single_recolour(s, rng)
    if hit is None:
        return None
    i, e = hit
    name = s.name(i)
    if after:
        q = _pick(rng, (f"What colour does the {name} turn into?", f"What colour does the {name} change to?",
                        f"Which colour does the {name} become when it changes colour?"))
        return QA(q, e.colour_to, "colour_change_to", (e.frame,))
    q = _pick(rng, (f"What colour was the {name} before it changed colour?",
                    f"Before changing colour, what colour was the {name}?"))
    return QA(q, e.colour_from, "colour_change_from", (e.frame - 1,))


def _count_colour_changes(s: Scene, rng) -> QA:
    changed = [o.id for o in s.objects if s.events_of(o.id, "colour_change")]
    pool = changed if changed and rng.random() < 0.7 else [o.id for o in s.objects]
    i = _pick(rng, pool)
    ev = s.events_of(i, "colour_change")
    q = _pick(rng, (f"How many times does the {s.name(i)} change colour?",
                    f"How often does the {s.name(i)} change its colour?"))
    return QA(q, str(len(ev)), "count_colour_changes", tuple(e.frame for e in ev))


def _shape_disappear(s: Scene, rng) -> QA | None:
    ev = _of(s, "disappear")
    if not ev:
        return None
    q = ("What shape is the object that disappears?" if len(ev) == 1 else
         _pick(rng, ("What shape is the object that disappears first?",
                     "Which shape is the first object to disappear?")))
    return QA(q, s.objects[ev[0].objects[0]].shape, "shape_disappear", (ev[0].frame - 1,))


def _meet_partner(s: Scene, rng) -> QA | None:
    cands = [o.id for o in s.objects if len(s.events_of(o.id, "meet")) == 1]
    if not cands:
        return None
    i = _pick(rng, cands)
    e = s.events_of(i, "meet")[0]
    other = e.objects[1] if e.objects[0] == i else e.objects[0]
    q = _pick(rng, (f"Which object does the {s.name(i)} touch?",
                    f"Which object moves together with the {s.name(i)} until they touch?"))
    return QA(q, s.name(other), "meet_partner", (e.end_frame,))


def _colour_end(s: Scene, rng) -> QA | None:
    t = s.num_frames - 1
    ids = s.visible_ids(t)
    i = _pick(rng, ids)
    q = _pick(rng, (f"What colour is the {s.name(i)} at the end of the video?",
                    f"In the last frame, what colour is the {s.name(i)}?"))
    return QA(q, s.colour_name(i, t), "colour_end", (t,))


def _colour_exists(s: Scene, rng) -> QA:
    seen = sorted({int(c) for c in s.colour[s.visible]})
    unseen = [c for c in range(len(COLOURS)) if c not in seen]
    yes = not unseen or rng.random() < 0.5
    c = COLOURS[_pick(rng, seen if yes else unseen)]
    q = _pick(rng, (f"Is there {with_article(c)} object at any point in the video?",
                    f"Is {with_article(c)} object ever visible in the video?"))
    hits = np.flatnonzero((s.visible & (s.colour == COLOURS.index(c))).any(axis=1))
    return QA(q, "yes" if yes else "no", "colour_exists", (int(hits[0]),) if hits.size else ())


_ASKERS = {
    "count_start": _count_start,
    "count_end": _count_end,
    "count_appear": _count_appear,
    "colour_first_appear": lambda s, r: _colour_appear(s, r, 0, "colour_first_appear"),
    "colour_last_appear": lambda s, r: _colour_appear(s, r, -1, "colour_last_appear"),
    "move_direction": _move_direction,
    "which_moved": _which_moved,
    "colour_change_to": lambda s, rng: _colour_change(s, rng, after=True),
    "colour_change_from": lambda s, rng: _colour_change(s, rng, after=False),
    "count_colour_changes": _count_colour_changes,
    "shape_disappear": _shape_disappear,
    "meet_partner": _meet_partner,
    "colour_end": _colour_end,
    "colour_exists": _colour_exists,
}
