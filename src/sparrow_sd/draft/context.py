"""What the draft reads of the prompt: the text-anchored context.

The target has read the whole prompt, video included. The draft gets one *item*
per kept prompt position ``p`` (``p >= 1``): the embedding at ``p`` and the
target's last-layer hidden state at ``p - 1``, the state that predicted ``p``.
Which positions are kept is the visual mode:

* ``none``: text positions only; the visual block is cut out and the items are
  renumbered, so the draft's cost does not depend on the video.
* ``glimpse`` (the shipped Sparrow draft): the text items, preceded by
  ``glimpse_tokens`` items that each average a contiguous span of the visual
  positions (embedding slot: the intermediate-layer states, hidden slot: the
  last-layer states); a fixed count, so the cost does not depend on the video either.
* ``full``: every position; visual items carry the vision features as embedding
  (or, with ``ivsb_layer``, the target's intermediate-layer state there).
* ``pruned``: the text plus an evenly spaced ``pruned_fraction`` of the visual
  positions, carried as in ``full``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..targets.base import TargetPrefill, TargetVerify
from .config import DraftConfig


def target_states(view: TargetPrefill | TargetVerify, config: DraftConfig) -> torch.Tensor:
    """(L, state) what the draft reads of the target at each position: the last-layer
    state, or for an eagle3 draft its three aux layers' outputs side by side."""
    if config.architecture == "eagle3":
        missing = [a for a in config.aux_layers if a not in view.layer_hidden]
        if missing:
            raise RuntimeError(f"the target did not capture aux layers {missing}; pass capture_layers")
        return torch.cat([view.layer_hidden[a] for a in config.aux_layers], dim=-1)
    return view.hidden


@dataclass
class DraftContext:
    embeds: torch.Tensor  # (n, H)
    hidden: torch.Tensor  # (n, H)
    source: torch.Tensor  # (n,) prompt position of each item; -1 for a glimpse item

    def __len__(self) -> int:
        return self.source.shape[0]


def kept_visual_positions(visual: torch.Tensor, config: DraftConfig) -> torch.Tensor:
    """The visual positions the draft reads directly (full or pruned modes)."""
    if config.visual_mode == "full":
        return visual
    if config.visual_mode == "pruned" and visual.numel():
        keep = max(1, math.ceil(config.pruned_fraction * visual.numel()))
        picks = torch.linspace(0, visual.numel() - 1, keep).round().long().unique()
        return visual[picks.to(visual.device)]
    return visual[:0]


def glimpse_items(visual_embeds: torch.Tensor, visual_hidden: torch.Tensor, count: int):
    """(embeds, hidden) of the glimpse items: means over ``count`` contiguous spans of the
    visual positions' (IVSB) states and last-layer states, in video order."""
    spans = torch.tensor_split(torch.arange(visual_embeds.shape[0], device=visual_embeds.device),
                               min(count, visual_embeds.shape[0]))
    return (torch.stack([visual_embeds[s].mean(0) for s in spans]),
            torch.stack([visual_hidden[s].mean(0) for s in spans]))


def build_draft_context(prefill: TargetPrefill, config: DraftConfig,
                        glimpse: tuple[torch.Tensor, torch.Tensor] | None = None) -> DraftContext:
    """The draft's items for a prompt; ``glimpse`` passes precomputed glimpse items
    (training data stores them pooled instead of every visual state)."""
    visual = prefill.visual_positions
    visual_embeds = prefill.input_embeds
    if config.ivsb_layer is not None and config.visual_mode != "none":
        visual_embeds = prefill.layer_hidden[config.ivsb_layer]

    keep = torch.cat([prefill.text_positions, kept_visual_positions(visual, config)]).sort().values
    keep = keep[keep >= 1]
    is_visual = prefill.visual_mask[keep]
    embeds = torch.where(is_visual[:, None], visual_embeds[keep], prefill.input_embeds[keep])
    hidden = target_states(prefill, config)[keep - 1]
    source = keep

    if config.visual_mode == "glimpse" and visual.numel():
        if glimpse is None:
            glimpse = glimpse_items(visual_embeds[visual], prefill.hidden[visual], config.glimpse_tokens)
        g_embeds, g_hidden = (t.to(embeds.dtype) for t in glimpse)
        embeds = torch.cat([g_embeds, embeds])
        hidden = torch.cat([g_hidden, hidden])
        source = torch.cat([torch.full((g_embeds.shape[0],), -1, device=keep.device), keep])
    return DraftContext(embeds=embeds, hidden=hidden, source=source)
