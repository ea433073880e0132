"""``sparrow export --to eagle3``: a draft folder that vLLM's and SGLang's EAGLE-3 loaders read.

Only drafts trained in the eagle3 layer form export (``DraftConfig.architecture``):
the EAGLE-3 layer computes something no weight mapping of the sparrow layer
reproduces (see docs/eagle3-format.md), and an export that changes what the draft
computes would be silently wrong. The weights are written unchanged, under the
names those loaders expect; the config carries the aux layers in both engines'
conventions (vLLM counts a layer's *input*, SGLang a layer's *output*).

Caveat, written into the config too: those engines run the draft over every
prompt token, visual ones included, at the target's positions. The draft was
trained on the text-only context with its own renumbered positions, so its
acceptance there can differ from what ``sparrow bench`` measures.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from ..errors import InvalidInputError
from .io import WEIGHTS_NAME, load_draft

EAGLE3_ARCHITECTURE = "LlamaForCausalLMEagle3"
CAVEAT = ("Trained by sparrow-sd on the text-only context (the video cut out, positions renumbered). "
          "vLLM and SGLang run EAGLE-3 drafts over every prompt token, visual ones included, at the "
          "target's positions, so acceptance there can differ from sparrow-sd's own engine.")


_MIXED_PRECISION = {"bf16": torch.bfloat16, "fp16": torch.float16, "no": torch.float32}
_SAFETENSORS_DTYPES = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16}


def trained_dtype(draft_dir: str | Path) -> torch.dtype:
    """The dtype a draft was trained in: its ``training.json`` (accelerate's mixed precision),
    else the dtype its weights are stored in."""
    draft_dir = Path(draft_dir)
    record = draft_dir / "training.json"
    if record.is_file():
        try:
            precision = json.loads(record.read_text()).get("settings", {}).get("mixed_precision")
        except (ValueError, AttributeError):
            precision = None
        if precision in _MIXED_PRECISION:
            return _MIXED_PRECISION[precision]
    from safetensors import safe_open

    with safe_open(str(draft_dir / WEIGHTS_NAME), framework="pt") as weights:
        return _SAFETENSORS_DTYPES.get(weights.get_slice("fc.weight").get_dtype(), torch.float32)


def eagle3_config(draft, max_position_embeddings: int) -> dict:
    """The Llama-style config.json of an eagle3-form draft."""
    cfg = draft.config
    outputs = list(cfg.aux_layers)
    return {
        "architectures": [EAGLE3_ARCHITECTURE],
        "model_type": "llama",
        "hidden_size": cfg.hidden_size,
        "target_hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.intermediate_size,
        "num_hidden_layers": 1,
        "num_attention_heads": cfg.num_attention_heads,
        "num_key_value_heads": cfg.num_key_value_heads,
        "head_dim": cfg.head_dim,
        "hidden_act": "silu",
        "rms_norm_eps": cfg.rms_norm_eps,
        "rope_theta": cfg.rope_theta,
        "rope_scaling": None,
        "max_position_embeddings": max_position_embeddings,
        "vocab_size": cfg.vocab_size,
        "draft_vocab_size": cfg.draft_vocab_size,
        "tie_word_embeddings": False,
        "torch_dtype": str(draft.fc.weight.dtype).removeprefix("torch."),
        "eagle_aux_hidden_state_layer_ids": [layer + 1 for layer in outputs],  # vLLM: input of layer j
        "eagle_config": {"eagle_aux_hidden_state_layer_ids": outputs},  # SGLang: output of layer i
        "sparrow_sd": {"target_model_type": cfg.target_model_type, "window": cfg.window, "caveat": CAVEAT},
    }


def export_eagle3(draft_dir: str | Path, out_dir: str | Path, dtype: torch.dtype | None = None,
                  max_position_embeddings: int | None = None) -> Path:
    """Write ``draft_dir`` (an eagle3-form sparrow draft) as an EAGLE-3 folder in ``out_dir``.

    ``dtype``: of the floating-point weights (and ``torch_dtype``); default the dtype the draft
    was trained in (:func:`trained_dtype`). ``max_position_embeddings``: default the target's,
    which the draft records (``DraftConfig.target_max_position_embeddings``).
    """
    draft = load_draft(draft_dir, dtype=dtype or trained_dtype(draft_dir))
    if draft.config.architecture != "eagle3":
        raise InvalidInputError(
            f"{draft_dir} is a {draft.config.architecture!r} draft; only drafts trained with "
            "`--architecture eagle3` export to EAGLE-3 (its layer computes something else, see "
            "docs/eagle3-format.md)")
    positions = max_position_embeddings or draft.config.target_max_position_embeddings
    if not positions:
        raise InvalidInputError(f"{draft_dir} does not record its target's max_position_embeddings (a draft "
                                "trained before it was recorded); give it (--max-position-embeddings N)")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in draft.state_dict().items()}
    state["t2d"] = state["t2d"].bool()
    state["d2t"] = state["d2t"].long()
    save_file(state, str(out_dir / "model.safetensors"), metadata={"format": "pt", "producer": "sparrow-sd"})
    (out_dir / "config.json").write_text(json.dumps(eagle3_config(draft, int(positions)), indent=2) + "\n")
    return out_dir
