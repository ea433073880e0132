"""Tests for SynthVideo: determinism, ground truth against pixels, wording
variety, QA consistency, and the mp4 writer/reader with its named errors.

Ground truth is checked against the rendered pixels rather than against the
planner's own arrays wherever possible, because a mismatch between what the
text says and what the frames show is the failure that would silently poison
the video model's training data.
"""

from __future__ import annotations

import json
import time

import av
import numpy as np
import pytest

from sparrow_sd.synth import (
    COLOURS,
    DIRECTIONS,
    PALETTE,
    QA_KINDS,
    CorruptVideoError,
    EmptyVideoFileError,
    NoFramesError,
    NoVideoStreamError,
    VideoDecodeError,
    VideoNotFoundError,
    default_num_events,
    make_clip,
    read_video,
    write_mp4,
)
from sparrow_sd.synth.render import object_pixels

SEEDS = range(24)
RGB = np.array(list(PALETTE.values()), np.int32)


def colour_mask(frame: np.ndarray, colour: str) -> np.ndarray:
    return np.all(frame == np.array(PALETTE[colour], np.uint8), axis=-1)


def colours_present(frame: np.ndarray) -> set[str]:
    return {c for c in COLOURS if colour_mask(frame, c).any()}


def centroid(mask: np.ndarray) -> np.ndarray:
    rows, cols = np.nonzero(mask)
    return np.array([cols.mean(), rows.mean()])


def dilate(mask: np.ndarray) -> np.ndarray:
    """3x3 binary dilation without scipy."""
    p = np.pad(mask, 1)
    out = np.zeros_like(mask)
    for dr in range(3):
        for dc in range(3):
            out |= p[dr:dr + mask.shape[0], dc:dc + mask.shape[1]]
    return out


def object_by_name(clip, name: str) -> int:
    hits = [o.id for o in clip.objects if clip.scene.name(o.id) == name]
    assert len(hits) == 1, (name, hits)
    return hits[0]


def name_in(question: str, clip) -> int:
    """The object a question is about: the longest object name it contains."""
    names = sorted((clip.scene.name(o.id) for o in clip.objects), key=len, reverse=True)
    for n in names:
        if f"the {n}" in question:
            return object_by_name(clip, n)
    raise AssertionError(f"no object named in {question!r}")


# --- generation ---------------------------------------------------------------

def test_same_seed_same_clip_and_different_seeds_differ():
    a, b = make_clip(7, 48, 56, 56), make_clip(7, 48, 56, 56)
    assert np.array_equal(a.frames, b.frames)
    assert a.events == b.events and a.description == b.description and a.qa == b.qa
    clips = [make_clip(s, 48, 56, 56) for s in range(6)]
    for i in range(len(clips)):
        for j in range(i + 1, len(clips)):
            assert not np.array_equal(clips[i].frames, clips[j].frames)
            assert clips[i].events != clips[j].events


def test_scene_does_not_depend_on_resolution():
    small, large = make_clip(11, 64, 56, 56), make_clip(11, 64, 112, 112)
    assert small.events == large.events
    assert small.description == large.description


@pytest.mark.parametrize("num_frames", [1, 2, 4, 5, 8, 32, 128, 160])
@pytest.mark.parametrize("size", [(56, 56), (112, 112), (64, 96)])
def test_shapes_and_event_timeline(num_frames, size):
    h, w = size
    for seed in range(4):
        clip = make_clip(seed, num_frames, h, w)
        assert clip.frames.shape == (num_frames, h, w, 3) and clip.frames.dtype == np.uint8
        assert len(clip.events) == default_num_events(num_frames)
        prev_end = 0
        for e in clip.events:
            assert prev_end < e.frame <= e.end_frame < num_frames
            prev_end = e.end_frame
        json.dumps(clip.ground_truth())


def test_events_spread_over_long_clip():
    for seed in SEEDS:
        ev = make_clip(seed, 160, 56, 56).events
        assert len(ev) == 10
        assert ev[0].frame <= 16 and ev[-1].frame >= 144
        gaps = np.diff([e.frame for e in ev])
        assert gaps.max() <= 32


def test_num_events_validation():
    with pytest.raises(ValueError):
        make_clip(0, 4, 56, 56, num_events=4)
    with pytest.raises(ValueError):
        make_clip(-1, 4, 56, 56)
    assert len(make_clip(0, 8, 56, 56, num_events=7).events) == 7


def test_render_is_fast():
    make_clip(0, 160, 112, 112)          # warm-up
    t0 = time.perf_counter()
    make_clip(1, 160, 112, 112)
    assert time.perf_counter() - t0 < 1.0


# --- ground truth against pixels ------------------------------------------------

@pytest.mark.parametrize("size", [(56, 56), (112, 112), (64, 96)])
def test_every_object_drawn_whole_where_state_says(size):
    """Each visible object shows its colour under its centre and owns exactly
    its full shape's pixels (so nothing overlaps or clips it); colours of
    hidden objects are nowhere in the frame."""
    h, w = size
    for seed in range(8):
        clip = make_clip(seed, 96, h, w)
        s = clip.scene
        for t in range(clip.num_frames):
            frame = clip.frames[t]
            for o in clip.objects:
                if s.colour[t, o.id] < 0:
                    assert not s.visible[t, o.id]      # not created yet
                    continue
                colour = s.colour_name(o.id, t)
                mask = colour_mask(frame, colour)
                if s.visible[t, o.id]:
                    assert tuple(frame[clip.pixel_of(o.id, t)]) == PALETTE[colour]
                    rows, cols, shape = object_pixels(s, o.id, t, h, w)
                    assert mask.sum() == shape.sum() > 0
                    assert mask[rows, cols][shape].all()
                else:
                    assert not mask.any()


def test_counts_match_distinct_objects_in_frames():
    for seed in SEEDS:
        clip = make_clip(seed, 64, 56, 56)
        qa = {q.kind: q.answer for q in clip.qa}
        assert qa["count_end"] == str(len(colours_present(clip.frames[-1])))
        assert qa["count_start"] == str(len(colours_present(clip.frames[0])))


def test_instant_events_visible_in_pixels():
    for seed in SEEDS:
        clip = make_clip(seed, 64, 56, 56)
        for e in clip.events:
            before, after = colours_present(clip.frames[e.frame - 1]), colours_present(clip.frames[e.frame])
            if e.kind == "appear":
                assert e.colour_to not in before and e.colour_to in after
            elif e.kind == "disappear":
                assert e.colour_from in before and e.colour_from not in after
            elif e.kind == "colour_change":
                assert e.colour_from in before and e.colour_from not in after
                assert e.colour_to not in before and e.colour_to in after


def test_move_direction_matches_centroid_shift():
    checked = 0
    for seed in SEEDS:
        clip = make_clip(seed, 64, 56, 56)
        s = clip.scene
        for e in clip.events:
            if e.kind != "move":
                continue
            i = e.objects[0]
            a, b = e.frame - 1, e.end_frame
            shift = (centroid(colour_mask(clip.frames[b], s.colour_name(i, b)))
                     - centroid(colour_mask(clip.frames[a], s.colour_name(i, a))))
            axis = int(np.argmax(np.abs(shift)))
            expected = np.array(DIRECTIONS[e.direction])
            assert expected[axis] != 0 and np.sign(shift[axis]) == expected[axis]
            assert abs(shift[axis]) >= 8          # clearly visible at 56x56
            checked += 1
    assert checked >= 10


@pytest.mark.parametrize("size", [(56, 56), (112, 112)])
def test_meet_ends_touching(size):
    checked = 0
    for seed in range(40):
        clip = make_clip(seed, 64, *size)
        s = clip.scene
        for e in clip.events:
            if e.kind != "meet":
                continue
            top, bottom = e.objects
            def masks(t):
                return (colour_mask(clip.frames[t], s.colour_name(top, t)),
                        colour_mask(clip.frames[t], s.colour_name(bottom, t)))
            m_top, m_bot = masks(e.end_frame)
            assert not (m_top & m_bot).any()
            assert (dilate(m_top) & m_bot).any(), f"seed {seed}: no contact"
            assert centroid(m_top)[1] < centroid(m_bot)[1]
            m_top, m_bot = masks(e.frame - 1)
            assert not (dilate(m_top) & m_bot).any(), f"seed {seed}: touching before meet"
            checked += 1
    assert checked >= 5


# --- text -------------------------------------------------------------------------

def test_descriptions_vary_and_have_sensible_length():
    descs = [make_clip(seed, 160, 56, 56).description for seed in SEEDS]
    assert len(set(descs)) == len(descs)
    openings = {" ".join(d.split()[:3]) for d in descs}
    assert len(openings) >= 4
    words = [len(d.split()) for d in descs]
    assert 45 <= min(words) and max(words) <= 230, words


def test_description_mentions_every_event():
    for seed in SEEDS:
        clip = make_clip(seed, 96, 56, 56)
        text = clip.description.lower()
        for e in clip.events:
            o = clip.objects[e.objects[0]]
            assert o.shape in text
            if e.kind == "colour_change":
                assert e.colour_to in text
            if e.kind == "move":
                assert e.direction in text or {"up": "top", "down": "bottom"}.get(e.direction, "?") in text
        # the closing sentence lists what the last frame shows
        assert text.count(".") >= len(clip.events) + 2


def test_object_names_are_unique_within_a_clip():
    for seed in SEEDS:
        clip = make_clip(seed, 160, 56, 56)
        names = [clip.scene.name(o.id) for o in clip.objects]
        assert len(set(names)) == len(names)
        assert len({(o.shape, o.size) for o in clip.objects}) == len(clip.objects)


def test_qa_answers_follow_from_events():
    kinds_seen = set()
    for seed in range(60):
        clip = make_clip(seed, 128, 56, 56)
        s, ev = clip.scene, clip.events
        of = lambda kind: [e for e in ev if e.kind == kind]  # noqa: E731
        n0 = len(colours_present(clip.frames[0]))
        for q in clip.qa:
            kinds_seen.add(q.kind)
            assert q.answer and q.answer == q.answer.strip().lower()
            if q.kind == "count_end":
                assert q.answer == str(n0 + len(of("appear")) - len(of("disappear")))
            elif q.kind == "count_appear":
                assert q.answer == str(len(of("appear")))
            elif q.kind == "colour_last_appear":
                assert q.answer == of("appear")[-1].colour_to
            elif q.kind == "colour_first_appear":
                assert q.answer == of("appear")[0].colour_to
            elif q.kind == "move_direction":
                i = name_in(q.question, clip)
                moves = [e for e in of("move") if e.objects == (i,)]
                assert len(moves) == 1 and q.answer == moves[0].direction
                assert not [e for e in of("meet") if i in e.objects]
            elif q.kind == "which_moved":
                i = object_by_name(clip, q.answer)
                assert any(e.objects == (i,) and e.direction in q.question for e in of("move"))
            elif q.kind in ("colour_change_to", "colour_change_from"):
                i = name_in(q.question, clip)
                changes = [e for e in of("colour_change") if e.objects == (i,)]
                assert len(changes) == 1
                want = changes[0].colour_to if q.kind.endswith("to") else changes[0].colour_from
                assert q.answer == want
            elif q.kind == "count_colour_changes":
                i = name_in(q.question, clip)
                assert q.answer == str(sum(e.objects == (i,) for e in of("colour_change")))
            elif q.kind == "shape_disappear":
                assert q.answer == clip.objects[of("disappear")[0].objects[0]].shape
            elif q.kind == "meet_partner":
                i = name_in(q.question, clip)
                meets = [e for e in of("meet") if i in e.objects]
                assert len(meets) == 1
                other = [j for j in meets[0].objects if j != i][0]
                assert q.answer == s.name(other)
            elif q.kind == "colour_end":
                i = name_in(q.question, clip)
                assert tuple(clip.frames[-1][clip.pixel_of(i, clip.num_frames - 1)]) == PALETTE[q.answer]
            elif q.kind == "colour_exists":
                colour = next(c for c in COLOURS if f" {c} object" in q.question)
                seen = any(colour_mask(f, colour).any() for f in clip.frames)
                assert q.answer == ("yes" if seen else "no")
    assert kinds_seen == set(QA_KINDS)


# --- video files ---------------------------------------------------------------------

def nearest_colour(pixel: np.ndarray) -> str:
    return COLOURS[int(np.argmin(((RGB - pixel.astype(np.int32)) ** 2).sum(1)))]


@pytest.mark.parametrize("num_frames,size", [(40, (112, 112)), (4, (56, 56)), (1, (56, 56))])
def test_mp4_round_trip(tmp_path, num_frames, size):
    clip = make_clip(3, num_frames, *size)
    path = write_mp4(clip.frames, tmp_path / "clip.mp4", fps=8)
    video = read_video(path)
    assert video.frames.shape == clip.frames.shape
    assert video.total_frames == num_frames
    assert np.abs(video.frames.astype(np.int32) - clip.frames).mean() < 6
    s = clip.scene
    for t in range(num_frames):
        for i in s.visible_ids(t):
            r, c = clip.pixel_of(i, t)
            assert nearest_colour(video.frames[t, r, c]) == s.colour_name(i, t)


def test_read_video_sampling(tmp_path):
    clip = make_clip(4, 40, 56, 56)
    path = write_mp4(clip.frames, tmp_path / "clip.mp4", fps=8)
    by_count = read_video(path, num_frames=8)
    assert by_count.frames.shape[0] == 8
    assert by_count.indices[0] == 0 and by_count.indices[-1] == 39
    assert np.all(np.diff(by_count.indices) > 0)
    by_fps = read_video(path, fps=2)            # 5 s of video -> 10 frames
    assert list(by_fps.indices) == list(range(0, 40, 4))
    assert np.allclose(by_fps.timestamps, np.arange(10) * 0.5)
    assert read_video(path, num_frames=64).frames.shape[0] == 40   # never repeats frames
    with pytest.raises(ValueError):
        read_video(path, num_frames=4, fps=2)


def test_write_mp4_rejects_odd_size(tmp_path):
    with pytest.raises(ValueError, match="even"):
        write_mp4(np.zeros((2, 55, 56, 3), np.uint8), tmp_path / "odd.mp4")
    assert not (tmp_path / "odd.mp4").exists()


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(VideoNotFoundError):
        read_video(tmp_path / "nope.mp4")
    with pytest.raises(FileNotFoundError):      # also a FileNotFoundError
        read_video(tmp_path / "nope.mp4")
    with pytest.raises(VideoNotFoundError):
        read_video(tmp_path)
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(EmptyVideoFileError):
        read_video(tmp_path / "empty.mp4")


def test_corrupt_and_non_video_files(tmp_path):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(CorruptVideoError):
        read_video(junk)
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n" * 100)
    with pytest.raises(CorruptVideoError):
        read_video(text)
    audio = tmp_path / "sound.m4a"
    with av.open(str(audio), "w") as c:
        stream = c.add_stream("aac", rate=16000)
        for k in range(4):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32),
                                               format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 16000, k * 1024
            c.mux(stream.encode(frame))
        c.mux(stream.encode(None))
    with pytest.raises(NoVideoStreamError):
        read_video(audio)


@pytest.mark.parametrize("extra", [4, 120])
def test_video_with_no_decodable_frames(tmp_path, extra):
    """Cut a faststart mp4 just inside its media data: the header still
    promises a video stream, but no frame can be decoded."""
    good = write_mp4(make_clip(5, 8, 56, 56).frames, tmp_path / "good.mp4")
    data = good.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: data.index(b"mdat") + extra])
    with pytest.raises(NoFramesError):
        read_video(cut)


def test_errors_share_a_base_class(tmp_path):
    for exc in (VideoNotFoundError, EmptyVideoFileError, CorruptVideoError,
                NoVideoStreamError, NoFramesError):
        assert issubclass(exc, VideoDecodeError)


def test_event_timing_of_a_seed_is_stable():
    """A seed's timeline is part of the data's identity (values from before the testbed v2 change)."""
    events = make_clip(42, 32, 32, 32).events
    assert [(e.kind, e.frame, e.end_frame) for e in events] == [("appear", 8, 8), ("appear", 15, 15),
                                                                ("appear", 30, 30)]
