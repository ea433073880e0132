"""SynthVideo: a procedural video world with exact ground truth.

Seeded clips of coloured shapes that appear, disappear, move, change colour
and meet, rendered as uint8 frames (or real H.264 files) together with the
event list, a detailed temporally ordered description and short-answer
questions.  It is the training and evaluation data for the small video LLM
that sparrow-sd's drafts are measured on, where every answer can be checked
exactly and every clip can be regenerated from its seed.
"""

from .clip import Clip, make_clip
from .describe import describe_scene
from .planner import MAX_DESCRIBED_EVENTS, bounded_num_events, default_num_events, make_scene
from .qa import QA, QA_KINDS, make_qa
from .render import render_frames
from .scene import Event, ObjectSpec, Scene
from .video_io import write_mp4
from ..video import (  # user video decoding lives in sparrow_sd.video; re-exported for old callers
    CorruptVideoError,
    DecodedVideo,
    EmptyVideoFileError,
    NoFramesError,
    NoVideoStreamError,
    VideoDecodeError,
    VideoNotFoundError,
    read_video,
)
from .vocab import BACKGROUND, COLOURS, DIRECTIONS, EVENT_KINDS, PALETTE, SHAPES, SIZES

__all__ = [
    "BACKGROUND", "COLOURS", "DIRECTIONS", "EVENT_KINDS", "PALETTE", "SHAPES", "SIZES",
    "Clip", "make_clip", "Scene", "ObjectSpec", "Event", "make_scene", "default_num_events",
    "bounded_num_events", "MAX_DESCRIBED_EVENTS",
    "render_frames", "describe_scene", "QA", "QA_KINDS", "make_qa",
    "write_mp4", "read_video", "DecodedVideo", "VideoDecodeError", "VideoNotFoundError",
    "EmptyVideoFileError", "CorruptVideoError", "NoVideoStreamError", "NoFramesError",
]
