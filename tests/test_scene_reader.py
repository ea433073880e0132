"""Tests for the scene reader: exact lines from pixels, before and after H.264.

The reader's lines are what the testbed's language model reads, so the bar is
string equality with the ground truth computed from the Scene, not "close".
The main test sends a couple of hundred held-out clips through real H.264
files and requires at least 99% of frames to match exactly; clean frames must
match 100%.  The truth itself is checked against the Scene's event list, so
the two cannot agree on a wrong answer, and the tested clips must contain
every kind of change, so the comparison cannot pass on still scenes.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from sparrow_sd.errors import InvalidInputError
from sparrow_sd.synth import BACKGROUND, PALETTE, SHAPES, SIZES, make_clip, read_video, write_mp4
from sparrow_sd.synth.render import shape_mask
from sparrow_sd.testbed.scene_reader import (
    MOVE_STYLES,
    FrameObject,
    frame_lines,
    read_frame,
    read_frames,
    read_video_lines,
    truth_frames,
    truth_lines,
)

NUM_H264_CLIPS = 200
NUM_CLEAN_CLIPS = 60
FIRST_SEED = 100_000            # held out: training data uses small seeds
CHANGE_WORDS = ("disappears", "appears", "turns", "moves left", "moves right",
                "moves up", "moves down", "meets")


def clip_plan(count: int, plan_seed: int = 0) -> list[tuple[int, int, int | None]]:
    """(seed, num_frames, num_events) for held-out clips of mixed length (4-32
    frames) and event density: a quarter use the default count, the rest draw
    from none up to one event every three frames."""
    rng = np.random.default_rng(plan_seed)
    plan = []
    for i in range(count):
        frames = int(rng.integers(4, 33))
        events = None if i % 4 == 0 else min(frames - 1, int(rng.integers(0, frames // 3 + 2)))
        plan.append((FIRST_SEED + i, frames, events))
    return plan


def identity_order(o) -> tuple[int, int]:
    """The reader's object order: shape in vocab order, then small before large."""
    return (SHAPES.index(o.shape), list(SIZES).index(o.size))


def name_at(scene, obj_id: int, t: int) -> str:
    o = scene.objects[obj_id]
    return f"{o.size} {scene.colour_name(obj_id, t)} {o.shape}"


def mismatches(clips_lines: list[tuple[int, list[str], list[str]]]) -> tuple[int, int, int, list[str]]:
    """(frames, wrong frames, wrong clips, diff report) over (seed, read, truth) triples."""
    frames = wrong = wrong_clips = 0
    report: list[str] = []
    for seed, got, want in clips_lines:
        assert len(got) == len(want)
        frames += len(want)
        bad = [(t, g, w) for t, (g, w) in enumerate(zip(got, want)) if g != w]
        wrong += len(bad)
        wrong_clips += bool(bad)
        for t, g, w in bad:
            report.append(f"seed {seed} frame {t + 1}:\n  read:  {g}\n  truth: {w}")
    return frames, wrong, wrong_clips, report


@pytest.fixture(scope="module")
def h264_clips(tmp_path_factory):
    """[(seed, clip, decoded frames)] for the held-out clips, each written as
    a real H.264 mp4 and decoded again."""
    folder = tmp_path_factory.mktemp("scene_reader")
    out = []
    for seed, frames, events in clip_plan(NUM_H264_CLIPS):
        clip = make_clip(seed, frames, 112, 112, num_events=events)
        path = write_mp4(clip.frames, folder / f"{seed}.mp4", fps=clip.fps)
        decoded = read_video(path).frames
        assert decoded.shape == clip.frames.shape
        out.append((seed, clip, decoded))
    return out


# --- exactness on SynthVideo ----------------------------------------------------

@pytest.mark.slow
def test_h264_round_trip_is_at_least_99_percent_exact(h264_clips):
    """In both move styles: "once" is what the testbed reads, and it depends
    on every frame's move being read right (a missed one is a false stop)."""
    read = [(seed, read_frames(decoded), truth_frames(clip.scene, 112, 112)) for seed, clip, decoded in h264_clips]
    for moves in MOVE_STYLES:
        results = [(seed, frame_lines(got, moves), frame_lines(true, moves)) for seed, got, true in read]
        frames, wrong, wrong_clips, report = mismatches(results)
        exact = 1.0 - wrong / frames
        summary = (f"H.264, moves {moves}: {frames - wrong}/{frames} frames exact ({exact:.2%}), "
                   f"{len(results) - wrong_clips}/{len(results)} clips wholly exact")
        print(summary)
        assert exact >= 0.99, summary + "\n" + "\n".join(report[:30])


@pytest.mark.parametrize("height,width,count", [(112, 112, NUM_CLEAN_CLIPS), (56, 56, 30), (64, 96, 30)])
def test_clean_frames_are_read_exactly(height, width, count):
    """Un-encoded frames hold the renderer's exact masks: no line may differ,
    at the training size and at small and non-square ones."""
    results = []
    for seed, frames, events in clip_plan(count, plan_seed=height + width):
        clip = make_clip(seed, frames, height, width, num_events=events)
        for moves in MOVE_STYLES:
            results.append((seed, read_video_lines(clip.frames, moves), truth_lines(clip.scene, height, width, moves)))
    frames, wrong, _, report = mismatches(results)
    assert wrong == 0, f"{wrong}/{frames} clean frames wrong at {height}x{width}:\n" + "\n".join(report[:30])


def test_every_kind_of_change_is_tested(h264_clips):
    """The exactness test is only meaningful if the truth it compares with
    shows every kind of change (and every direction) many times."""
    text = "\n".join(line for _, clip, _ in h264_clips for line in truth_lines(clip.scene, 112, 112))
    counts = {w: text.count(f" {w}") for w in CHANGE_WORDS}
    assert all(n >= 10 for n in counts.values()), counts
    assert text.count("Frame 1:") == NUM_H264_CLIPS


def test_truth_agrees_with_the_scene_events(h264_clips):
    """Every planned event shows up in the truth line of its frame(s), named
    as the planner names it, and no change is reported while no event runs."""
    for seed, clip, _ in h264_clips:
        s = clip.scene
        lines = truth_lines(s, 112, 112)
        busy = set()
        for e in s.events:
            busy.update(range(e.frame, e.end_frame + 1))
            o = s.objects[e.objects[0]]
            if e.kind == "appear":
                want = [(e.frame, f"{o.size} {e.colour_to} {o.shape} appears")]
            elif e.kind == "disappear":
                want = [(e.frame, f"{o.size} {e.colour_from} {o.shape} disappears")]
            elif e.kind == "colour_change":
                want = [(e.frame, f"{o.size} {e.colour_from} {o.shape} turns {e.colour_to}")]
            elif e.kind == "move":
                want = [(t, f"{o.size} {s.colour_name(o.id, t)} {o.shape} moves {e.direction}")
                        for t in range(e.frame, e.end_frame + 1)]
            else:
                first, second = sorted(e.objects, key=lambda i: identity_order(s.objects[i]))
                want = [(e.end_frame, f"{name_at(s, first, e.end_frame)} meets "
                                      f"{name_at(s, second, e.end_frame)}")]
            for t, phrase in want:
                assert phrase in lines[t].split("Changes:")[-1], (seed, e, lines[t])
        for t, line in enumerate(lines):
            if t not in busy:
                assert "Changes:" not in line, (seed, t, line)


def test_clean_reading_measures_what_the_truth_measures():
    """On clean frames the reader's masks are the renderer's masks, so even the
    measurements behind the words agree: centroids, areas and contacts."""
    clip = make_clip(FIRST_SEED + 2, 32, 112, 112, num_events=10)
    assert sum(e.kind == "meet" for e in clip.events) == 2
    for got, want in zip(read_frames(clip.frames), truth_frames(clip.scene, 112, 112), strict=True):
        got, want = sorted(got, key=identity_order), sorted(want, key=identity_order)
        for g, w in zip(got, want, strict=True):
            assert g == w and g.pixels == w.pixels and g.touching == w.touching
            assert np.allclose(g.centroid, w.centroid)


# --- hand-built frames ------------------------------------------------------------

def blank(height: int = 112, width: int = 112) -> np.ndarray:
    frame = np.empty((height, width, 3), np.uint8)
    frame[:] = BACKGROUND
    return frame


def draw(frame: np.ndarray, shape: str, colour: str, cx: float, cy: float, side: float) -> None:
    """Draw a shape the way the renderer does (pixel centres inside the shape)."""
    h = side / 2.0
    v = (np.arange(frame.shape[0]) + 0.5 - cy)[:, None] / h
    u = (np.arange(frame.shape[1]) + 0.5 - cx)[None, :] / h
    frame[shape_mask(shape, u, v)] = PALETTE[colour]


ONE_OF_EACH = [  # shape, size, colour, centre (x, y), expected place
    ("square", "large", "red", (20.0, 20.0), "in the top left corner"),
    ("circle", "small", "blue", (56.3, 55.8), "in the centre"),
    ("triangle", "large", "green", (91.5, 20.2), "in the top right corner"),
    ("diamond", "small", "yellow", (20.7, 92.0), "in the bottom left corner"),
    ("cross", "large", "white", (90.0, 90.0), "in the bottom right corner"),
]


def one_of_each_frame() -> np.ndarray:
    frame = blank()
    for shape, size, colour, (cx, cy), _ in ONE_OF_EACH:
        draw(frame, shape, colour, cx, cy, {"small": 0.15, "large": 0.25}[size] * 112)
    return frame


def test_blank_frame_reads_as_nothing():
    assert read_frame(blank()) == []
    assert read_video_lines(np.stack([blank(), blank()])) == ["Frame 1: nothing.", "Frame 2: nothing."]


def test_one_object_of_each_shape(tmp_path):
    frame = one_of_each_frame()
    by_colour = lambda objs: sorted(objs, key=lambda o: o.colour)  # noqa: E731
    want = by_colour(FrameObject(s, z, c, p) for s, z, c, _, p in ONE_OF_EACH)
    got = read_frame(frame)
    assert by_colour(got) == want
    centres = {c: xy for _, _, c, xy, _ in ONE_OF_EACH}
    for o in got:
        assert abs(o.centroid[1] - centres[o.colour][0]) < 0.5        # symmetric left-right
    decoded = read_video(write_mp4(np.stack([frame, frame]), tmp_path / "five.mp4")).frames
    for objs in read_frames(decoded):
        assert by_colour(objs) == want


@pytest.mark.parametrize("gap,touching", [(0, True), (1, False), (2, False)])
def test_contact_needs_adjacent_pixels(gap, touching):
    """A meet needs the masks to touch; one background row keeps them apart."""
    frame = blank()
    draw(frame, "square", "red", 40.0, 30.0, 16.0)                 # rows 22..37
    draw(frame, "square", "blue", 40.0, 38.0 + gap + 14.0, 28.0)   # from row 38 + gap
    red, blue = sorted(read_frame(frame), key=lambda o: o.size == "large")
    assert (red.colour, blue.colour) == ("red", "blue")
    assert (blue.identity in red.touching) is touching
    assert (red.identity in blue.touching) is touching
    apart = blank()
    draw(apart, "square", "red", 40.0, 20.0, 16.0)
    draw(apart, "square", "blue", 40.0, 70.0, 28.0)
    lines = read_video_lines(np.stack([apart, frame]))
    assert lines[1].endswith("small red square meets large blue square.") is touching


# --- the line format ------------------------------------------------------------

def obj(shape, size, colour, place, centroid=(50.0, 50.0), touching=()):
    return FrameObject(shape, size, colour, place, centroid, 100, frozenset(touching))


def test_line_format_and_order():
    circle = obj("circle", "small", "blue", "in the centre", (56.0, 60.0))
    moved = obj("circle", "small", "blue", "in the centre", (56.0, 57.0))
    square = obj("square", "large", "red", "on the right", (56.0, 90.0))
    lines = frame_lines([[circle]] * 6 + [[moved, square]])
    assert lines[0] == "Frame 1: small blue circle in the centre."
    assert lines[5] == "Frame 6: small blue circle in the centre."
    assert lines[6] == ("Frame 7: large red square on the right, small blue circle in the centre. "
                        "Changes: large red square appears; small blue circle moves left.")
    assert frame_lines([[], [circle], []]) == [
        "Frame 1: nothing.",
        "Frame 2: small blue circle in the centre. Changes: small blue circle appears.",
        "Frame 3: nothing. Changes: small blue circle disappears.",
    ]


def test_a_move_is_written_once_with_its_stop():
    """moves="once": said where it starts, where it turns and where it ends; a
    move that runs into the last frame has no stop; an unknown style is refused."""
    centroids = [(50.0, 80.0), (50.0, 76.0), (50.0, 72.0), (50.0, 68.0), (50.0, 68.0), (46.0, 68.0), (42.0, 68.0)]
    places = ["on the right", "on the right", "in the centre", "in the centre", "in the centre",
              "in the centre", "at the top"]
    frames = [[obj("circle", "small", "blue", p, c)] for p, c in zip(places, centroids)]
    changes = [line.partition(" Changes: ")[2] for line in frame_lines(frames, moves="once")]
    assert changes == ["", "small blue circle moves left.", "", "", "small blue circle stops in the centre.",
                       "small blue circle moves up.", ""]
    every = [line.partition(" Changes: ")[2] for line in frame_lines(frames)]
    assert every == ["", *["small blue circle moves left."] * 3, "", *["small blue circle moves up."] * 2]
    turning = frames[:3] + [[obj("circle", "small", "blue", "in the centre", (54.0, 72.0))]]
    assert frame_lines(turning, moves="once")[3].endswith("Changes: small blue circle moves down.")
    with pytest.raises(InvalidInputError, match="moves"):
        frame_lines(frames, moves="sometimes")


def test_changes_sorted_by_kind_then_identity():
    before = [
        obj("cross", "small", "green", "at the top"),
        obj("square", "large", "red", "on the left", (50.0, 50.0)),
        obj("triangle", "large", "white", "at the bottom", (80.0, 50.0)),
        obj("diamond", "large", "cyan", "in the centre", (60.0, 60.0)),
    ]
    after = [
        obj("square", "large", "red", "on the left", (50.0, 48.0), [("triangle", "large")]),
        obj("triangle", "large", "purple", "at the bottom", (70.0, 50.0), [("square", "large")]),
        obj("diamond", "large", "cyan", "in the centre", (60.3, 60.2)),      # below the move threshold
        obj("circle", "large", "orange", "in the top right corner"),
        obj("circle", "small", "yellow", "in the top left corner"),
    ]
    assert frame_lines([before, after])[1] == (
        "Frame 2: large red square on the left, small yellow circle in the top left corner, "
        "large orange circle in the top right corner, large purple triangle at the bottom, "
        "large cyan diamond in the centre. Changes: small green cross disappears; "
        "small yellow circle appears; large orange circle appears; "
        "large white triangle turns purple; large red square moves left; "
        "large purple triangle moves up; large red square meets large purple triangle.")
    # a pair that already touched does not meet again
    assert "meets" not in frame_lines([after, after])[1]


# --- robustness, validation and speed -------------------------------------------

def test_arbitrary_frames_do_not_crash():
    """Real video may hold anything: the reader reports palette-coloured blobs
    and never fails on odd sizes, noise or large flat areas."""
    rng = np.random.default_rng(0)
    palette = np.array(list(PALETTE.values()) + [BACKGROUND], np.uint8)
    for h, w in [(1, 1), (3, 7), (17, 250), (240, 320)]:
        noise = rng.integers(0, 256, (2, h, w, 3), dtype=np.uint8)
        blocks = palette[rng.integers(0, len(palette), (2, h // 8 + 1, w // 8 + 1))]
        blocks = np.ascontiguousarray(blocks.repeat(8, 1).repeat(8, 2)[:, :h, :w])
        for frames in (noise, blocks):
            lines = read_video_lines(frames)
            assert [line.split(":")[0] for line in lines] == ["Frame 1", "Frame 2"]
    assert read_frames(np.zeros((0, 8, 8, 3), np.uint8)) == []
    assert frame_lines([]) == []


@pytest.mark.parametrize("bad", [
    [[[[0, 0, 0]]]],                                   # not an array
    np.zeros((2, 8, 8, 3), np.float32),                # not uint8
    np.zeros((8, 8, 3), np.uint8),                     # one frame, not a stack
    np.zeros((2, 8, 8, 4), np.uint8),                  # RGBA
    np.zeros((2, 0, 8, 3), np.uint8),                  # empty frame
])
def test_read_frames_validates_input(bad):
    with pytest.raises(InvalidInputError):
        read_frames(bad)


def test_other_validation():
    with pytest.raises(InvalidInputError):
        read_frame(np.zeros((1, 8, 8, 3), np.uint8))
    with pytest.raises(InvalidInputError):
        read_video_lines(np.zeros((2, 8, 8), np.uint8))
    with pytest.raises(InvalidInputError):
        truth_frames(make_clip(0, 4, 56, 56).scene, 0, 56)
    twins = [obj("square", "large", "red", "on the left"), obj("square", "large", "blue", "on the right")]
    with pytest.raises(InvalidInputError):
        frame_lines([twins])


def test_reading_is_fast():
    frames = make_clip(FIRST_SEED + 7, 128, 112, 112).frames
    read_frames(frames)                                 # warm the look-up tables
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        read_frames(frames)
        best = min(best, time.perf_counter() - t0)
    print(f"read 128 frames at 112x112 in {best * 1000:.0f} ms")
    assert best < 0.5
