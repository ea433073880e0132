"""Test helpers: tiny random Video LLMs and video inputs built offline."""

from .tiny_inputs import (
    default_frame_size,
    frames_for_tokens,
    make_video_inputs,
    num_video_tokens,
    random_video,
    video_block_span,
)
from .tiny_models import ARCHS, TinySpec, build_tiny_model, spec_from_config, tiny_config, tiny_spec

__all__ = [
    "ARCHS",
    "TinySpec",
    "build_tiny_model",
    "default_frame_size",
    "frames_for_tokens",
    "make_video_inputs",
    "num_video_tokens",
    "random_video",
    "spec_from_config",
    "tiny_config",
    "tiny_spec",
    "video_block_span",
]
