"""Adapter for Qwen2-VL and Qwen2.5-VL: multimodal RoPE (M-RoPE).

Prompt positions come from the model's own ``get_rope_index``: (3, 1, L) ids
(temporal, height, width) in which a video occupies far fewer distinct positions
than tokens. Every token after the prompt has its three components equal and
continues from the prompt's last position, one per token: that is how Hugging
Face's ``generate`` numbers them in transformers 5.x. (The model's own cached
forward would instead continue from ``max(position) + 1`` via its rope delta; the
two differ whenever a video's temporal positions reach past the text after it,
the usual case for long videos, and ``generate`` is the reference we must match.)
Tree nodes at depth d get ``last + (length - L) + d + 1``, i.e. ``length + d`` plus
the offset that :meth:`prompt_positions` returns.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from ..errors import InvalidInputError
from .base import TargetAdapter

# Values of `mm_token_type_ids` as the Qwen-VL processors write them.
_TEXT, _IMAGE, _VIDEO = 0, 1, 2


class QwenVLTarget(TargetAdapter):
    model_class_names = ("Qwen2VLForConditionalGeneration", "Qwen2_5_VLForConditionalGeneration")
    vision_input_keys = ("pixel_values_videos", "video_grid_thw")
    mrope = True

    def expected_video_tokens(self, inputs: Mapping[str, torch.Tensor]) -> int:
        grid = inputs.get("video_grid_thw")
        if grid is None:
            raise InvalidInputError("Qwen-VL video inputs need 'video_grid_thw' (the processor's output)")
        merge = self.model.config.vision_config.spatial_merge_size
        return int(grid.prod(-1).sum()) // (merge * merge)

    def _token_types(self, input_ids: torch.Tensor) -> torch.Tensor:
        types = torch.full_like(input_ids, _TEXT, dtype=torch.int)
        types[input_ids == self.video_token_id] = _VIDEO
        image_id = getattr(self.model.config, "image_token_id", None)
        if image_id is not None:
            types[input_ids == image_id] = _IMAGE
        return types

    def prompt_positions(self, inputs: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
        input_ids = inputs["input_ids"]
        grid = inputs.get("video_grid_thw")
        if grid is None:  # text only: M-RoPE reduces to plain RoPE
            positions = torch.arange(input_ids.shape[1]).view(1, 1, -1).expand(3, 1, -1)
            return positions, 0
        extra = {}
        if inputs.get("second_per_grid_ts") is not None:
            extra["second_per_grid_ts"] = inputs["second_per_grid_ts"]
        positions, _ = self.base.get_rope_index(
            input_ids,
            mm_token_type_ids=self._token_types(input_ids),
            video_grid_thw=grid,
            **extra,
        )
        return positions, int(positions[0, 0, -1]) + 1 - input_ids.shape[1]
