"""sparrow-sd: lossless speculative decoding for Video LLMs with text-anchored drafts.

Where things live:

* ``targets/``: adapters over the unmodified Hugging Face Video LLMs (prefill, verify, commit);
* ``kv_cache.py``: the target's preallocated, position-indexed cache;
* ``draft/``: the Sparrow draft model, its config, its text-anchored context, its cache, its files;
* ``tree.py``: candidate trees (masks, positions, paths, EAGLE-2 growth);
* ``proposers.py``: what proposes trees (the Sparrow draft; nothing, for the baseline);
* ``verify.py`` and ``sampling.py``: which candidates the target keeps;
* ``generate.py``: the decoding loop and its statistics.
"""

from .draft import DraftConfig, SparrowDraft, load_draft, save_draft
from .errors import (
    DraftTargetMismatchError,
    InvalidInputError,
    SparrowError,
    UnsupportedModelError,
    VideoTokenMismatchError,
)
from .generate import GenerationResult, GenerationStats, SpeculativeGenerator
from .proposers import NullProposer, Proposer, SparrowProposer, TreeConfig
from .targets import wrap_target

__version__ = "0.1.0"

__all__ = [
    "DraftConfig",
    "DraftTargetMismatchError",
    "GenerationResult",
    "GenerationStats",
    "InvalidInputError",
    "NullProposer",
    "Proposer",
    "SparrowDraft",
    "SparrowError",
    "SparrowProposer",
    "SpeculativeGenerator",
    "TreeConfig",
    "UnsupportedModelError",
    "VideoTokenMismatchError",
    "load_draft",
    "save_draft",
    "wrap_target",
]
