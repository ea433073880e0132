"""Narrate a Scene as a detailed, temporally ordered description.

The description is the caption-style target text for the video model: it
names every object at its first sighting (with colour, size and place), then
every event in order, then what is left at the end.  Several templates exist
for every sentence and the choice, as well as optional details, is drawn from
a seeded generator, so captions vary across clips rather than collapsing to
one string a model could memorise; the facts in them never vary.
"""

from __future__ import annotations

import numpy as np

from .planner import scene_rng
from .scene import Event, Scene
from .vocab import number_word, with_article

_OPENINGS = (
    "The video opens with {n} {objs} on a dark background: {list}.",
    "At the start, {list} {be} on the screen.",
    "In the first frame there {be} {n} {objs}: {list}.",
    "The clip begins with {list} against a plain dark background.",
    "We first see {n} {objs}: {list}.",
)
_FIRST = ("First, ", "To begin with, ", "Early on, ", "Soon, ", "")
_MIDDLE = ("Then ", "Next, ", "After that, ", "Later, ", "A little later, ",
           "Shortly after, ", "Some time later, ", "")
_LAST = ("Finally, ", "Towards the end, ", "Lastly, ", "Near the end, ")
_QUIET = ("For a while, nothing happens.", "Nothing changes for some time.",
          "The scene stays still for a while.")
_APPEAR = (
    "{a} appears {where}.",
    "{a} pops up {where}.",
    "a new object, {a}, appears {where}.",
    "{a} comes into view {where}.",
)
_DISAPPEAR = (
    "{x} disappears.",
    "{x} vanishes from the screen.",
    "{x} disappears from view.",
    "{x} suddenly vanishes.",
)
_MOVE = (
    "{x} moves {dir}.",
    "{x} slides {dir}.",
    "{x} glides {dir}.",
    "{x} travels {dir} across the screen.",
    "{x} shifts {dir}.",
)
_DIR_WORDS = {
    "left": ("to the left", "leftwards", "left"),
    "right": ("to the right", "rightwards", "right"),
    "up": ("upwards", "up", "towards the top"),
    "down": ("downwards", "down", "towards the bottom"),
}
_RECOLOUR = (
    "{x} turns {new}.",
    "{x} changes colour from {old} to {new}.",
    "the colour of {x} switches from {old} to {new}.",
    "{x} becomes {new}.",
    "{x} changes its colour to {new}.",
)
_MEET = (
    "{x} and {y} move towards each other until they touch.",
    "{x} and {y} come together and meet.",
    "{x} and {y} drift together until they touch, with {top} on top.",
    "{x} meets {y}: they slide together until they touch.",
)
_CLOSINGS = (
    "At the end, {n} {objs} {remain} on screen: {list}.",
    "The video ends with {list} on screen.",
    "By the last frame, {n} {objs} {be} left: {list}.",
    "In the final frame there {be} {n} {objs}: {list}.",
)
REGION_PHRASES = (
    ("in the top left corner", "at the top", "in the top right corner"),
    ("on the left", "in the centre", "on the right"),
    ("in the bottom left corner", "at the bottom", "in the bottom right corner"),
)


def describe_scene(scene: Scene, rng: np.random.Generator | None = None) -> str:
    """Full description of a scene; rng defaults to the seed's wording stream."""
    return _Narrator(scene, rng if rng is not None else scene_rng(scene.seed, 1)).run()


def region(scene: Scene, obj_id: int, t: int) -> str:
    """Coarse place of an object on a 3x3 grid, as a prepositional phrase."""
    w, h = scene.world_size
    x, y = scene.centre[t, obj_id]
    return REGION_PHRASES[min(2, int(3 * y / h))][min(2, int(3 * x / w))]


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


class _Narrator:
    """Holds the rng while sentences are chosen; one instance per description."""

    def __init__(self, scene: Scene, rng: np.random.Generator):
        self.s = scene
        self.rng = rng

    def pick(self, options: tuple[str, ...]) -> str:
        return options[int(self.rng.integers(len(options)))]

    def needs_size(self, i: int) -> bool:
        return self.s.name(i) != self.s.objects[i].shape

    def indefinite(self, i: int, t: int, where: bool) -> str:
        """First mention: "a large red square" (+ " in the centre")."""
        o = self.s.objects[i]
        phrase = with_article(f"{o.size} {self.s.colour_name(i, t)} {o.shape}")
        return phrase + (" " + region(self.s, i, t) if where else "")

    def definite(self, i: int, t: int) -> str:
        """Later mention with the colour the object has at frame t; size only
        when it is needed to tell two same-shaped objects apart, or at random."""
        o = self.s.objects[i]
        size = f"{o.size} " if self.needs_size(i) or self.rng.random() < 0.25 else ""
        return f"the {size}{self.s.colour_name(i, t)} {o.shape}"

    def listing(self, t: int, where_p: float) -> tuple[str, int]:
        ids = self.s.visible_ids(t)
        items = [self.indefinite(i, t, self.rng.random() < where_p) for i in ids]
        return _join(items), len(ids)

    def count_words(self, n: int) -> dict[str, str]:
        return {"n": number_word(n), "objs": "object" if n == 1 else "objects",
                "be": "is" if n == 1 else "are", "remain": "remains" if n == 1 else "remain"}

    def event_clause(self, e: Event) -> str:
        s, before = self.s, max(0, e.frame - 1)
        if e.kind == "appear":
            i = e.objects[0]
            return self.pick(_APPEAR).format(a=self.indefinite(i, e.frame, False),
                                             where=region(s, i, e.frame))
        if e.kind == "disappear":
            return self.pick(_DISAPPEAR).format(x=self.definite(e.objects[0], before))
        if e.kind == "move":
            i = e.objects[0]
            clause = self.pick(_MOVE).format(x=self.definite(i, before),
                                             dir=self.pick(_DIR_WORDS[e.direction]))
            if self.rng.random() < 0.3:
                clause = clause[:-1] + f", ending up {region(s, i, e.end_frame)}."
            return clause
        if e.kind == "colour_change":
            return self.pick(_RECOLOUR).format(x=self.definite(e.objects[0], before),
                                               old=e.colour_from, new=e.colour_to)
        if e.kind == "meet":
            a, b = e.objects
            if self.rng.random() < 0.5:
                a, b = b, a
            return self.pick(_MEET).format(x=self.definite(a, before), y=self.definite(b, before),
                                           top="the " + s.name(e.objects[0]))
        raise ValueError(f"unknown event kind {e.kind!r}")

    def run(self) -> str:
        s, T = self.s, self.s.num_frames
        listing, n = self.listing(0, where_p=0.7)
        out = [self.pick(_OPENINGS).format(list=listing, **self.count_words(n))]
        prev_end = 0
        for k, e in enumerate(s.events):
            if e.frame - prev_end >= max(12, 0.12 * T) and self.rng.random() < 0.5:
                out.append(self.pick(_QUIET))
            first, last = k == 0, k == len(s.events) - 1 and len(s.events) > 1
            conn = self.pick(_FIRST if first else _LAST if last else _MIDDLE)
            clause = self.event_clause(e)
            out.append(conn + clause if conn else _cap(clause))
            prev_end = e.end_frame
        if not s.events:
            out.append("Nothing else happens.")
        if s.events:
            listing, n = self.listing(T - 1, where_p=0.4)
            out.append(self.pick(_CLOSINGS).format(list=listing, **self.count_words(n)))
        return " ".join(_cap(x) for x in out)
