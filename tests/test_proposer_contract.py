"""The proposer contract (docs/engine.md): what the loop checks, and what a proposer author imports."""

import pytest
import torch
from conftest import hf_greedy, prompt_inputs, tiny_model

from sparrow_sd import (
    DraftTree,
    Proposer,
    ProposerError,
    DraftProposer,
    SpeculativeGenerator,
    TargetAdapter,
    TargetPrefill,
    TargetVerify,
    TreeConfig,
)
from sparrow_sd.testing.drafts import tiny_draft
from sparrow_sd.testing.oracle import OracleProposer


class EchoProposer(Proposer):
    """A proposer written from the package root alone: a chain repeating the last token."""

    max_tree_nodes = 3

    def start(self, target: TargetAdapter, prefill: TargetPrefill, first_token: int, max_new_tokens: int) -> None:
        assert prefill.hidden.shape[0] == prefill.input_ids.shape[0]
        self.last = first_token

    def propose(self) -> DraftTree:
        return DraftTree(torch.full((4,), self.last), torch.tensor([-1, 0, 1, 2]))

    def advance(self, tokens: torch.Tensor, hidden: torch.Tensor) -> None:
        assert hidden.shape[0] == tokens.shape[0]
        self.last = int(tokens[-1])


class ShiftedOracle(OracleProposer):
    """An off-by-one proposer: it roots its trees at the token *after* the last emitted one."""

    def _truth(self, i):
        return super()._truth(i + 1)


class Oversized(EchoProposer):
    max_tree_nodes = 2  # declares 2, proposes 3


def test_a_proposer_from_the_package_root_is_lossless():
    model = tiny_model("qwen2_vl")
    inputs = prompt_inputs(model, "qwen2_vl", seed=1, frames=2)
    ref = hf_greedy(model, inputs, 12)
    assert SpeculativeGenerator(model, EchoProposer()).generate(inputs, max_new_tokens=12).tokens == ref
    assert TargetVerify.__dataclass_fields__.keys() >= {"logits", "hidden"}


def test_the_loop_refuses_a_tree_not_rooted_at_the_last_emitted_token():
    model = tiny_model("qwen2_vl")
    inputs = prompt_inputs(model, "qwen2_vl", seed=1, frames=2)
    ref = hf_greedy(model, inputs, 12)
    with pytest.raises(ProposerError, match="rooted at token .* last emitted token is"):
        SpeculativeGenerator(model, ShiftedOracle(ref, depth=3, branching=1, error_rate=0.0)).generate(
            inputs, max_new_tokens=12)
    with pytest.raises(ProposerError, match="3 candidates but declares max_tree_nodes=2"):
        SpeculativeGenerator(model, Oversized()).generate(inputs, max_new_tokens=12)


def test_the_tree_budget_follows_a_changed_tree():
    model = tiny_model("qwen2_vl")
    inputs = prompt_inputs(model, "qwen2_vl", seed=2, frames=2)
    ref = hf_greedy(model, inputs, 16)
    proposer = DraftProposer(tiny_draft(model, seed=3), TreeConfig(depth=2, top_k=2, total_tokens=3))
    proposer.tree = TreeConfig(depth=4, top_k=4, total_tokens=14)
    assert proposer.max_tree_nodes == 14
    assert SpeculativeGenerator(model, proposer).generate(inputs, max_new_tokens=16).tokens == ref
