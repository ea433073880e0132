"""Greedy output must be token-identical to the model's own ``generate(do_sample=False)``.

Every decoding path is checked on the three architectures: the autoregressive
baseline, the Sparrow draft (random weights: short accepts) in tree and chain
shape and in every visual mode, and an oracle proposer (long accepts: deep paths,
EOS mid-path, max_new_tokens mid-path).
"""

import pytest
import torch
from conftest import hf_greedy, prompt_inputs, tiny_model

from sparrow_sd.generate import SpeculativeGenerator
from sparrow_sd.proposers import SparrowProposer, TreeConfig
from sparrow_sd.testing.drafts import tiny_draft
from sparrow_sd.testing.oracle import OracleProposer

TREE = TreeConfig(depth=4, top_k=3, total_tokens=10)
CHAIN = TreeConfig.chain(4)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_autoregressive_matches_generate(arch, seed):
    model = tiny_model(arch)
    inputs = prompt_inputs(model, arch, seed, frames=2 + 2 * seed)
    for max_new in (1, 7, 30):
        ref = hf_greedy(model, inputs, max_new)
        assert SpeculativeGenerator(model).generate(inputs, max_new_tokens=max_new).tokens == ref


@pytest.mark.parametrize("shape", [TREE, CHAIN], ids=["tree", "chain"])
@pytest.mark.parametrize("mode", ["none", "glimpse", "full", "pruned"])
def test_sparrow_draft_matches_generate(arch, shape, mode):
    model = tiny_model(arch)
    for seed in (3, 4):
        inputs = prompt_inputs(model, arch, seed, frames=4)
        ref = hf_greedy(model, inputs, 24)
        proposer = SparrowProposer(tiny_draft(model, mode, seed=seed), shape)
        result = SpeculativeGenerator(model, proposer).generate(inputs, max_new_tokens=24)
        assert result.tokens == ref
        assert result.stats.steps == len(result.stats.accepted_per_step)
        assert sum(result.stats.accepted_per_step) == len(ref) - 1  # all but the prefill's token


@pytest.mark.parametrize("shape", ["tree", "chain"])
def test_oracle_draft_long_accepts(arch, shape):
    model = tiny_model(arch)
    branching = 3 if shape == "tree" else 1
    for seed in (5, 6):
        inputs = prompt_inputs(model, arch, seed, frames=6)
        for max_new in (13, 40):  # 13: the budget usually runs out in the middle of a path
            ref = hf_greedy(model, inputs, max_new)
            oracle = OracleProposer(ref, depth=6, branching=branching, error_rate=0.3, vocab_size=120, seed=seed)
            result = SpeculativeGenerator(model, oracle).generate(inputs, max_new_tokens=max_new)
            assert result.tokens == ref
            if len(ref) == max_new and max_new == 40:
                assert result.stats.tau > 3.0, "the oracle should be accepted deep into its paths"


def test_eos_in_the_middle_of_an_accepted_path(arch):
    model = tiny_model(arch)
    inputs = prompt_inputs(model, arch, seed=7, frames=4)
    free = hf_greedy(model, inputs, 30)
    # Declare as EOS a token the model emits at step >= 5, so generation must stop there.
    stop_at = next(i for i in range(5, len(free)) if free[i] not in free[:i])
    eos = free[stop_at]
    ref = hf_greedy(model, inputs, 30, eos_token_id=eos)
    assert ref == free[: stop_at + 1]
    oracle = OracleProposer(free, depth=8, branching=2, error_rate=0.0, vocab_size=120)
    gen = SpeculativeGenerator(model, oracle, eos_token_ids={eos})
    result = gen.generate(inputs, max_new_tokens=30)
    assert result.tokens == ref
    assert result.stats.accepted_per_step[-1] <= 8  # the last step was cut at EOS


def test_many_prompts_and_lengths_qwen25():
    """A wider sweep on one architecture: prompts, video lengths and budgets."""
    arch = "qwen2_5_vl"
    model = tiny_model(arch)
    draft = tiny_draft(model, "none", seed=11)
    for seed in range(8, 14):
        inputs = prompt_inputs(model, arch, seed, frames=2 * (seed % 4) + 2, before=seed % 5, after=3 + seed % 4)
        max_new = 5 + 7 * (seed % 3)
        ref = hf_greedy(model, inputs, max_new)
        result = SpeculativeGenerator(model, SparrowProposer(draft, TREE)).generate(inputs, max_new_tokens=max_new)
        assert result.tokens == ref


def test_bfloat16_target_is_lossless_too():
    """In bf16 the tree forward and the sequential forward round differently; check
    that output still matches generate() on these prompts (the usual serving dtype)."""
    from sparrow_sd.testing import build_tiny_model

    model = build_tiny_model("qwen2_vl", seed=0, dtype=torch.bfloat16)
    inputs = prompt_inputs(model, "qwen2_vl", seed=2, frames=4)
    inputs["pixel_values_videos"] = inputs["pixel_values_videos"].to(torch.bfloat16)
    ref = hf_greedy(model, inputs, 20)
    ar = SpeculativeGenerator(model).generate(inputs, max_new_tokens=20)
    assert ar.tokens == ref
