"""sparrow-sd: lossless speculative decoding for Video LLMs with text-anchored drafts.

Where things live:

* ``targets/``: stateless adapters over the unmodified Hugging Face Video LLMs (prefill, verify a tree), one
  per model, and ``TargetSession``, one request's cache, positions and prefill (verify, commit, rewind);
* ``kv_cache.py``: the target's preallocated, position-indexed cache;
* ``draft/``: the Sparrow draft model, its config, its text-anchored context, its cache, its files;
* ``tree.py``: candidate trees (masks, positions, paths, EAGLE-2 growth);
* ``proposers.py``: what proposes trees (the Sparrow draft; nothing, for the baseline), and the
  contract a proposer of your own keeps (``Proposer``, ``DraftTree``, ``TargetPrefill``,
  ``TargetVerify``, all exported here);
* ``sampling.py``: the target's next-token settings, read from its generation config as
  ``generate()`` reads them, and its logits processing;
* ``verify.py``: which candidates the target keeps;
* ``generate.py``: the decoding loop (``decode`` from a session) and its statistics.
"""

from .draft import DraftConfig, Draft, load_draft, save_draft
from .errors import (
    DraftTargetMismatchError,
    InvalidInputError,
    ProposerError,
    SparrowError,
    UnsupportedModelError,
    VideoTokenMismatchError,
)
from .generate import GenerationResult, GenerationStats, SpeculativeGenerator
from .proposers import NullProposer, Proposer, DraftProposer, TreeConfig
from .sampling import SamplingConfig
from .targets import TargetAdapter, TargetPrefill, TargetSession, TargetVerify, wrap_target
from .tree import DraftTree, TreeBuilder

__version__ = "0.1.0"

__all__ = [
    "DraftConfig",
    "DraftTargetMismatchError",
    "DraftTree",
    "GenerationResult",
    "GenerationStats",
    "InvalidInputError",
    "NullProposer",
    "Proposer",
    "ProposerError",
    "SamplingConfig",
    "Draft",
    "SparrowError",
    "DraftProposer",
    "SpeculativeGenerator",
    "TargetAdapter",
    "TargetPrefill",
    "TargetSession",
    "TargetVerify",
    "TreeBuilder",
    "TreeConfig",
    "UnsupportedModelError",
    "VideoTokenMismatchError",
    "load_draft",
    "save_draft",
    "wrap_target",
]
