"""Where datagen's prompts come from: SynthVideo clips, or a user's JSONL of real videos.

A source yields :class:`~sparrow_sd.training.datagen.Sample` objects (an id and
the target's model inputs); ``make_inputs(question, frames)`` is the target's
processor call (the testbed's :class:`TestbedProcessor` is one).

The JSONL format, one sample per line::

    {"id": "clip-001", "video": "videos/clip-001.mp4",
     "conversations": [{"role": "user", "content": "Describe the video."}, ...]}

Only the first user turn is used: the target writes the response itself.
Relative video paths are resolved against the JSONL file's folder.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np

from ..errors import InvalidInputError
from ..synth import make_clip
from ..video import read_video
from .datagen import Sample

DRAFT_DATA_SEED_BASE = 2_000_000  # testbed training uses 1,000,000+, its evaluation 100,000+


def synth_samples(make_inputs: Callable, count: int, frames: Sequence[int] = (6, 8, 12, 16),
                  frame_size: tuple[int, int] = (144, 144), describe_prob: float = 0.75,
                  prompts: Sequence[str] = ("Describe the video in detail.",),
                  seed: int = 0) -> Iterator[Sample]:
    """``count`` SynthVideo prompts: mostly the description prompt, otherwise one of the clip's questions."""
    rng = np.random.default_rng(seed)
    for index in range(count):
        clip_seed = DRAFT_DATA_SEED_BASE + seed * 100_003 + index
        num_frames = int(rng.choice(frames))
        clip = make_clip(clip_seed, num_frames=num_frames, height=frame_size[0], width=frame_size[1])
        if rng.random() < describe_prob or not clip.qa:
            question = prompts[int(rng.integers(len(prompts)))]
        else:
            question = clip.qa[int(rng.integers(len(clip.qa)))].question
        yield Sample(f"synth-{clip_seed}", make_inputs(question, clip.frames))


def jsonl_samples(path: str | Path, make_inputs: Callable, num_frames: int | None = 16,
                  fps: float | None = None) -> Iterator[Sample]:
    """Samples from a JSONL file of real videos (decoded with PyAV; see :func:`read_video`)."""
    path = Path(path)
    if not path.is_file():
        raise InvalidInputError(f"data file not found: {path}")
    for line_no, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            sample_id, video = str(entry["id"]), entry["video"]
            question = next(t["content"] for t in entry["conversations"] if t["role"] == "user")
        except (json.JSONDecodeError, KeyError, StopIteration, TypeError) as err:
            raise InvalidInputError(f"{path}:{line_no}: expected {{id, video, conversations: [{{role: user, "
                                    f"content}}]}}: {err}") from err
        video_path = Path(video) if Path(video).is_absolute() else path.parent / video
        frames = read_video(video_path, num_frames=num_frames, fps=fps).frames
        yield Sample(sample_id, make_inputs(question, frames))
