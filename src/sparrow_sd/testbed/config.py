"""The testbed target's settings, and the visual token counts they imply.

The testbed is the Video LLM that sparrow-sd's drafts are trained and measured
on where no real Video LLM weights can be fetched: Hugging Face's
``LlavaOnevisionForConditionalGeneration`` with Qwen2.5-Coder-0.5B-Instruct
(a 32k-context Qwen2) as its language model and a *scene reader* as its
visual encoder. Everything that is not a language weight (frame geometry,
tokens per frame, prompt format, pixel scaling, the filler) is fixed by
:class:`TestbedConfig`, so the processor and the model are built in code from
one object and cannot disagree.

Geometry: LLaVA-OneVision gives a video of F frames ``F * ceil(p/2)**2 + 1``
placeholder tokens, ``p = image_size // patch_size`` (each frame's patch grid
is pooled 2x2 and one newline embedding closes the video). With 112x112
frames and a 4-pixel patch, p = 28 and every frame takes **196 tokens**, as in
LLaVA-OneVision-7B:

- 5 frames -> 981 tokens, 16 -> 3,137, 66 -> 12,937, 128 -> 25,089.

Pixels are scaled to 0..255 floats (mean 0, std 1/255): integers that every
dtype from bf16 up holds exactly, so the scene reader sees the same pixels
whatever dtype the model runs in.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass

from ..errors import InvalidInputError
from .scene_lines import MOVE_STYLES

# Qwen2's own special tokens; its tokenizer already holds them.
VIDEO_PAD = "<|video_pad|>"
IMAGE_PAD = "<|image_pad|>"

SYSTEM_PROMPT = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."  # Qwen2.5 Instruct default
DESCRIBE_PROMPT = "Describe this video in detail."
UNCHANGED_FRAMES = ("repeat", "filler")
REPETITION_PENALTY = 1.1
"""The testbed's generation config: greedy with this repetition penalty (Hugging Face's
``repetition_penalty``, which the engine reproduces exactly). Qwen's 0.5B instruct releases
ship 1.1 in their generation config; the GGUF carries none. Measured on v2.3 (docs/testbed.md):
without it, greedy descriptions of some 3k-token clips looped on one sentence to the token
limit; with 1.1 they end. A generation setting, not a trained one: any LoRA loads with it."""



@dataclass(frozen=True)
class TestbedConfig:
    """Everything about the testbed target that is not a language weight.

    ``filler`` is the text whose tokens pad each frame's scene line to
    ``tokens_per_frame`` (the line itself is at most about 60 tokens).
    ``frame_size`` is (height, width) = (image_size, image_size): LLaVA-OneVision
    videos are square at the vision tower's size.

    ``unchanged_frames``: what a frame in which nothing changed shows, between
    the first and the last frame. ``"repeat"`` (the default) writes its full
    scene line (the objects again); ``"filler"`` leaves it all filler, the same
    facts without the repetition.

    ``moves``: a move is written on ``"every_frame"`` it spans, or ``"once"``
    where it starts (with a stop where it ends). Measured on the builds
    (docs/testbed.md): v2.1 (``repeat``) and v2.2 (``filler``) both looped
    on moves written on every frame; v2.3 writes each event once, in the
    filler format. Weights written before a setting existed read as
    ``"repeat"`` / ``"every_frame"``, which is what they were trained on.
    """

    __test__ = False  # not a pytest test class despite the name

    image_size: int = 112
    patch_size: int = 4
    filler: str = " "
    system_prompt: str = SYSTEM_PROMPT
    describe_prompt: str = DESCRIBE_PROMPT
    unchanged_frames: str = "filler"
    moves: str = "once"

    def __post_init__(self) -> None:
        if self.unchanged_frames not in UNCHANGED_FRAMES:
            raise InvalidInputError(f"unchanged_frames must be one of {UNCHANGED_FRAMES}, "
                                    f"got {self.unchanged_frames!r}")
        if self.moves not in MOVE_STYLES:
            raise InvalidInputError(f"moves must be one of {MOVE_STYLES}, got {self.moves!r}")
        if self.image_size % self.patch_size:
            raise InvalidInputError(f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")
        if not self.filler:
            raise InvalidInputError("the filler text must not be empty")

    @property
    def frame_size(self) -> tuple[int, int]:
        return self.image_size, self.image_size

    @property
    def tokens_per_frame(self) -> int:
        """Visual tokens one frame occupies: 196 by default (28x28 patches pooled 2x2)."""
        side = math.ceil(self.image_size // self.patch_size / 2)
        return side * side

    def num_video_tokens(self, num_frames: int) -> int:
        """Placeholder tokens a clip of ``num_frames`` frames occupies in ``input_ids``."""
        if num_frames < 1:
            raise InvalidInputError(f"a video needs at least one frame, got {num_frames}")
        return num_frames * self.tokens_per_frame + 1

    def frames_for_tokens(self, tokens: int) -> int:
        """The frame count whose video is closest to ``tokens`` visual tokens."""
        return max(1, round((tokens - 1) / self.tokens_per_frame))

    def to_json(self) -> str:
        """A JSON form, stored with the trained weights so they say what they were built for."""
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> TestbedConfig:
        """Inverse of :meth:`to_json`; refuses unknown settings."""
        raw = json.loads(text)
        unknown = set(raw) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise InvalidInputError(f"unknown testbed settings {sorted(unknown)}")
        raw.setdefault("unchanged_frames", "repeat")  # written before the setting existed: every line in full
        raw.setdefault("moves", "every_frame")        # likewise: a move on every frame it spans
        return cls(**raw)

    def differences(self, other: TestbedConfig) -> list[str]:
        """``name: mine != theirs`` for every setting that differs."""
        return [
            f"{f.name}: {getattr(self, f.name)!r} != {getattr(other, f.name)!r}"
            for f in dataclasses.fields(self)
            if getattr(self, f.name) != getattr(other, f.name)
        ]
