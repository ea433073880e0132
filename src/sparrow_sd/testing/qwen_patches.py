"""Qwen-VL video patch layout for the tiny Qwen2-VL / Qwen2.5-VL test models.

Qwen2-VL's vision tower does not take frames: it takes a 2-D tensor of
flattened space-time patches in one exact row order, plus the grid they came
from. Getting the order wrong does not raise anything (the shapes still fit),
it silently scrambles the video, so the layout lives in exactly one place.

``geometry`` is anything with ``patch_size``, ``temporal_patch_size`` and
``spatial_merge_size`` attributes, such as a Hugging Face ``Qwen2VLVisionConfig``.
"""

from __future__ import annotations

import math

import torch

from ..errors import InvalidInputError


def qwen_grid(geometry, num_frames: int, height: int, width: int) -> tuple[int, int, int]:
    """(grid_t, grid_h, grid_w) in patches, frames padded like the Qwen processor.

    The frame count is rounded up to a multiple of ``temporal_patch_size``
    (the processor repeats the last frame); height and width must be
    multiples of ``patch_size * spatial_merge_size`` so merge groups tile
    the frame. Raises ``InvalidInputError`` (a ``ValueError``) otherwise.
    """
    unit = geometry.patch_size * geometry.spatial_merge_size
    if num_frames < 1:
        raise InvalidInputError(f"a video needs at least one frame, got {num_frames}")
    if height % unit or width % unit:
        raise InvalidInputError(
            f"height and width must be multiples of patch_size*merge_size={unit}, got {height}x{width}"
        )
    grid_t = math.ceil(num_frames / geometry.temporal_patch_size)
    return grid_t, height // geometry.patch_size, width // geometry.patch_size


def qwen_patchify(video: torch.Tensor, geometry) -> tuple[torch.Tensor, torch.Tensor]:
    """(T, C, H, W) frames -> flattened patches and their (1, 3) grid.

    Rows are ordered (t, h-block, w-block, h-in-block, w-in-block) so that
    every ``merge**2`` consecutive rows form one merge group, as the Qwen video
    processor lays them out; each row is (C, temporal, patch, patch) flattened,
    which is the order ``PatchEmbed`` reshapes it back into. An odd frame count
    is padded by repeating the last frame.
    """
    tps, p, m = geometry.temporal_patch_size, geometry.patch_size, geometry.spatial_merge_size
    frames, channels, height, width = video.shape
    grid_t, grid_h, grid_w = qwen_grid(geometry, frames, height, width)
    pad = grid_t * tps - frames
    if pad:
        video = torch.cat([video, video[-1:].expand(pad, -1, -1, -1)], dim=0)
    x = video.reshape(grid_t, tps, channels, grid_h // m, m, p, grid_w // m, m, p)
    x = x.permute(0, 3, 6, 4, 7, 2, 1, 5, 8)
    patches = x.reshape(grid_t * grid_h * grid_w, channels * tps * p * p)
    grid = torch.tensor([[grid_t, grid_h, grid_w]], dtype=torch.long)
    return patches, grid
