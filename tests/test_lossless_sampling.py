"""Sampling must be distributed exactly as the target's own sampling.

The first new token comes from the prefill; the second and third come out of
tree verification (accepted candidates or bonus tokens). Their empirical
marginals over many seeded runs are compared with the exact marginals computed
from the Hugging Face model itself, by a chi-square test at alpha = 0.001 (cells
expected below 5 pooled). The seeds are fixed, so the test is deterministic.
"""

import copy

import numpy as np
import pytest
import torch
from scipy.stats import chisquare

from sparrow_sd.generate import SpeculativeGenerator
from sparrow_sd.proposers import DraftProposer, TreeConfig
from sparrow_sd.sampling import SamplingConfig, target_probs
from sparrow_sd.testing import build_tiny_model, make_video_inputs
from sparrow_sd.testing.drafts import tiny_draft

V = 32
RUNS = 1200


@torch.no_grad()
def exact_marginals(model, inputs, sampling):
    """P(t1), P(t2), P(t3) under the Hugging Face model, by enumeration over t1 and t2.

    Continuations run on copies of the model's own DynamicCache, with the positions
    its ``generate`` uses (the prompt's last M-RoPE position + 1, + 2).
    """
    out = model(**inputs, use_cache=True)
    types = inputs["mm_token_type_ids"]
    positions, _ = model.model.get_rope_index(inputs["input_ids"], types, video_grid_thw=inputs["video_grid_thw"])
    last = int(positions[0, 0, -1])

    def step(cache, token, offset):
        cache = copy.deepcopy(cache)
        pos = torch.full((3, 1, 1), last + offset)
        o = model(input_ids=torch.tensor([[token]]), past_key_values=cache, position_ids=pos, use_cache=True)
        return o.past_key_values, target_probs(o.logits[0, -1], sampling).double()

    p1 = target_probs(out.logits[0, -1], sampling).double()
    p2, p3 = torch.zeros(V, dtype=torch.float64), torch.zeros(V, dtype=torch.float64)
    for t1 in range(V):
        if p1[t1] < 1e-6:
            continue
        cache1, q2 = step(out.past_key_values, t1, 1)
        p2 += p1[t1] * q2
        for t2 in range(V):
            if p1[t1] * q2[t2] >= 1e-5:
                p3 += p1[t1] * q2[t2] * step(cache1, t2, 2)[1]
    return p1, p2, p3 / p3.sum()  # the tiny pruned mass (< 1e-3) is renormalised away


def pvalue(samples, probs):
    counts = np.bincount(samples, minlength=V).astype(float)
    expected = probs.numpy() * len(samples)
    impossible = expected == 0  # outside the top-p nucleus: must never be drawn
    assert counts[impossible].sum() == 0
    counts, expected = counts[~impossible], expected[~impossible]
    big = expected >= 5
    obs, exp = counts[big], expected[big]
    if (~big).any():  # pool the rare tokens into one cell
        obs, exp = np.append(obs, counts[~big].sum()), np.append(exp, expected[~big].sum())
    exp *= obs.sum() / exp.sum()
    return chisquare(obs, exp).pvalue


@pytest.mark.slow
@pytest.mark.parametrize("temperature,top_p", [(1.0, 1.0), (0.8, 0.9)])
def test_sampled_tokens_follow_the_target_distribution(temperature, top_p):
    arch = "qwen2_vl"
    model = build_tiny_model(arch, seed=4, vocab_size=V)
    model.generation_config.eos_token_id = None  # keep every run three tokens long
    inputs = make_video_inputs(arch, model, num_frames=2, prompt_ids_before=[1, 2, 3], prompt_ids_after=[4, 5], seed=1)
    sampling = SamplingConfig(temperature, top_p)
    p1, p2, p3 = exact_marginals(model, inputs, sampling)

    proposer = DraftProposer(tiny_draft(model, "none", seed=2), TreeConfig(depth=3, top_k=8, total_tokens=16))
    gen = SpeculativeGenerator(model, proposer, eos_token_ids=set())
    draws, accepted = [], 0
    for seed in range(RUNS):
        result = gen.generate(inputs, max_new_tokens=3, temperature=temperature, top_p=top_p, seed=seed)
        draws.append(result.tokens)
        accepted += sum(n - 1 for n in result.stats.accepted_per_step)
    draws = np.array(draws)
    assert accepted > 150, "the test must exercise accepted candidates, not only bonus tokens"
    for position, exact in enumerate((p1, p2, p3)):
        assert pvalue(draws[:, position], exact) > 1e-3, f"token {position + 1} is not distributed as the target's"
