"""Choosing the tree size for a device: the target's verify cost against the number of nodes.

A tree of N nodes costs one target forward of N queries over the cache. On a
GPU that cost is nearly flat up to dozens of nodes; on a CPU it grows with N,
so the best tree is smaller. :func:`verify_cost_curve` measures it on the
real target at a real context length, and :func:`pick_tree_tokens` takes the
largest N whose verify costs at most ``budget`` times a single-token step
(EAGLE's auto-tuning idea, measured instead of assumed).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import torch

from ..targets import wrap_target
from ..tree import tree_attention_mask, tree_depths


def _balanced_parents(n: int, top_k: int = 4) -> torch.Tensor:
    """Parents of an n-node tree where each node gets up to top_k children, breadth first."""
    return torch.tensor([-1] + [(i - 1) // top_k for i in range(1, n)], dtype=torch.long)


@torch.inference_mode()
def verify_cost_curve(model, inputs, node_counts: Sequence[int] = (1, 2, 4, 8, 16, 32, 64),
                      repeats: int = 3) -> dict[int, float]:
    """Median seconds of one verify forward for each tree size, after one prefill of ``inputs``."""
    target = wrap_target(model)
    largest = max(node_counts)
    target.prefill(inputs, room=largest + 1)
    root = int(inputs["input_ids"][0, -1])
    costs: dict[int, float] = {}
    for n in node_counts:
        parents = _balanced_parents(n)
        tokens = torch.full((n,), root, dtype=torch.long, device=target.device)
        mask, depths = tree_attention_mask(parents), tree_depths(parents)
        nothing = torch.empty(0, dtype=torch.long)
        target.verify(tokens, mask, depths)  # warm-up (allocations, kernels)
        target.commit(nothing)  # keep none of the tree: the next verify sees the same cache
        times = []
        for _ in range(repeats):
            if target.device.type == "cuda":
                torch.cuda.synchronize(target.device)
            start = time.perf_counter()
            target.verify(tokens, mask, depths)
            if target.device.type == "cuda":
                torch.cuda.synchronize(target.device)
            times.append(time.perf_counter() - start)
            target.commit(nothing)
        costs[n] = sorted(times)[len(times) // 2]
    target.release()
    return costs


def pick_tree_tokens(costs: dict[int, float], budget: float = 1.5) -> int:
    """The largest node count whose verify costs at most ``budget`` x the one-node verify."""
    base = costs[min(costs)]
    fitting = [n for n, c in costs.items() if c <= budget * base]
    return max(fitting) if fitting else min(costs)
