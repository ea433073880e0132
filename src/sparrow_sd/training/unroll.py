"""Multi-token prediction (training-time test): the draft unrolled on its own states.

At inference a tree node at depth ``d >= 2`` does not get the target's hidden
state: it gets the draft's own output for its parent, and it attends to the
committed context plus its ancestors. Trained only on target states (one
step), a draft never sees its own states and its acceptance falls off with
depth. So training unrolls ``steps`` levels over a whole sequence at once:

- step 0: item ``i`` reads ``(embed_i, target_hidden_i)`` and attends
  causally to the items ``<= i`` (exactly the committed-context forward);
- step ``k >= 1``: item ``i`` reads ``(embed_i, out^{k-1}_{i-1})``, the draft's
  step-``k-1`` output for the previous item, and attends to step-0 items
  ``<= i - k`` (the committed context a depth-``k`` node would have) and to
  one key per later step ``j = 1..k``: item ``i - k + j`` of step ``j`` (its
  ancestors on the chain, itself last).

Every step predicts the same next token for item ``i``; an item with
``i < k`` has no such chain and is left out of step ``k``'s loss. RoPE
positions are the item indices at every step, as at inference (a node at
depth ``d`` sits where it would land if accepted).

Every step also applies the draft's attention window exactly as inference
does (:func:`~sparrow_sd.draft.kv.window_visible`, on the same positions, with
the prompt's items pinned by the same rule), so a draft trains on sequences
longer than its window as it will run on them.

The draft's own modules run unchanged: :class:`UnrollKeys` stands in for the
draft's KV cache and hands each step the keys of all earlier steps.

Only the items the loss reads need the later steps: given ``first_item``, the
first of them, steps ``k >= 1`` run on the items from ``first_item - (steps - 1)``
on (a chain reaches back one item per step), which is exact for every item from
``first_item`` on. A full-visual draft's thousands of prompt items then pass the
layer once, at step 0, as at inference, where the prompt is prefilled once.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..draft.kv import AttendPlan, pinned_items, window_visible
from ..draft.model import Draft


class UnrollKeys:
    """Duck-types ``DraftKV.write_and_read``: returns this and all earlier steps' keys."""

    def __init__(self):
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []

    def write_and_read(self, plan: AttendPlan, k: torch.Tensor, v: torch.Tensor):
        self.keys.append(k)
        self.values.append(v)
        return torch.cat(self.keys, dim=2), torch.cat(self.values, dim=2)


def unroll_mask(n: int, step: int, device=None, window: int | None = None, pinned: int = 0,
                start: int = 0) -> torch.Tensor:
    """(n - start, n + step * (n - start)) bool: what item ``i >= start`` of unroll ``step`` may attend
    to, within ``window`` (the first ``pinned`` items always visible): step 0's ``n`` keys, then the
    ``n - start`` keys of each later step (items ``start..n-1``)."""
    positions = torch.arange(n, device=device)
    tail = positions[start:]
    q = tail[:, None]
    blocks = [(positions[None, :] <= q - step) & window_visible(tail, positions, window, pinned)]
    visible = window_visible(tail, tail, window, pinned)
    for j in range(1, step + 1):  # its ancestor on the chain at step j (itself at j = step)
        blocks.append((tail[None, :] == q - step + j) & visible)
    return torch.cat(blocks, dim=1)


@dataclass
class UnrollStep:
    hidden: torch.Tensor  # (n - start, H) normed outputs of items start..n-1
    logits: torch.Tensor  # (n - start, draft_vocab)
    valid: torch.Tensor  # (n - start,) bool: items with a full chain at this step (i >= step)
    start: int = 0  # the item of row 0

    def rows(self, items: torch.Tensor) -> torch.Tensor:
        """Row indices of ``items`` (item indices, all ``>= start``)."""
        return items - self.start


def unroll(draft: Draft, embeds: torch.Tensor, hidden: torch.Tensor, steps: int,
           prompt_items: int = 0, first_item: int = 0) -> list[UnrollStep]:
    """Run ``steps`` unroll levels over a sequence of ``n`` items (see the module docstring);
    the first ``prompt_items`` are the prompt's (pinned in the window as at inference). Outputs
    are exact for items from ``first_item`` on; later steps skip what lies before their chains."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    n = embeds.shape[0]
    start = min(max(0, first_item - (steps - 1)), n - 1)
    window = draft.config.window
    pinned = pinned_items(prompt_items, window)
    causal = window is None or n <= window - pinned  # step 0 cuts nothing: plain causal, no (n, n) mask
    positions = torch.arange(n, device=embeds.device)
    keys = UnrollKeys()
    results: list[UnrollStep] = []
    current = hidden
    for step in range(steps):
        first = 0 if step == 0 else start
        mask = None if step == 0 and causal else unroll_mask(n, step, embeds.device, window, pinned, first)
        items = positions[first:]
        plan = AttendPlan(positions=items, write_slots=items, key_slots=items, mask=mask)
        out, logits = draft(embeds[first:], current, keys, plan)
        results.append(UnrollStep(out, logits, items >= step, first))
        # the next level's item i (from `start` on) reads this level's output for item i - 1
        before = out[start - first - 1 : start - first] if start > first else out[:1] * 0
        current = torch.cat([before, out[start - first : -1]], dim=0)
    return results
