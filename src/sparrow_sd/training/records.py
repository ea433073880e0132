"""One self-distilled training sample: what is stored, and how a draft reads it back.

Stored per sample (bf16 for states), never the hidden-state stack of every
position:

- ``input_ids`` (L,), ``loss_mask`` (L,) (True on response tokens, the ones a
  draft learns to predict), ``visual_mask`` (L,);
- ``hidden`` (N, H) at ``hidden_positions`` (N,): the target's last-layer
  (final-normed) states at text positions and at the last position of each
  visual block (the state that predicts the text right after a video);
- ``glimpse_embeds`` / ``glimpse_hidden`` (G, H): the visual block pooled into
  G contiguous spans (IVSB-layer states / last-layer states);
- ``aux`` (N, 3H) at ``hidden_positions``, when the data is made for eagle3
  drafts: the outputs of the three aux layers side by side;
- with ``visual="full"`` also ``visual_embeds`` (V, H, the vision features as
  merged into the prompt), ``visual_ivsb`` and ``visual_hidden`` (V, H), which
  the full-visual and pruned baselines need.

Text embeddings are not stored: the draft's trainer holds the target's frozen
embedding table and looks them up. :func:`prefill_from_record` rebuilds a
:class:`~sparrow_sd.targets.base.TargetPrefill` (rows that were not stored are
zero and are never read by the visual mode the record was made for), so the
trainer builds draft items with the same :func:`build_draft_context` as
inference.
"""

from __future__ import annotations

import torch

from ..draft.context import glimpse_items
from ..errors import InvalidInputError
from ..targets.base import TargetPrefill

VISUAL_STORAGE = ("pooled", "full")
STATE_DTYPE = torch.bfloat16


def hidden_positions(visual_mask: torch.Tensor) -> torch.Tensor:
    """Text positions plus each position right before a text position (the last visual token of a block)."""
    text = ~visual_mask
    before_text = torch.zeros_like(text)
    before_text[:-1] = text[1:]
    return (text | before_text).nonzero().squeeze(-1)


def make_record(prefill: TargetPrefill, prompt_length: int, ivsb_layer: int | None,
                glimpse_tokens: int, visual: str = "pooled",
                aux_layers: tuple[int, ...] | None = None) -> dict[str, torch.Tensor]:
    """The stored form of a prefill over prompt + response (response = positions >= prompt_length)."""
    if visual not in VISUAL_STORAGE:
        raise InvalidInputError(f"visual storage must be one of {VISUAL_STORAGE}, got {visual!r}")
    length = prefill.input_ids.shape[0]
    loss_mask = torch.zeros(length, dtype=torch.bool)
    loss_mask[prompt_length:] = True
    where = hidden_positions(prefill.visual_mask.cpu())
    record = {
        "input_ids": prefill.input_ids.cpu().to(torch.int32),
        "loss_mask": loss_mask,
        "visual_mask": prefill.visual_mask.cpu(),
        "hidden_positions": where.to(torch.int32),
        "hidden": prefill.hidden.cpu()[where].to(STATE_DTYPE),
    }
    if aux_layers:
        record["aux"] = torch.cat([prefill.layer_hidden[a].cpu()[where] for a in aux_layers], -1).to(STATE_DTYPE)
    visual_pos = prefill.visual_positions.cpu()
    if visual_pos.numel():
        hidden = prefill.hidden.cpu()[visual_pos].float()
        ivsb = prefill.layer_hidden[ivsb_layer].cpu()[visual_pos].float() if ivsb_layer is not None else None
        if ivsb is not None:
            g_embeds, g_hidden = glimpse_items(ivsb, hidden, glimpse_tokens)
            record["glimpse_embeds"] = g_embeds.to(STATE_DTYPE)
            record["glimpse_hidden"] = g_hidden.to(STATE_DTYPE)
        if visual == "full":
            record["visual_embeds"] = prefill.input_embeds.cpu()[visual_pos].to(STATE_DTYPE)
            record["visual_hidden"] = hidden.to(STATE_DTYPE)
            if ivsb is not None:
                record["visual_ivsb"] = ivsb.to(STATE_DTYPE)
    return record


def prefill_from_record(record: dict[str, torch.Tensor], embed_weight: torch.Tensor,
                        ivsb_layer: int | None, dtype: torch.dtype = torch.float32,
                        aux_layers: tuple[int, ...] | None = None) -> TargetPrefill:
    """A dense TargetPrefill rebuilt from a record (text embeddings from ``embed_weight``),
    on ``embed_weight``'s device; ``aux_layers`` also rebuilds those layers' states."""
    record = {k: v.to(embed_weight.device) for k, v in record.items()}
    ids = record["input_ids"].long()
    visual = record["visual_mask"].bool()
    length, size = ids.shape[0], embed_weight.shape[1]
    device = embed_weight.device
    embeds = torch.zeros(length, size, dtype=dtype, device=device)
    embeds[~visual] = embed_weight[ids[~visual]].to(dtype)
    hidden = torch.zeros(length, size, dtype=dtype, device=device)
    hidden[record["hidden_positions"].long()] = record["hidden"].to(dtype)
    layer_hidden = {}
    if "visual_embeds" in record:
        embeds[visual] = record["visual_embeds"].to(dtype)
        hidden[visual] = record["visual_hidden"].to(dtype)
    if ivsb_layer is not None:
        layer = torch.zeros(length, size, dtype=dtype, device=device)
        if "visual_ivsb" in record:
            layer[visual] = record["visual_ivsb"].to(dtype)
        layer_hidden[ivsb_layer] = layer
    if aux_layers:
        if "aux" not in record:
            raise InvalidInputError("the data holds no aux-layer states; make it with `sparrow datagen --aux-layers`")
        for a, chunk in zip(aux_layers, record["aux"].to(dtype).split(size, dim=-1)):
            layer = torch.zeros(length, size, dtype=dtype, device=device)
            layer[record["hidden_positions"].long()] = chunk
            layer_hidden[a] = layer
    return TargetPrefill(input_ids=ids, visual_mask=visual, input_embeds=embeds, hidden=hidden,
                         layer_hidden=layer_hidden)


def record_glimpse(record: dict[str, torch.Tensor], dtype=torch.float32):
    """The stored glimpse items, or None when the record has no visual block."""
    if "glimpse_embeds" not in record:
        return None
    return record["glimpse_embeds"].to(dtype), record["glimpse_hidden"].to(dtype)


def missing_for_mode(record: dict[str, torch.Tensor], visual_mode: str, ivsb: bool) -> list[str]:
    """Record fields a draft of this visual mode needs but the record lacks (empty: usable)."""
    if not bool(record["visual_mask"].any()) or visual_mode == "none":
        return []
    if visual_mode == "glimpse":
        return [k for k in ("glimpse_embeds", "glimpse_hidden") if k not in record]
    need = ["visual_hidden", "visual_ivsb" if ivsb else "visual_embeds"]
    return [k for k in need if k not in record]
