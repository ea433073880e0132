"""Choosing the tree size for a device: the target's verify cost against the number of nodes.

A tree of N nodes costs one target forward of N queries over the cache. On a
GPU that cost is nearly flat up to dozens of nodes; on a CPU it grows with N,
so the best tree is smaller. :func:`verify_cost_curve` measures it on the
real target at a real context length, and :func:`pick_tree_tokens` takes the
largest N whose verify costs at most ``budget`` times a single-token step
(EAGLE's auto-tuning idea, measured instead of assumed). :func:`tune_tree`
goes one step further and times whole decodes with the real draft, since
acceptance decides as much as cost.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch

from ..generate import SpeculativeGenerator, prefill
from ..proposers import DraftProposer, TreeConfig
from ..targets import TargetSession, wrap_target
from ..targets.session import synchronize
from ..tree import tree_attention_mask, tree_depths


def _balanced_parents(n: int, top_k: int = 4) -> torch.Tensor:
    """Parents of an n-node tree where each node gets up to top_k children, breadth first."""
    return torch.tensor([-1] + [(i - 1) // top_k for i in range(1, n)], dtype=torch.long)


@torch.inference_mode()
def verify_cost_curve(model, inputs, node_counts: Sequence[int] = (1, 2, 4, 8, 16, 32, 64),
                      repeats: int = 3) -> dict[int, float]:
    """Median seconds of one verify forward for each tree size, after one prefill of ``inputs``."""
    target = wrap_target(model)
    with TargetSession(target, inputs, room=max(node_counts) + 1) as session:
        return session_verify_costs(session, int(inputs["input_ids"][0, -1]), node_counts, repeats)


@torch.inference_mode()
def session_verify_costs(session: TargetSession, root: int, node_counts: Sequence[int],
                         repeats: int = 3) -> dict[int, float]:
    """Median seconds of verifying a balanced tree of each size (all ``root``) on an open session.

    One warm-up each; the session is rewound after every verify, so each sees the same cache."""
    device = session.target.device
    costs: dict[int, float] = {}
    for n in node_counts:
        parents = _balanced_parents(n)
        tokens = torch.full((n,), root, dtype=torch.long, device=device)
        mask, depths = tree_attention_mask(parents), tree_depths(parents)
        session.verify(tokens, mask, depths)  # warm-up (allocations, kernels)
        session.rewind()  # keep none of the tree: the next verify sees the same cache
        times = []
        for _ in range(repeats):
            synchronize(device)
            start = time.perf_counter()
            session.verify(tokens, mask, depths)
            synchronize(device)
            times.append(time.perf_counter() - start)
            session.rewind()
        costs[n] = sorted(times)[len(times) // 2]
    return costs


def pick_tree_tokens(costs: dict[int, float], budget: float = 1.5) -> int:
    """The largest node count whose verify costs at most ``budget`` x the one-node verify."""
    base = costs[min(costs)]
    fitting = [n for n, c in costs.items() if c <= budget * base]
    return max(fitting) if fitting else min(costs)


#: trees tried by :func:`tune_tree`: chains, narrow and wider EAGLE-2 trees, small to large
TREE_CANDIDATES: tuple[TreeConfig, ...] = (
    TreeConfig.chain(3), TreeConfig.chain(5), TreeConfig.chain(7),
    TreeConfig(depth=5, top_k=2, total_tokens=8), TreeConfig(depth=6, top_k=2, total_tokens=10),
    TreeConfig(depth=5, top_k=4, total_tokens=16), TreeConfig(depth=6, top_k=4, total_tokens=24),
)


@dataclass
class TreeTrial:
    tree: TreeConfig
    tau: float
    decode_s_per_token: float

    def to_dict(self) -> dict:
        return {**asdict(self.tree), "tau": round(self.tau, 3),
                "decode_ms_per_token": round(1000 * self.decode_s_per_token, 2)}


def tune_tree(model, draft, inputs, candidates: Sequence[TreeConfig] = TREE_CANDIDATES,
              max_new_tokens: int = 64, session: TargetSession | None = None) -> tuple[TreeConfig, list[TreeTrial]]:
    """The candidate tree with the least decode time per new token, measured end to end.

    The verify cost curve alone cannot choose: a bigger tree costs more per step
    and also accepts more per step, and how much more depends on the draft. So
    each candidate decodes the same (tuning) input with ``draft`` and the one
    whose decode phase (target prefill excluded, draft prefill included) is
    fastest per token wins. Run it on an input that is not benchmarked.

    Every candidate decodes from one prefill of ``inputs``: ``session`` when given (e.g.
    shared by several drafts: :func:`tuning_prefill`), else one made here.
    """
    target = wrap_target(model)
    own = session is None
    if own:
        session = tuning_prefill(target, [draft], inputs, candidates, max_new_tokens)
    trials = []
    try:
        for tree in candidates:
            result = SpeculativeGenerator(target, DraftProposer(draft, tree)).decode(session, max_new_tokens)
            s = result.stats
            trials.append(TreeTrial(tree, s.tau, s.decode_s / max(1, len(result.tokens) - 1)))
    finally:
        if own:
            session.release()
    best = min(trials, key=lambda t: t.decode_s_per_token)
    return best.tree, trials


def tuning_prefill(model, drafts, inputs, candidates: Sequence[TreeConfig] = TREE_CANDIDATES,
                   max_new_tokens: int = 64) -> TargetSession:
    """One prefill of ``inputs`` from which every one of ``drafts`` can decode with every candidate tree."""
    proposers = [DraftProposer(draft, tree) for draft in drafts for tree in candidates]
    return prefill(wrap_target(model), inputs, max_new_tokens, proposers)
