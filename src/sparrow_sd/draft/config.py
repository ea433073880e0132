"""The draft's configuration: its shape, what it reads, and how far it looks back."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from ..errors import InvalidInputError

VISUAL_MODES = ("none", "glimpse", "full", "pruned")
ARCHITECTURES = ("sparrow", "eagle3")


def default_aux_layers(num_layers: int) -> tuple[int, int, int]:
    """EAGLE-3's three feature layers, as decoder-layer *outputs*: the inputs of layers
    2, N/2 and N-3, which is what vLLM and SGLang capture by default. Stacks of
    fewer than 5 layers (test models) take the outputs of 0, N/2 and N-1."""
    if num_layers < 3:
        raise InvalidInputError(f"an eagle3 draft needs a target of at least 3 layers, got {num_layers}")
    if num_layers < 5:
        return (0, num_layers // 2, num_layers - 1)
    return (1, num_layers // 2 - 1, num_layers - 4)


@dataclass
class DraftConfig:
    """Shape and behaviour of a :class:`~sparrow_sd.draft.model.Draft`.

    ``visual_mode`` chooses what the draft reads of the video:

    * ``none``: nothing: the visual block is cut out; text only (Sparrow without its
      glimpse, and the HiViS-style ablation).
    * ``glimpse``: ``glimpse_tokens`` tokens, each the mean of a span of the target's
      intermediate-layer (``ivsb_layer``) states at the visual positions, placed
      before the text: the shipped Sparrow draft (chosen by measurement, docs/benchmarks.md).
    * ``full``: every visual position, with the vision features as embeddings (the
      EAGLE / MSD / ViSpec baseline).
    * ``pruned``: a ``pruned_fraction`` of the visual positions, evenly spaced
      (SpecVLM-style baseline).

    ``window``: the draft attends to at most this many previous items (None: no
    limit). The prompt's items stay visible if they fill at most half the window.
    ``ivsb_layer``: if set, visual items carry that target layer's hidden states
    instead of the last layer's (intermediate-layer visual state bridging).

    ``architecture`` chooses the layer's form:

    * ``sparrow``: ``fc([embed_norm(embedding), target last-layer state])`` into a
      standard Llama layer; the final-normed output is fed back.
    * ``eagle3``: EAGLE-3's layer, so that ``sparrow export --to eagle3`` is exact:
      the target state is ``fc`` of three decoder-layer outputs (``aux_layers``)
      concatenated, attention reads ``[input_layernorm(embedding), hidden_norm(state)]``
      with the state as residual, and the pre-norm output is fed back. Text-only
      (``visual_mode="none"``): that is the draft those engines can run.
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
    architecture: str = "sparrow"
    aux_layers: tuple[int, ...] | None = None  # eagle3: target decoder layers whose outputs feed fc
    target_max_position_embeddings: int | None = None  # the target's positions (written into exports)

    def __post_init__(self):
        if self.architecture not in ARCHITECTURES:
            raise InvalidInputError(f"architecture must be one of {ARCHITECTURES}, got {self.architecture!r}")
        if self.architecture == "eagle3":
            if self.aux_layers is None or len(self.aux_layers) != 3:
                raise InvalidInputError("an eagle3 draft needs exactly three aux_layers (see default_aux_layers)")
            if self.visual_mode != "none" or self.ivsb_layer is not None:
                raise InvalidInputError("an eagle3 draft is text-only: visual_mode 'none', no ivsb_layer")
            self.aux_layers = tuple(int(a) for a in self.aux_layers)
        elif self.aux_layers is not None:
            raise InvalidInputError("aux_layers belong to the eagle3 architecture only")
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
        data = asdict(self)
        if data["aux_layers"] is not None:
            data["aux_layers"] = list(data["aux_layers"])
        return {"architectures": ["Draft"], **data}

    @classmethod
    def from_dict(cls, data: dict) -> "DraftConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> "DraftConfig":
        return cls.from_dict(json.loads(Path(path).read_text()))
