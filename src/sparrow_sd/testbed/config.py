"""The testbed target's settings, and the visual token counts they imply.

The testbed is the Video LLM that sparrow-sd's drafts are trained and measured
on where no real Video LLM weights can be fetched: Hugging Face's
``Qwen2VLForConditionalGeneration`` with SmolLM2-135M-Instruct as its language
model and a small vision tower trained here. Everything that is not a
language weight (vision geometry, tower size, special tokens, prompt format,
pixel normalisation) is fixed by :class:`TestbedConfig`, so the processor and
the model are built in code from one object and cannot disagree.

Vision geometry (the default), chosen so that the token counts of the
Sparrow setting appear with clip lengths a 2-core CPU can render:

- frames 144x144 px, patch 4 px, temporal patch 2 frames, 2x2 spatial merge;
- a patch grid of 36x36 per frame pair, merged to 18x18 = **324 visual
  tokens per 2 frames** (odd frame counts are padded by one repeated frame);
- 6 frames -> 972 tokens, 8 frames -> 1,296 (the "about 1k" short clips);
- 128 frames -> 20,736, 144 -> 23,328, 154 -> 24,948, 160 -> 25,920 (the
  "about 25k" long videos of the paper);
- M-RoPE keeps positions small: inside the video the temporal row advances
  once per frame pair (at most 80 for 160 frames) and the spatial rows span
  18 positions, and the text after the video resumes only 18 positions after
  the text before it (transformers 5.x counts ``max(h, w) / merge``), so a
  25k-token prompt uses positions below a few hundred, well inside the 8k
  SmolLM2 was trained on.

Vision tower: depth 4, width 192 (6 heads of 32), MLP ratio 4, then the 2x2
patch merger projecting to SmolLM2's width 576: about 2.8M parameters, small
enough to train on a 2-core CPU.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

from ..errors import InvalidInputError
from .patches import qwen_grid

# Added to SmolLM2's 49,152-token vocabulary, in this order (ids 49152-49155).
VISION_START = "<|vision_start|>"
VISION_END = "<|vision_end|>"
IMAGE_PAD = "<|image_pad|>"
VIDEO_PAD = "<|video_pad|>"

# SmolLM2-Instruct's own default system prompt (from its chat template), so a
# text-only prompt is exactly what the language model was tuned on.
SMOLLM2_SYSTEM_PROMPT = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"


@dataclass(frozen=True)
class TestbedConfig:
    """Everything about the testbed target that is not a SmolLM2 weight.

    The attribute names ``patch_size``, ``temporal_patch_size`` and
    ``spatial_merge_size`` match Hugging Face's ``Qwen2VLVisionConfig``, so a
    ``TestbedConfig`` can be passed wherever a vision config's geometry is
    read (see :mod:`sparrow_sd.testbed.patches`).

    ``seed`` fixes the random initialisation of the vision tower, the merger
    and the added token embeddings, so an untrained testbed is reproducible.
    ``mrope_section`` splits SmolLM2's 32 rotary frequencies over the
    (temporal, height, width) rows in Qwen2-VL's 16:24:24 proportion.
    """

    __test__ = False  # not a pytest test class despite the name

    frame_size: tuple[int, int] = (144, 144)
    patch_size: int = 4
    temporal_patch_size: int = 2
    spatial_merge_size: int = 2
    vision_depth: int = 4
    vision_width: int = 192
    vision_heads: int = 6
    vision_mlp_ratio: int = 4
    mrope_section: tuple[int, int, int] = (8, 12, 12)
    special_tokens: tuple[str, str, str, str] = (VISION_START, VISION_END, IMAGE_PAD, VIDEO_PAD)
    system_prompt: str = SMOLLM2_SYSTEM_PROMPT
    image_mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    image_std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    seed: int = 0

    def __post_init__(self) -> None:
        height, width = self.frame_size
        qwen_grid(self, 1, height, width)  # frame size must tile into merge groups
        if self.vision_width % self.vision_heads or (self.vision_width // self.vision_heads) % 4:
            raise InvalidInputError(
                "vision_width / vision_heads must be a multiple of 4 (2-D rotary embedding), "
                f"got {self.vision_width} / {self.vision_heads}"
            )
        if len(set(self.special_tokens)) != 4:
            raise InvalidInputError(f"need 4 distinct special tokens, got {self.special_tokens}")

    @property
    def vision_start_token(self) -> str:
        return self.special_tokens[0]

    @property
    def vision_end_token(self) -> str:
        return self.special_tokens[1]

    @property
    def image_token(self) -> str:
        return self.special_tokens[2]

    @property
    def video_token(self) -> str:
        return self.special_tokens[3]

    @property
    def tokens_per_temporal_patch(self) -> int:
        """Visual tokens one frame pair (one temporal patch) occupies: 324 by default."""
        return self.num_video_tokens(self.temporal_patch_size)

    def video_grid(self, num_frames: int) -> tuple[int, int, int]:
        """(grid_t, grid_h, grid_w) of a clip of ``num_frames`` frames at ``frame_size``."""
        return qwen_grid(self, num_frames, *self.frame_size)

    def num_video_tokens(self, num_frames: int) -> int:
        """Placeholder tokens a clip of ``num_frames`` frames occupies in ``input_ids``."""
        grid_t, grid_h, grid_w = self.video_grid(num_frames)
        return grid_t * grid_h * grid_w // self.spatial_merge_size**2

    def frames_for_tokens(self, tokens: int) -> int:
        """The frame count (a multiple of the temporal patch) closest to ``tokens`` visual tokens."""
        steps = max(1, round(tokens / self.tokens_per_temporal_patch))
        return steps * self.temporal_patch_size

    def to_json(self) -> str:
        """A JSON form, stored in saved vision weights so they say what they were built for."""
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> TestbedConfig:
        """Inverse of :meth:`to_json` (lists come back as tuples)."""
        raw = json.loads(text)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(raw) - known
        if unknown:
            raise InvalidInputError(f"unknown testbed settings {sorted(unknown)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()})
