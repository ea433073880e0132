"""Candidate trees: their shape, masks and positions, and EAGLE-2 style growth.

A tree is two parallel lists: ``tokens`` and ``parents``. Node 0 is the root, the
last token already emitted (its keys are not in the target's cache yet); every
other node is a draft candidate whose parent comes before it (``parents[i] < i``),
so a tree is always in topological order and a root-to-leaf path has increasing
indices.

Everything here is pure bookkeeping on small integer tensors, no model: the
proposer calls the draft, :class:`TreeBuilder` decides which nodes to keep.

EAGLE-2's dynamic tree: at each depth, each frontier node proposes its ``top_k``
most likely children, scored by cumulative log-probability from the root; the
``top_k`` best of those form the next frontier; at the end the ``total_tokens``
best-scoring candidates of all depths form the tree. Since a child never scores
above its parent (log-probabilities are <= 0), the best-scoring set is closed
under taking parents, so it is a tree. A chain is the case ``top_k = 1``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class DraftTree:
    tokens: torch.Tensor  # (N,) long, node 0 = root
    parents: torch.Tensor  # (N,) long, parents[0] = -1, parents[i] < i

    def __len__(self) -> int:
        return self.tokens.shape[0]

    @property
    def depths(self) -> torch.Tensor:
        return tree_depths(self.parents)

    @property
    def mask(self) -> torch.Tensor:
        return tree_attention_mask(self.parents)

    @staticmethod
    def root_only(token: int) -> "DraftTree":
        return DraftTree(torch.tensor([token]), torch.tensor([-1]))


def _check_parents(parents: torch.Tensor) -> list[int]:
    plist = parents.tolist()
    if not plist or plist[0] != -1:
        raise ValueError("node 0 must be the root (parent -1)")
    for i, p in enumerate(plist[1:], start=1):
        if not 0 <= p < i:
            raise ValueError(f"node {i} has parent {p}: parents must come before their children")
    return plist


def tree_depths(parents: torch.Tensor) -> torch.Tensor:
    """Depth of each node; the root is at depth 0."""
    plist = _check_parents(parents)
    depths = [0] * len(plist)
    for i, p in enumerate(plist[1:], start=1):
        depths[i] = depths[p] + 1
    return torch.tensor(depths, dtype=torch.long)


def tree_attention_mask(parents: torch.Tensor) -> torch.Tensor:
    """(N, N) bool: row i is True at i and at every ancestor of i."""
    plist = _check_parents(parents)
    n = len(plist)
    mask = torch.zeros(n, n, dtype=torch.bool)
    for i, p in enumerate(plist):
        if p >= 0:
            mask[i] = mask[p]
        mask[i, i] = True
    return mask


def tree_position_ids(depths: torch.Tensor, start: int, offset: int = 0, mrope: bool = False) -> torch.Tensor:
    """Position ids of tree nodes that follow ``start`` cached positions.

    A node at depth d sits where it would sit in a plain sequence: ``start + d``,
    plus ``offset`` (for Qwen-VL, where text resumes after the video). Siblings share a position. Plain RoPE
    gives (1, N); M-RoPE gives (3, 1, N) with the three components equal, as for
    any text token after the prompt.
    """
    pos = depths.long() + start + offset
    return pos.view(1, 1, -1).expand(3, 1, -1) if mrope else pos.view(1, -1)


def children_lists(parents: torch.Tensor) -> list[list[int]]:
    """children[i]: the nodes whose parent is i, in index order."""
    plist = _check_parents(parents)
    children: list[list[int]] = [[] for _ in plist]
    for i, p in enumerate(plist[1:], start=1):
        children[p].append(i)
    return children


def root_to_leaf_paths(parents: torch.Tensor) -> list[list[int]]:
    """Every path from the root (included) to a leaf, leaves in index order."""
    plist = _check_parents(parents)
    children = children_lists(parents)
    paths = []
    for leaf in (i for i in range(len(plist)) if not children[i]):
        path = [leaf]
        while plist[path[-1]] >= 0:
            path.append(plist[path[-1]])
        paths.append(path[::-1])
    return paths


def ancestors(parents: list[int], node: int) -> list[int]:
    """The ancestors of ``node`` (root excluded), nearest first."""
    out = []
    node = parents[node]
    while node > 0:
        out.append(node)
        node = parents[node]
    return out


class TreeBuilder:
    """Grows an EAGLE-2 dynamic tree from the draft's per-node log-probabilities.

    Candidate 0 is the root. :meth:`expand` adds each frontier node's top children
    and returns the next frontier; :meth:`finish` keeps the best ``total_tokens``.
    """

    def __init__(self, root_token: int, top_k: int, total_tokens: int):
        if top_k < 1 or total_tokens < 1:
            raise ValueError("top_k and total_tokens must be at least 1")
        self.top_k = top_k
        self.total_tokens = total_tokens
        self.tokens = [int(root_token)]
        self.parents = [-1]
        self.scores = [0.0]

    def expand(self, frontier: list[int], child_tokens: torch.Tensor, child_logprobs: torch.Tensor) -> list[int]:
        """Add children of ``frontier`` nodes; return the next frontier (best ``top_k``).

        ``child_tokens`` and ``child_logprobs`` are (len(frontier), k): each frontier
        node's top-k continuations and their log-probabilities under the draft.
        """
        first = len(self.tokens)
        logprobs = child_logprobs.float().cpu().clamp(max=0.0)  # keeps children from outscoring parents
        cum = (torch.tensor([self.scores[f] for f in frontier]).unsqueeze(1) + logprobs).flatten()
        tokens = child_tokens.cpu().flatten().tolist()
        k = child_tokens.shape[1]
        for j, (tok, score) in enumerate(zip(tokens, cum.tolist())):
            self.tokens.append(int(tok))
            self.parents.append(frontier[j // k])
            self.scores.append(score)
        best = torch.topk(cum, min(self.top_k, cum.numel())).indices.sort().values
        return [first + int(j) for j in best]

    def finish(self) -> DraftTree:
        """The root and the ``total_tokens`` best candidates, parents before children."""
        n = len(self.tokens)
        order = sorted(range(1, n), key=lambda i: (-self.scores[i], self.depth(i), i))
        keep = set(order[: self.total_tokens])
        kept = [0] + sorted(keep, key=lambda i: (self.depth(i), i))
        new_index = {old: new for new, old in enumerate(kept)}
        parents = [-1] + [new_index[self.parents[i]] for i in kept[1:]]
        return DraftTree(torch.tensor([self.tokens[i] for i in kept]), torch.tensor(parents))

    def depth(self, node: int) -> int:
        d = 0
        while self.parents[node] >= 0:
            node = self.parents[node]
            d += 1
        return d
