"""Test proposers that know the answer, to drive verification down deep paths.

A random draft is rejected almost at once, so it never exercises long accepted
paths, EOS in the middle of a path, or ``max_new_tokens`` running out mid-path.
:class:`OracleProposer` is given the target's own greedy continuation and
proposes it, hidden among decoy branches and sometimes corrupted at a random
depth, so every shape of acceptance happens. It plugs into the same loop as the
real draft, which is the point: the verifier cannot tell them apart.
"""

from __future__ import annotations

import random

import torch

from ..proposers import Proposer
from ..tree import DraftTree


class OracleProposer(Proposer):
    def __init__(
        self,
        continuation: list[int],
        depth: int = 6,
        branching: int = 2,
        error_rate: float = 0.2,
        vocab_size: int = 100,
        seed: int = 0,
    ):
        self.continuation = list(continuation)
        self.depth = depth
        self.branching = branching
        self.error_rate = error_rate
        self.vocab_size = vocab_size
        self.rng = random.Random(seed)
        self.max_tree_nodes = depth * branching

    def start(self, target, prefill, first_token, max_new_tokens):
        assert first_token == self.continuation[0], "the oracle was given another continuation"
        self.emitted = 1

    def _truth(self, i: int) -> int:
        return self.continuation[i] if i < len(self.continuation) else self.rng.randrange(self.vocab_size)

    def propose(self) -> DraftTree:
        tokens, parents = [self._truth(self.emitted - 1)], [-1]
        spine = 0  # the node on the (possibly corrupted) true branch
        wrong_from = self.rng.randrange(1, self.depth + 1) if self.rng.random() < self.error_rate else None
        for level in range(1, self.depth + 1):
            true_tok = self._truth(self.emitted + level - 1)
            candidate = true_tok if wrong_from is None or level < wrong_from else (true_tok + 1) % self.vocab_size
            siblings = {candidate}
            while len(siblings) < self.branching:
                siblings.add(self.rng.randrange(self.vocab_size))
            order = list(siblings)
            self.rng.shuffle(order)
            first = len(tokens)
            for tok in order:
                tokens.append(tok)
                parents.append(spine)
            spine = first + order.index(candidate)
        return DraftTree(torch.tensor(tokens), torch.tensor(parents))

    def advance(self, tokens, hidden):
        n = len(tokens)
        assert tokens.tolist() == self.continuation[self.emitted : self.emitted + n], "emitted tokens left the oracle"
        self.emitted += n
