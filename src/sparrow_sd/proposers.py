"""Proposers: what suggests candidate tokens to the target.

Proposing is kept apart from verifying (as in Hugging Face's candidate
generators): the decoding loop only asks a proposer for a tree, hands it the
target's verdict, and never looks inside. The contract a proposer keeps (the
loop checks the tree and raises :class:`~sparrow_sd.errors.ProposerError`):

* ``max_tree_nodes``: the most candidates (nodes besides the root) any tree will
  hold; read before each decode (a session's cache must have room for it).
  ``capture_layers`` / ``verify_layers``: target decoder layers whose outputs it
  needs at the prefill / at verified nodes (empty by default).
* ``start(target, prefill, first_token, max_new_tokens)``: once per decode, with
  the (stateless) target adapter, the prompt's prefill (a session's, possibly
  shared by several decodes: read it, do not change it) and the first emitted
  token (skipped when that token already ends the generation).
* ``propose()``: a :class:`~sparrow_sd.tree.DraftTree` whose node 0, the root, is
  the last emitted token (``first_token``, then the last token of the latest
  ``advance``); parents before children (``parents[0] == -1``, ``parents[i] < i``);
  at most ``max_tree_nodes`` candidates; token ids in the target's vocabulary.
* ``advance(tokens, states)``: the tokens the step emitted (the accepted path, then
  the bonus token, whose last is the next root) and :meth:`Proposer.states` of
  the verify at the root and the accepted nodes, i.e. at the positions before
  each emitted token. Not called after the generation's last step.

Whatever a proposer proposes, the output is the target's own: a poor tree costs
speed, never a token.

:class:`NullProposer` proposes nothing, which turns the same loop into plain
autoregressive decoding on the same cache: the baseline runs on equal terms.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch

from .draft.context import build_draft_context, target_states
from .draft.model import Draft
from .errors import InvalidInputError
from .targets.base import TargetAdapter, TargetPrefill, TargetVerify
from .tree import DraftTree, TreeBuilder, ancestors


@dataclass(frozen=True)
class TreeConfig:
    """EAGLE-2 dynamic tree: ``depth`` levels, ``top_k`` children per expanded node,
    ``total_tokens`` candidates kept (root excluded). ``top_k = 1`` is a chain."""

    depth: int = 5
    top_k: int = 4
    total_tokens: int = 16

    def __post_init__(self):
        if self.depth < 1 or self.top_k < 1 or self.total_tokens < 1:
            raise InvalidInputError("tree depth, top_k and total_tokens must be at least 1")

    @classmethod
    def chain(cls, depth: int) -> "TreeConfig":
        return cls(depth=depth, top_k=1, total_tokens=depth)


class Proposer(ABC):
    #: target decoder layers whose prefill outputs this proposer needs
    capture_layers: tuple[int, ...] = ()
    #: target decoder layers whose outputs at the verified nodes this proposer needs
    verify_layers: tuple[int, ...] = ()
    #: number of candidate nodes a tree can hold at most (for cache sizing)
    max_tree_nodes: int = 0

    @abstractmethod
    def start(self, target: TargetAdapter, prefill: TargetPrefill, first_token: int, max_new_tokens: int) -> None: ...

    @abstractmethod
    def propose(self) -> DraftTree: ...

    @abstractmethod
    def advance(self, tokens: torch.Tensor, hidden: torch.Tensor) -> None: ...

    def cache_bytes(self) -> int:
        return 0

    def states(self, view: TargetPrefill | TargetVerify) -> torch.Tensor:
        """What :meth:`advance` reads of the target at each position: its last-layer state by default."""
        return view.hidden


class NullProposer(Proposer):
    """No candidates: each step verifies the root alone, i.e. autoregressive decoding."""

    def start(self, target, prefill, first_token, max_new_tokens):
        self._root = first_token

    def propose(self) -> DraftTree:
        return DraftTree.root_only(self._root)

    def advance(self, tokens, hidden):
        self._root = int(tokens[-1])


class DraftProposer(Proposer):
    """Grows EAGLE-2 trees with a :class:`Draft` (any visual mode)."""

    def __init__(self, draft: Draft, tree: TreeConfig = TreeConfig()):
        self.draft = draft.eval()
        self.tree = tree
        cfg = draft.config
        self.verify_layers = tuple(cfg.aux_layers or ())
        self.capture_layers = self.verify_layers + ((cfg.ivsb_layer,) if cfg.ivsb_layer is not None else ())
        self.kv = None
        self.context_items = 0

    @property
    def max_tree_nodes(self) -> int:
        """Read from ``tree``, so that a new ``tree`` set between generations takes effect."""
        return self.tree.total_tokens

    @torch.inference_mode()
    def start(self, target, prefill, first_token, max_new_tokens):
        self.draft.check_target(target)
        self.target = target
        ctx = build_draft_context(prefill, self.draft.config)
        self.context_items = len(ctx)
        scratch = (self.tree.depth - 1) * self.tree.top_k
        capacity = len(ctx) + max_new_tokens + self.tree.depth + scratch + 2
        self.kv = self.draft.new_cache(capacity, target.device, target.dtype)
        self.kv.pin_prefix(len(ctx))
        embeds = torch.cat([ctx.embeds, target.embed_tokens(torch.tensor([first_token], device=target.device))])
        hidden = torch.cat([ctx.hidden, self.states(prefill)[-1:]])
        self._extend(embeds, hidden, first_token)

    def _extend(self, embeds: torch.Tensor, hidden: torch.Tensor, last_token: int) -> None:
        out, logits = self.draft(embeds, hidden, self.kv, self.kv.plan_extend(embeds.shape[0]))
        self._root_token, self._root_hidden, self._root_logits = last_token, out[-1], logits[-1]

    def _top_children(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logp = torch.log_softmax(logits.float(), dim=-1)
        top = torch.topk(logp, min(self.tree.top_k, logp.shape[-1]), dim=-1)
        return self.draft.to_target_ids(top.indices), top.values

    @torch.inference_mode()
    def propose(self) -> DraftTree:
        builder = TreeBuilder(self._root_token, self.tree.top_k, self.tree.total_tokens)
        tokens, logp = self._top_children(self._root_logits[None])
        frontier = builder.expand([0], tokens, logp)
        state = {0: self._root_hidden}  # draft output hidden state of each fed node
        scratch_slot: dict[int, int] = {}  # node -> index among the scratch tree slots
        for depth in range(2, self.tree.depth + 1):
            n_before = len(scratch_slot)
            ancestry = torch.zeros(len(frontier), n_before + len(frontier), dtype=torch.bool)
            for row, node in enumerate(frontier):
                for anc in ancestors(builder.parents, node):
                    ancestry[row, scratch_slot[anc]] = True
                ancestry[row, n_before + row] = True
                scratch_slot[node] = n_before + row
            plan = self.kv.plan_tree(torch.full((len(frontier),), depth - 1), ancestry)
            node_tokens = torch.tensor([builder.tokens[n] for n in frontier], device=self.target.device)
            parent_hidden = torch.stack([state[builder.parents[n]] for n in frontier])
            out, logits = self.draft(self.target.embed_tokens(node_tokens), parent_hidden, self.kv, plan)
            for row, node in enumerate(frontier):
                state[node] = out[row]
            tokens, logp = self._top_children(logits)
            frontier = builder.expand(frontier, tokens, logp)
        return builder.finish()

    @torch.inference_mode()
    def advance(self, tokens, hidden):
        embeds = self.target.embed_tokens(tokens.to(self.target.device))
        self._extend(embeds, hidden, int(tokens[-1]))

    def cache_bytes(self) -> int:
        return 0 if self.kv is None else self.kv.nbytes()

    def states(self, view):
        return target_states(view, self.draft.config)
