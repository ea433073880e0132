"""Tiny random drafts sized for a given target, for tests and the quick demo."""

from __future__ import annotations

from ..draft import DraftConfig, Draft
from ..targets import wrap_target


def tiny_draft(model, visual_mode: str = "none", seed: int = 0, draft_vocab=None, **overrides) -> Draft:
    """A random :class:`Draft` that fits ``model`` (a model or its adapter)."""
    target = wrap_target(model)
    text = target.text_config
    settings = dict(
        hidden_size=target.hidden_size,
        intermediate_size=2 * target.hidden_size,
        num_attention_heads=text.num_attention_heads,
        num_key_value_heads=text.num_key_value_heads,
        vocab_size=target.vocab_size,
        visual_mode=visual_mode,
        rope_theta=getattr(text, "rope_theta", None) or 10000.0,
        target_model_type=target.model.config.model_type,
        target_max_position_embeddings=getattr(text, "max_position_embeddings", None),
    )
    if visual_mode == "glimpse":
        settings["ivsb_layer"] = target.num_layers // 2
    if visual_mode in ("full", "pruned"):
        settings["window"] = None
    settings.update(overrides)
    return Draft.from_target(target, DraftConfig(**settings), draft_vocab=draft_vocab, seed=seed)
