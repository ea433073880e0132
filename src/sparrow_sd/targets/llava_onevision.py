"""Adapter for LLaVA-OneVision: plain 1-D RoPE positions.

A video of F frames occupies ``F * ceil(p/2)^2 + 1`` placeholder tokens, where
``p = image_size // patch_size``: each frame's patch grid is pooled 2x2
(bilinear) and one "newline" embedding closes the video.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch

from .base import TargetAdapter


class LlavaOnevisionTarget(TargetAdapter):
    model_class_names = ("LlavaOnevisionForConditionalGeneration",)
    vision_input_keys = ("pixel_values_videos",)

    def expected_video_tokens(self, inputs: Mapping[str, torch.Tensor]) -> int:
        vision = self.model.config.vision_config
        side = math.ceil((vision.image_size // vision.patch_size) / 2)
        frames = inputs["pixel_values_videos"].shape[1]
        return frames * side * side + 1

    def prompt_positions(self, inputs: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
        return torch.arange(inputs["input_ids"].shape[1])[None], 0
