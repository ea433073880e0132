"""Plan a random, always-unambiguous event sequence for one clip.

The planner simulates the world forward event by event and only accepts an
event whose outcome keeps the ground truth clean: objects never overlap (so a
pixel colour always belongs to one object and counting colours counts
objects), every object's (shape, size) is unique in the clip (so "the square"
or "the large square" names one object), no two objects ever hold the same
colour (so "the red object" is one object at any moment), and the screen is
never empty.  Events are spread over the whole clip: the timeline is cut into
one segment per event and each event happens inside its own segment, so a
model must look at the right frames to answer.
"""

from __future__ import annotations

import numpy as np

from .scene import Event, ObjectSpec, Scene, world_size
from .vocab import COLOURS, DIRECTIONS, SHAPES, SIZES

EDGE = 0.02          # free border between an object and the frame edge
SEP = 0.05           # minimum gap between objects that are not meeting
MIN_MOVE = 0.18      # shortest move, world units (about 10 px at 56x56)
MAX_MOVE = 0.45
MIN_MEET_TRAVEL = 0.12
MAX_DURATION = 12    # frames a gradual event may take


def default_num_events(num_frames: int) -> int:
    """About one event per 16 frames, at least one, two for short clips."""
    return min(num_frames - 1, max(1, min(num_frames // 2, 2 + num_frames // 20)))


MAX_DESCRIBED_EVENTS = 8  # keeps a long clip's description within about 60-300 tokens


def bounded_num_events(num_frames: int, max_events: int = MAX_DESCRIBED_EVENTS) -> int:
    """:func:`default_num_events`, capped at ``max_events``: long clips stay describable in a few sentences."""
    if num_frames < 2:
        return 0
    return max(1, min(default_num_events(num_frames), max_events))


def scene_rng(seed: int, stream: int) -> np.random.Generator:
    """Independent generator per purpose (scene, wording, questions).

    Separate streams mean a change in the describer's use of randomness can
    never change the scene that a seed produces.
    """
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    return np.random.default_rng(np.random.SeedSequence([int(seed), stream]))


def _box_gap(pa: np.ndarray, ha: float, pb: np.ndarray, hb: float) -> np.ndarray:
    """Chebyshev gap between two square boxes (negative when they overlap)."""
    return (np.abs(pa - pb) - (ha + hb)).max(axis=-1)


class _Planner:
    """Mutable simulation state while a scene is being planned."""

    def __init__(self, rng: np.random.Generator, num_frames: int, aspect: float,
                 max_visible: int, max_objects: int):
        self.rng = rng
        self.T = num_frames
        self.W, self.H = world_size(aspect)
        self.max_visible = max_visible
        self.max_objects = max_objects
        self.objects: list[ObjectSpec] = []
        self.events: list[Event] = []
        self.vis = np.zeros((num_frames, max_objects), bool)
        self.cen = np.zeros((num_frames, max_objects, 2))
        self.col = np.zeros((num_frames, max_objects), np.int16)
        self.cur_vis = np.zeros(max_objects, bool)
        self.cur_cen = np.zeros((max_objects, 2))
        self.cur_col = np.full(max_objects, -1, np.int16)
        self.filled = 0

    # -- state bookkeeping -------------------------------------------------
    def fill_until(self, t: int) -> None:
        """Frames [filled, t) show the current state."""
        self.vis[self.filled:t] = self.cur_vis
        self.cen[self.filled:t] = self.cur_cen
        self.col[self.filled:t] = self.cur_col
        self.filled = max(self.filled, t)

    def visible_ids(self) -> list[int]:
        return [int(i) for i in np.flatnonzero(self.cur_vis)]

    def half(self, i: int) -> float:
        return self.objects[i].half_size

    def free_colour(self) -> int:
        held = set(int(c) for c in self.cur_col[: len(self.objects)])
        free = [c for c in range(len(COLOURS)) if c not in held]
        return int(free[self.rng.integers(len(free))])

    def free_spot(self, h: float, tries: int = 60) -> np.ndarray | None:
        for _ in range(tries):
            p = np.array([self.rng.uniform(EDGE + h, self.W - EDGE - h),
                          self.rng.uniform(EDGE + h, self.H - EDGE - h)])
            if all(_box_gap(p, h, self.cur_cen[j], self.half(j)) >= 1.5 * SEP
                   for j in self.visible_ids()):
                return p
        return None

    def path_ok(self, moves: dict[int, tuple[np.ndarray, np.ndarray]], dur: int,
                pair: tuple[int, int] | None = None) -> bool:
        """No overlap along the straight paths, checked at every rendered
        frame and densely in between.  A gap that is already below SEP (two
        objects touching after a meet) may not shrink; the meeting pair may
        close to zero but not overlap."""
        s = np.unique(np.concatenate([np.arange(dur + 1) / dur, np.linspace(0, 1, 33)]))
        pos = {i: self.cur_cen[i][None] for i in self.visible_ids()}
        for i, (p0, p1) in moves.items():
            pos[i] = p0[None] + (p1 - p0)[None] * s[:, None]
        for i in moves:
            for j in pos:
                if j == i or (j in moves and j < i):
                    continue
                g = _box_gap(pos[i], self.half(i), pos[j], self.half(j))
                if pair is not None and {i, j} == set(pair):
                    ok = bool((g >= -1e-9).all())
                else:
                    ok = bool((g >= min(SEP, float(g[0])) - 1e-9).all())
                if not ok:
                    return False
        return True

    def instant_frame(self, lo: int, hi: int) -> int:
        """The first frame showing an instantaneous change, drawn from segment [lo, hi]."""
        return int(self.rng.integers(lo, hi + 1))

    def timing(self, lo: int, hi: int) -> tuple[int, int]:
        """(start, duration) of a gradual event inside segment [lo, hi]."""
        length = hi - lo + 1
        dur = int(self.rng.integers(min(length, 3), min(length, MAX_DURATION) + 1))
        start = int(self.rng.integers(lo, hi - dur + 2))
        return start, dur

    def apply_motion(self, moves: dict[int, tuple[np.ndarray, np.ndarray]],
                     start: int, dur: int) -> None:
        self.fill_until(start)
        for k in range(1, dur + 1):
            t = start + k - 1
            self.vis[t] = self.cur_vis
            self.col[t] = self.cur_col
            self.cen[t] = self.cur_cen
            for i, (p0, p1) in moves.items():
                self.cen[t, i] = p0 + (p1 - p0) * (k / dur)
        for i, (_, p1) in moves.items():
            self.cur_cen[i] = p1
        self.filled = start + dur

    # -- event proposals: return an Event (already applied) or None.  Each one
    # decides fully before fill_until(), so a refused proposal leaves no trace.
    def propose_object(self, spot_tries: int = 60) -> tuple[str, str, np.ndarray] | None:
        """A new (shape, size) identity and a free spot, or None; no mutation."""
        if len(self.objects) >= self.max_objects or len(self.visible_ids()) >= self.max_visible:
            return None
        used = {(o.shape, o.size) for o in self.objects}
        free = [(s, z) for s in SHAPES for z in SIZES if (s, z) not in used]
        if not free:
            return None
        shape, size = free[self.rng.integers(len(free))]
        p = self.free_spot(SIZES[size] / 2.0, spot_tries)
        return None if p is None else (shape, size, p)

    def place_object(self, shape: str, size: str, p: np.ndarray) -> int:
        i = len(self.objects)
        colour = self.free_colour()
        self.objects.append(ObjectSpec(i, shape, size))
        self.cur_cen[i] = p
        self.cur_col[i] = colour
        self.cur_vis[i] = True
        return i

    def try_appear(self, lo: int, hi: int) -> Event | None:
        proposal = self.propose_object()
        if proposal is None:
            return None
        frame = self.instant_frame(lo, hi)
        self.fill_until(frame)
        i = self.place_object(*proposal)
        return Event("appear", frame, frame, (i,), colour_to=COLOURS[self.cur_col[i]])

    def try_disappear(self, lo: int, hi: int) -> Event | None:
        ids = self.visible_ids()
        if len(ids) < 2:
            return None
        frame = self.instant_frame(lo, hi)
        i = ids[self.rng.integers(len(ids))]
        self.fill_until(frame)
        self.cur_vis[i] = False
        return Event("disappear", frame, frame, (i,), colour_from=COLOURS[self.cur_col[i]])

    def try_colour_change(self, lo: int, hi: int) -> Event | None:
        ids = self.visible_ids()
        if not ids:
            return None
        frame = self.instant_frame(lo, hi)
        i = ids[self.rng.integers(len(ids))]
        old, new = int(self.cur_col[i]), self.free_colour()
        self.fill_until(frame)
        self.cur_col[i] = new
        return Event("colour_change", frame, frame, (i,),
                     colour_from=COLOURS[old], colour_to=COLOURS[new])

    def try_move(self, lo: int, hi: int) -> Event | None:
        start, dur = self.timing(lo, hi)
        names = list(DIRECTIONS)
        cands = [(i, d) for i in self.visible_ids() for d in names]
        for k in self.rng.permutation(len(cands))[:16]:
            i, d = cands[k]
            h, p0 = self.half(i), self.cur_cen[i].copy()
            v = np.array(DIRECTIONS[d])
            room = {"left": p0[0] - EDGE - h, "right": self.W - EDGE - h - p0[0],
                    "up": p0[1] - EDGE - h, "down": self.H - EDGE - h - p0[1]}[d]
            if room < MIN_MOVE:
                continue
            dist = self.rng.uniform(MIN_MOVE, min(MAX_MOVE, room))
            p1 = p0 + v * dist
            if self.path_ok({i: (p0, p1)}, dur):
                self.apply_motion({i: (p0, p1)}, start, dur)
                return Event("move", start, start + dur - 1, (i,), direction=d)
        return None

    def try_meet(self, lo: int, hi: int) -> Event | None:
        start, dur = self.timing(lo, hi)
        ids = self.visible_ids()
        pairs = [(a, b) for a in ids for b in ids if a < b]
        for k in self.rng.permutation(len(pairs)):
            a, b = pairs[k]
            if self.cur_cen[a][1] > self.cur_cen[b][1]:
                a, b = b, a                       # a is the upper object
            pa, pb = self.cur_cen[a].copy(), self.cur_cen[b].copy()
            ha, hb = self.half(a), self.half(b)
            if pb[1] - pa[1] < ha + hb + MIN_MEET_TRAVEL:
                continue                          # must start clearly apart, a above b
            hm = max(ha, hb)
            xm = float(np.clip((pa[0] + pb[0]) / 2, EDGE + hm, self.W - EDGE - hm))
            # contact line c: a's bottom edge and b's top edge both lie on it
            c = float(np.clip((pa[1] + pb[1]) / 2, EDGE + 2 * ha, self.H - EDGE - 2 * hb))
            pa1, pb1 = np.array([xm, c - ha]), np.array([xm, c + hb])
            moves = {a: (pa, pa1), b: (pb, pb1)}
            if self.path_ok(moves, dur, pair=(a, b)):
                self.apply_motion(moves, start, dur)
                return Event("meet", start, start + dur - 1, (a, b))
        return None

    def weights(self) -> dict[str, float]:
        """Favour appearances when the screen is sparse, exits when crowded."""
        n = len(self.visible_ids())
        return {"appear": 1.2 if n < 3 else 0.5, "disappear": 0.3 if n <= 2 else 1.0,
                "move": 1.4, "colour_change": 0.9, "meet": 0.7}


def make_scene(seed: int, num_frames: int, num_events: int | None = None, *,
               aspect: float = 1.0, max_visible: int = 5, max_objects: int = 6) -> Scene:
    """Plan the world of one clip; the seed fully determines the result.

    num_events defaults to default_num_events(num_frames) and must be at most
    num_frames - 1 (every event needs a frame before it).  aspect is
    width / height of the frames it will be rendered at.
    """
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if num_events is None:
        num_events = default_num_events(num_frames)
    if not 0 <= num_events <= num_frames - 1:
        raise ValueError(f"num_events must be in [0, num_frames-1={num_frames - 1}], got {num_events}")
    if not 1 <= max_visible <= max_objects <= min(len(COLOURS) - 2, len(SHAPES) * len(SIZES)):
        raise ValueError("need 1 <= max_visible <= max_objects <= 6")
    rng = scene_rng(seed, 0)
    plan = _Planner(rng, num_frames, aspect, max_visible, max_objects)
    n0 = int(rng.integers(1, min(3, max_visible) + 1))
    for _ in range(n0):
        proposal = plan.propose_object(spot_tries=200)
        if proposal is not None:
            plan.place_object(*proposal)
    tries = {"appear": plan.try_appear, "disappear": plan.try_disappear,
             "move": plan.try_move, "colour_change": plan.try_colour_change,
             "meet": plan.try_meet}
    bounds = np.floor(np.linspace(1, num_frames, num_events + 1) + 0.5).astype(int)
    for k in range(num_events):
        lo, hi = int(bounds[k]), int(bounds[k + 1]) - 1
        w = plan.weights()
        kinds = list(tries)
        while kinds:
            p = np.array([w[x] for x in kinds])
            kind = kinds[int(rng.choice(len(kinds), p=p / p.sum()))]
            event = tries[kind](lo, hi)
            if event is not None:
                plan.events.append(event)
                break
            kinds.remove(kind)
    plan.fill_until(num_frames)
    n = len(plan.objects)
    return Scene(seed=int(seed), aspect=float(aspect), objects=plan.objects,
                 events=plan.events, visible=plan.vis[:, :n].copy(),
                 centre=plan.cen[:, :n].copy(), colour=plan.col[:, :n].astype(np.int64))
