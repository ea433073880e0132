"""Target adapters (one per model, stateless): which Hugging Face Video LLMs sparrow-sd can drive, and how;
and the per-request :class:`TargetSession` (cache, positions, prefill)."""

from __future__ import annotations

from torch import nn

from ..errors import UnsupportedModelError
from .base import TargetAdapter, TargetPrefill, TargetVerify
from .llava_onevision import LlavaOnevisionTarget
from .qwen_vl import QwenVLTarget
from .session import TargetSession

ADAPTERS: tuple[type[TargetAdapter], ...] = (QwenVLTarget, LlavaOnevisionTarget)


def supported_model_classes() -> list[str]:
    return [name for adapter in ADAPTERS for name in adapter.model_class_names]


def wrap_target(model: nn.Module | TargetAdapter) -> TargetAdapter:
    """The adapter for ``model``, chosen by its Hugging Face class (an adapter is returned as it is).

    Adapters hold no request state: wrap a model once and pass the adapter around.
    """
    if isinstance(model, TargetAdapter):
        return model
    name = type(model).__name__
    for adapter in ADAPTERS:
        if name in adapter.model_class_names:
            return adapter(model)
    raise UnsupportedModelError(
        f"{name} is not a supported target; supported: {', '.join(supported_model_classes())}"
    )


__all__ = ["TargetAdapter", "TargetPrefill", "TargetSession", "TargetVerify", "wrap_target",
           "supported_model_classes"]
