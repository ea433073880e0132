"""Where datagen's prompts come from: SynthVideo clips, or a user's JSONL of real videos.

A source yields :class:`~sparrow_sd.training.datagen.Sample` objects (an id and
the target's model inputs); ``make_inputs(question, frames)`` is the target's
processor call (the testbed's :class:`TestbedProcessor` is one).

The JSONL format, one sample per line::

    {"id": "clip-001", "video": "videos/clip-001.mp4",
     "conversations": [{"role": "user", "content": "Describe the video."}, ...]}

Only the first user turn is used: the target writes the response itself.
Relative video paths are resolved against the JSONL file's folder. A video
that cannot be read stops the run with its ``file:line``, or, with
``skip_bad``, is left out and listed in ``notes["skipped_videos"]`` (which
``run_datagen`` keeps in the run's record); a video's decoding warnings (a
truncated file) go to ``notes["video_warnings"]``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np

from ..errors import InvalidInputError
from ..synth import bounded_num_events, make_clip
from ..video import VideoDecodeError, read_video
from .datagen import Sample

DRAFT_DATA_SEED_BASE = 2_000_000  # testbed training uses 1,000,000+, its evaluation 100,000+


def synth_samples(make_inputs: Callable, count: int, frames: Sequence[int] = (6, 8, 12, 16),
                  frame_size: tuple[int, int] = (112, 112), describe_prob: float = 0.75,
                  prompts: Sequence[str] = ("Describe this video in detail.",),
                  seed: int = 0) -> Iterator[Sample]:
    """``count`` SynthVideo prompts: mostly the description prompt, otherwise one of the clip's questions."""
    rng = np.random.default_rng(seed)
    for index in range(count):
        clip_seed = DRAFT_DATA_SEED_BASE + seed * 100_003 + index
        num_frames = int(rng.choice(frames))
        clip = make_clip(clip_seed, num_frames=num_frames, height=frame_size[0], width=frame_size[1],
                         num_events=bounded_num_events(num_frames))
        if rng.random() < describe_prob or not clip.qa:
            question = prompts[int(rng.integers(len(prompts)))]
        else:
            question = clip.qa[int(rng.integers(len(clip.qa)))].question
        yield Sample(f"synth-{clip_seed}", make_inputs(question, clip.frames))


def jsonl_samples(path: str | Path, make_inputs: Callable, num_frames: int | None = 16,
                  fps: float | None = None, skip_bad: bool = False, notes: dict | None = None,
                  log: Callable[[str], None] | None = None) -> Iterator[Sample]:
    """Samples from a JSONL file of real videos (decoded with PyAV; see :func:`read_video`)."""
    path = Path(path)
    notes = notes if notes is not None else {}
    if not path.is_file():
        raise InvalidInputError(f"data file not found: {path}")
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise InvalidInputError(f"{path} cannot be read as a JSONL text file ({err})") from None
    for line_no, line in enumerate(lines, 1):
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
        try:
            decoded = read_video(video_path, num_frames=num_frames, fps=fps)
        except VideoDecodeError as err:
            if not skip_bad:
                raise InvalidInputError(f"{path}:{line_no}: sample {sample_id!r}: {err}; fix or remove the line, "
                                        "or pass --skip-bad-videos to leave such videos out") from None
            notes.setdefault("skipped_videos", []).append(
                {"line": line_no, "id": sample_id, "video": str(video_path), "error": str(err)})
            if log:
                log(f"skipped {path}:{line_no} (sample {sample_id!r}): {err}")
            continue
        for warning in decoded.warnings:
            notes.setdefault("video_warnings", []).append(f"{path}:{line_no}: {warning}")
            if log:
                log(f"warning: {path}:{line_no}: {warning}")
        yield Sample(sample_id, make_inputs(question, decoded.frames))
