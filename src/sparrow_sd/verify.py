"""Verification: which of the draft's candidates the target keeps.

Both rules walk the tree from the root. At each node the target's distribution
for the next token decides whether one of the node's children is accepted; the
walk stops at the first node where none is, and the target's own choice there is
the bonus token. So every step emits at least one token, and every emitted token
is one the target alone would have produced.

* Greedy: accept the child whose token is the target's argmax.
* Sampling: multi-candidate rejection sampling (SpecInfer, EAGLE). Child c_i,
  proposed with distribution q_i, is accepted with probability
  min(1, p(c_i) / q_i(c_i)); on rejection the target distribution becomes the
  residual norm(max(p - q_i, 0)) and the next child is tried; if all fail, the
  bonus token is drawn from the last residual. The output is distributed exactly
  as p. EAGLE-2's children are the draft's *top-k*, chosen deterministically, so
  the distribution that truly proposed each child is a point mass on it: q_i =
  one-hot(c_i). Then accepting means probability p(c_i), and the residual is p
  with c_i removed and renormalised. (Using the draft's soft probabilities as q
  for deterministic candidates, as some implementations do, is not lossless.)
"""

from __future__ import annotations

import torch

from .tree import children_lists


def verify_greedy(tokens: torch.Tensor, parents: torch.Tensor, logits: torch.Tensor) -> tuple[list[int], int]:
    """Longest path of children matching the target's argmax, and the bonus token.

    Returns (accepted node indices, root excluded, in path order; bonus token id).
    """
    children = children_lists(parents)
    choice = logits.argmax(dim=-1).tolist()
    token_list = tokens.tolist()
    path: list[int] = []
    node = 0
    while True:
        nxt = next((c for c in children[node] if token_list[c] == choice[node]), None)
        if nxt is None:
            return path, choice[node]
        path.append(nxt)
        node = nxt


def verify_sampling(
    tokens: torch.Tensor,
    parents: torch.Tensor,
    probs: torch.Tensor,
    generator: torch.Generator | None = None,
) -> tuple[list[int], int]:
    """Rejection sampling over the tree with point-mass proposals (see module doc).

    ``probs`` (N, V) are the target's (warped) next-token probabilities at each node.
    """
    children = children_lists(parents)
    token_list = tokens.tolist()
    path: list[int] = []
    node = 0
    while True:
        residual = probs[node].double().clone()
        accepted = None
        for child in children[node]:
            tok = token_list[child]
            mass = residual.sum()
            if mass <= 0:
                break
            u = torch.rand((), generator=generator, dtype=torch.float64)
            if u * mass < residual[tok]:  # accept with probability p(tok) / sum(p)
                accepted = child
                break
            residual[tok] = 0.0  # residual of a point mass: drop the token
        if accepted is None:
            bonus = torch.multinomial(residual.float(), 1, generator=generator).item()
            return path, int(bonus)
        path.append(accepted)
        node = accepted
