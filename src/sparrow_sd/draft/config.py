"""The draft's configuration: its shape, what it reads, and how far it looks back."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from ..errors import InvalidInputError

VISUAL_MODES = ("none", "glimpse", "full", "pruned")


@dataclass
class DraftConfig:
    """Shape and behaviour of a :class:`~sparrow_sd.draft.model.SparrowDraft`.

    ``visual_mode`` chooses what the draft reads of the video:

    * ``none``: nothing (Sparrow): the visual block is cut out; text only.
    * ``glimpse``: ``glimpse_tokens`` tokens, each the mean of a span of the target's
      intermediate-layer (``ivsb_layer``) states at the visual positions, placed
      before the text.
    * ``full``: every visual position, with the vision features as embeddings (the
      EAGLE / MSD / ViSpec baseline).
    * ``pruned``: a ``pruned_fraction`` of the visual positions, evenly spaced
      (SpecVLM-style baseline).

    ``window``: the draft attends to at most this many previous items (None: no
    limit). The prompt's items stay visible if they fill at most half the window.
    ``ivsb_layer``: if set, visual items carry that target layer's hidden states
    instead of the last layer's (intermediate-layer visual state bridging).
    """

    hidden_size: int
    intermediate_size: int
    num_attention_heads: int
    num_key_value_heads: int
    vocab_size: int  # the target's vocabulary
    draft_vocab_size: int | None = None  # reduced vocabulary (d2t / t2d); None = the target's
    head_dim: int | None = None
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    visual_mode: str = "none"
    window: int | None = 1024
    glimpse_tokens: int = 16
    pruned_fraction: float = 0.1
    ivsb_layer: int | None = None
    target_model_type: str | None = None  # e.g. "qwen2_vl"; checked against the target when set

    def __post_init__(self):
        if self.visual_mode not in VISUAL_MODES:
            raise InvalidInputError(f"visual_mode must be one of {VISUAL_MODES}, got {self.visual_mode!r}")
        if self.head_dim is None:
            self.head_dim = self.hidden_size // self.num_attention_heads
        if self.draft_vocab_size is None:
            self.draft_vocab_size = self.vocab_size
        if not 0 < self.draft_vocab_size <= self.vocab_size:
            raise InvalidInputError("draft_vocab_size must be in [1, vocab_size]")
        if self.num_attention_heads % self.num_key_value_heads:
            raise InvalidInputError("num_attention_heads must be a multiple of num_key_value_heads")
        if self.window is not None and self.window < 2:
            raise InvalidInputError("window must be at least 2 (or None)")
        if not 0 < self.pruned_fraction <= 1:
            raise InvalidInputError("pruned_fraction must be in (0, 1]")
        if self.visual_mode == "glimpse" and (self.ivsb_layer is None or self.glimpse_tokens < 1):
            raise InvalidInputError("glimpse mode needs ivsb_layer and glimpse_tokens >= 1")

    def to_dict(self) -> dict:
        return {"architectures": ["SparrowDraft"], **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict) -> "DraftConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> "DraftConfig":
        return cls.from_dict(json.loads(Path(path).read_text()))
