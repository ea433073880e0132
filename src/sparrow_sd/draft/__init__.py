"""The Sparrow draft: model, configuration, text-anchored context, cache and files."""

from .config import VISUAL_MODES, DraftConfig
from .context import DraftContext, build_draft_context
from .io import load_draft, pack_draft, save_draft
from .model import Draft

__all__ = [
    "VISUAL_MODES",
    "DraftConfig",
    "DraftContext",
    "Draft",
    "build_draft_context",
    "load_draft",
    "pack_draft",
    "save_draft",
]
