"""Video inputs for the tiny models of :mod:`.tiny_models` (and real configs of the same classes).

Raw frames become exactly what each class's ``forward`` expects: the
placeholder run in ``input_ids`` (with Qwen's vision start/end markers), and
the pixel tensors (Qwen's flattened patches with their grid, LLaVA-OneVision's
frames). The facts about the classes these rely on are written down in
:mod:`.tiny_models`.
"""

from __future__ import annotations

import math

import torch

# the Qwen-VL patch layout lives in one place (a wrong order scrambles silently)
from .qwen_patches import qwen_grid, qwen_patchify
from .tiny_models import QWEN_ARCHS, check_arch, spec_from_config


def _config_of(model_or_config):
    return getattr(model_or_config, "config", model_or_config)


def default_frame_size(arch: str, config) -> tuple[int, int]:
    """A small valid (height, width) for ``arch``.

    Qwen: two merge groups per side (4 tokens per temporal patch).
    LLaVA-OneVision: the vision tower's fixed ``image_size``.
    """
    check_arch(arch)
    vc = _config_of(config).vision_config
    if arch in QWEN_ARCHS:
        side = 2 * vc.patch_size * vc.spatial_merge_size
        return side, side
    return vc.image_size, vc.image_size


def _llava_tokens_per_frame(config, height: int, width: int) -> int:
    vc = config.vision_config
    if height != vc.image_size or width != vc.image_size:
        raise ValueError(
            f"LLaVA-OneVision frames must be exactly image_size={vc.image_size} square, got {height}x{width}"
        )
    if config.vision_feature_select_strategy != "full":
        raise ValueError("only vision_feature_select_strategy='full' is supported for video")
    side = vc.image_size // vc.patch_size
    return math.ceil(side / 2) ** 2


def num_video_tokens(arch: str, model_config, num_frames: int, height: int, width: int) -> int:
    """Number of video placeholder tokens one video occupies in ``input_ids``.

    Works on tiny and real configs. Qwen: grid_t * (H/p) * (W/p) / merge**2
    with grid_t = ceil(frames / temporal_patch_size). LLaVA-OneVision:
    frames * ceil(g/2)**2 + 1 (one trailing newline vector), g = image_size/p.
    """
    check_arch(arch)
    if num_frames < 1:
        raise ValueError("num_frames must be at least 1")
    config = _config_of(model_config)
    if arch in QWEN_ARCHS:
        vc = config.vision_config
        grid_t, grid_h, grid_w = qwen_grid(vc, num_frames, height, width)
        return grid_t * grid_h * grid_w // vc.spatial_merge_size**2
    return num_frames * _llava_tokens_per_frame(config, height, width) + 1


def frames_for_tokens(
    arch: str, config, target_tokens: int, height: int | None = None, width: int | None = None
) -> int:
    """Frame count whose video is closest to ``target_tokens`` placeholders.

    Frame size defaults to ``default_frame_size``. Qwen frame counts are
    multiples of ``temporal_patch_size`` (no padded frame). At least one
    temporal step is always returned.
    """
    config = _config_of(config)
    if height is None or width is None:
        height, width = default_frame_size(arch, config)
    step = config.vision_config.temporal_patch_size if arch in QWEN_ARCHS else 1
    fixed = 0 if arch in QWEN_ARCHS else 1  # LLaVA-OneVision's trailing newline
    per_step = num_video_tokens(arch, config, step, height, width) - fixed
    steps = max(1, round((target_tokens - fixed) / per_step))
    return steps * step


def random_video(num_frames: int, height: int, width: int, seed: int = 0, channels: int = 3) -> torch.Tensor:
    """Random frames (T, C, H, W) in [-1, 1], roughly like normalized pixels."""
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(num_frames, channels, height, width, generator=gen) * 2 - 1


def make_video_inputs(
    arch: str,
    model_or_config,
    num_frames: int,
    height: int | None = None,
    width: int | None = None,
    prompt_ids_before: list[int] | tuple[int, ...] = (),
    prompt_ids_after: list[int] | tuple[int, ...] = (),
    seed: int = 0,
    video: torch.Tensor | None = None,
    dtype: torch.dtype | None = None,
) -> dict[str, torch.Tensor]:
    """Inputs for ``model(**inputs)`` / ``model.generate(**inputs)``, batch 1.

    ``input_ids`` = before + video block + after, where the video block is the
    placeholder run, wrapped in vision start/end tokens for Qwen (as Qwen's
    chat template does) and bare for LLaVA-OneVision. Frames are random
    (from ``seed``) unless ``video`` (T, C, H, W) is given; T/H/W then come from
    it. ``dtype`` defaults to the model's dtype (float32 for a bare config).

    Qwen adds ``pixel_values_videos`` (patches), ``video_grid_thw`` and
    ``mm_token_type_ids`` (2 on placeholders), plus ``second_per_grid_ts`` for
    Qwen2.5-VL; LLaVA-OneVision adds ``pixel_values_videos`` (1, T, C, S, S).
    """
    check_arch(arch)
    config = _config_of(model_or_config)
    if dtype is None:  # a config's own ``dtype`` may be None or a string
        dtype = getattr(model_or_config, "dtype", None)
        dtype = dtype if isinstance(dtype, torch.dtype) and model_or_config is not config else torch.float32
    if video is None:
        if height is None or width is None:
            height, width = default_frame_size(arch, config)
        video = random_video(num_frames, height, width, seed)
    num_frames, _, height, width = video.shape
    spec = spec_from_config(arch, config)
    n_video = num_video_tokens(arch, config, num_frames, height, width)

    block = [spec.video_token_id] * n_video
    if arch in QWEN_ARCHS:
        block = [spec.vision_start_token_id, *block, spec.vision_end_token_id]
    ids = torch.tensor([[*prompt_ids_before, *block, *prompt_ids_after]], dtype=torch.long)
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}

    if arch in QWEN_ARCHS:
        patches, grid = qwen_patchify(video, config.vision_config)
        inputs["pixel_values_videos"] = patches.to(dtype)
        inputs["video_grid_thw"] = grid
        inputs["mm_token_type_ids"] = (ids == spec.video_token_id).long() * 2
        if arch == "qwen2_5_vl":
            # seconds per temporal patch: 2 frames at the processor's 2 fps
            inputs["second_per_grid_ts"] = torch.tensor([1.0])
    else:
        _llava_tokens_per_frame(config, height, width)  # validates the size
        inputs["pixel_values_videos"] = video.unsqueeze(0).to(dtype)
    return inputs


def video_block_span(arch: str, model_or_config, input_ids: torch.Tensor) -> tuple[int, int]:
    """[start, end) of the video placeholder run in a 1-D or (1, L) prompt.

    Only the placeholders: Qwen's vision start/end markers lie just outside.
    """
    spec = spec_from_config(arch, _config_of(model_or_config))
    ids = input_ids.reshape(-1)
    where = (ids == spec.video_token_id).nonzero().flatten()
    if where.numel() == 0:
        raise ValueError("no video placeholder in input_ids")
    start, end = int(where[0]), int(where[-1]) + 1
    if end - start != where.numel():
        raise ValueError("video placeholders are not one contiguous run")
    return start, end
