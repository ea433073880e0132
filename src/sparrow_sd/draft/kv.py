"""The draft's own KV cache, with a bounded attention window.

The draft's sequence is its *items*: one per kept prompt position, then one per
emitted token. Item ``i`` sits at slot ``i`` and has RoPE position ``i`` (positions
are renumbered over what the draft sees, so the cut-out video leaves no gap).

Two kinds of writes:

* ``extend``: items that become part of the committed sequence (the prompt at
  prefill, then each step's accepted tokens).
* ``tree``: candidate nodes while a tree grows. They go to scratch slots after the
  committed ones and are dropped by :meth:`DraftKV.rollback` once the target has
  verified the tree. A node at depth ``d`` behaves as if it were item
  ``committed + d - 1`` (where it would land if accepted).

The window rule, shared by both: an item at position ``q`` sees item ``k`` when
``k <= q`` and either ``k`` is pinned (the prompt, if it fills at most half the
window) or ``q - k < window - pinned``. A tree node sees its ancestors by the same
rule, at the positions they would take if accepted, so a node deeper than the
window sees only the ancestors within it (and, past ``window - pinned``, no
committed item but the pinned ones). Only the visible slots are read, so a step
costs the same however long the sequence grows. Training applies the same rule
(:func:`window_visible`, :func:`pinned_items`) in its unroll.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import CacheCapacityError


@dataclass
class AttendPlan:
    """Where a batch of new items goes and what each may attend to."""

    positions: torch.Tensor  # (T,) RoPE positions of the new items
    write_slots: torch.Tensor  # (T,) cache slots the new keys/values go to
    key_slots: torch.Tensor  # (K,) cache slots read as keys (written ones included)
    mask: torch.Tensor | None  # (T, K) bool, True = may attend; None = plain causal over K


def pinned_items(prompt_items: int, window: int | None) -> int:
    """How many leading items stay visible to every later one: the prompt's, if they fill at
    most half the window (all of them when there is no window), else none."""
    return prompt_items if window is None or prompt_items <= window // 2 else 0


def window_visible(query_pos: torch.Tensor, key_pos: torch.Tensor, window: int | None,
                   pinned: int) -> torch.Tensor:
    """(Q, K) bool, the window rule: a query at position ``q`` sees a key at ``k`` when ``k <= q``
    and either ``k < pinned`` or ``q - k < window - pinned`` (no window: every ``k <= q``)."""
    visible = key_pos[None, :] <= query_pos[:, None]
    if window is not None:
        near = (query_pos[:, None] - key_pos[None, :]) < (window - pinned)
        visible &= near | (key_pos[None, :] < pinned)
    return visible


class DraftKV:
    def __init__(self, num_kv_heads: int, head_dim: int, capacity: int, window: int | None, dtype, device):
        self.keys = torch.zeros(1, num_kv_heads, capacity, head_dim, dtype=dtype, device=device)
        self.values = torch.zeros_like(self.keys)
        self.capacity = capacity
        self.window = window
        self.committed = 0  # items in the sequence
        self.length = 0  # committed + scratch tree nodes
        self.pinned = 0
        self.device = device
        self.scratch_positions = torch.zeros(0, dtype=torch.long, device=device)  # of the scratch tree nodes

    def pin_prefix(self, n: int) -> None:
        """Keep the first ``n`` items visible if they fit in half the window."""
        self.pinned = pinned_items(n, self.window)

    def _reserve(self, n: int) -> torch.Tensor:
        if self.length + n > self.capacity:
            raise CacheCapacityError(f"draft cache holds {self.capacity} items, {self.length + n} needed")
        slots = torch.arange(self.length, self.length + n, device=self.device)
        self.length += n
        return slots

    def _context(self, q_pos: torch.Tensor, upto: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Committed-or-new sequence slots below ``upto`` visible to queries at ``q_pos``."""
        if self.window is None:
            slots = torch.arange(upto, device=self.device)
        else:
            recent = self.window - self.pinned
            # the oldest recent slot any query sees; past ``upto`` when every query is too far (deep tree nodes)
            lo = min(upto, max(self.pinned, int(q_pos.min()) - recent + 1))
            slots = torch.cat([torch.arange(self.pinned, device=self.device), torch.arange(lo, upto, device=self.device)])
        return slots, window_visible(q_pos, slots, self.window, self.pinned)

    def plan_extend(self, n: int) -> AttendPlan:
        """Append ``n`` items to the committed sequence (after a rollback of any tree)."""
        self.rollback()
        fresh = self.committed == 0
        slots = self._reserve(n)
        self.committed = self.length
        if fresh and (self.window is None or n <= self.window - self.pinned):
            # The whole prompt at once with nothing to cut: let attention run causal
            # (no (n, n) mask to materialise, which at 25k items would cost gigabytes).
            return AttendPlan(slots, slots, slots, None)
        key_slots, mask = self._context(slots, self.length)
        return AttendPlan(slots, slots, key_slots, mask)

    def plan_tree(self, depths: torch.Tensor, ancestry: torch.Tensor) -> AttendPlan:
        """Add tree nodes at ``depths``; ``ancestry`` (T, scratch + T) marks which scratch
        nodes (earlier tree nodes, then these) each may see: its ancestors and itself."""
        positions = self.committed + depths.to(self.device).long() - 1
        ctx_slots, ctx_mask = self._context(positions, self.committed)
        write = self._reserve(depths.numel())
        scratch = torch.arange(self.committed, self.length, device=self.device)
        self.scratch_positions = torch.cat([self.scratch_positions, positions])
        # ancestors by the window rule too (tree nodes sit past the prompt: never pinned)
        tree_mask = ancestry.to(self.device) & window_visible(positions, self.scratch_positions, self.window,
                                                              self.pinned)
        key_slots = torch.cat([ctx_slots, scratch])
        mask = torch.cat([ctx_mask, tree_mask], dim=1)
        return AttendPlan(positions, write, key_slots, mask)

    def rollback(self) -> None:
        """Forget scratch tree nodes."""
        self.length = self.committed
        self.scratch_positions = self.scratch_positions[:0]

    def write_and_read(self, plan: AttendPlan, k: torch.Tensor, v: torch.Tensor):
        """Store new keys/values (1, H, T, D); return the keys/values the plan reads."""
        self.keys[:, :, plan.write_slots] = k
        self.values[:, :, plan.write_slots] = v
        return self.keys[:, :, plan.key_slots], self.values[:, :, plan.key_slots]

    def nbytes(self) -> int:
        return 2 * self.keys.numel() * self.keys.element_size()
