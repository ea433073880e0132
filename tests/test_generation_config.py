"""The target's generation config is read as ``generate()`` reads it, and applied at every node.

Real checkpoints ship more than EOS ids: Qwen2-VL / Qwen2.5-VL Instruct ship
``repetition_penalty`` 1.05 with ``top_k`` / ``top_p``, and Hugging Face adds ``top_k=50``
when sampling. So outputs are compared with ``model.generate(**inputs)`` itself, the
settings only in ``model.generation_config``; sampling is compared with the exact
distribution that Hugging Face's own logits processors give.
"""

import copy

import numpy as np
import pytest
import torch
from conftest import assert_every_path_matches, prompt_inputs
from test_lossless_sampling import pvalue

from sparrow_sd import SamplingConfig, DraftProposer, SpeculativeGenerator, TreeConfig
from sparrow_sd.errors import InvalidInputError
from sparrow_sd.sampling import HF_DEFAULTS
from sparrow_sd.testing import build_tiny_model, make_video_inputs
from sparrow_sd.testing.drafts import tiny_draft
from sparrow_sd.testing.oracle import OracleProposer


def hf_default(model, inputs, max_new_tokens):
    """What a user gets from ``model.generate(**inputs)``: no decoding argument but the length."""
    return model.generate(**inputs, max_new_tokens=max_new_tokens)[0, inputs["input_ids"].shape[1]:].tolist()


def test_greedy_with_a_repetition_penalty_matches_generate(arch):
    model = build_tiny_model(arch)
    inputs = prompt_inputs(model, arch, seed=3, frames=2)
    plain = hf_default(model, inputs, 24)
    # greedy: sampling settings are ignored, as generate() ignores them with do_sample=False
    model.generation_config.update(repetition_penalty=1.5, top_k=3, top_p=0.5, temperature=0.3)
    ref = hf_default(model, inputs, 24)
    assert ref != plain, "the penalty must change the output"
    # deep accepted paths: each node is penalised over its own prefix (its ancestors included)
    assert_every_path_matches(model, inputs, ref, 24, oracle_depth=6, min_tau=3, oracle_seed=3,
                              tree=TreeConfig(depth=4, top_k=3, total_tokens=10))
    # a penalty below 1 (favouring repeats) and one passed as an argument
    model.generation_config.repetition_penalty = 0.7
    ref = hf_default(model, inputs, 16)
    oracle = OracleProposer(ref, depth=6, branching=2, error_rate=0.2, vocab_size=120, seed=4)
    assert SpeculativeGenerator(model, oracle).generate(inputs, max_new_tokens=16).tokens == ref
    model.generation_config.repetition_penalty = None
    proposer = DraftProposer(tiny_draft(model, seed=1), TreeConfig(depth=4, top_k=3, total_tokens=10))
    result = SpeculativeGenerator(model, proposer).generate(inputs, max_new_tokens=16, repetition_penalty=0.7)
    assert result.tokens == ref and result.sampling.repetition_penalty == 0.7


def test_a_qwen_instruct_generation_config_matches_generate():
    """Qwen2.5-VL-Instruct's shipped settings (sampling, top_k 1, top_p 0.001, penalty 1.05):
    a user's plain ``model.generate(**inputs)`` and ours give the same tokens."""
    arch = "qwen2_5_vl"
    model = build_tiny_model(arch)
    model.generation_config.update(do_sample=True, repetition_penalty=1.05, temperature=0.1, top_p=0.001, top_k=1)
    inputs = prompt_inputs(model, arch, seed=5, frames=2)
    torch.manual_seed(0)
    ref = hf_default(model, inputs, 20)
    proposer = DraftProposer(tiny_draft(model, seed=2), TreeConfig(depth=4, top_k=3, total_tokens=10))
    oracle = OracleProposer(ref, depth=5, branching=2, error_rate=0.2, vocab_size=120, seed=5)
    for p in (None, proposer, oracle):
        result = SpeculativeGenerator(model, p).generate(inputs, max_new_tokens=20)
        assert not result.sampling.greedy and result.tokens == ref


V = 32
RUNS = 800


@torch.no_grad()
def exact_marginals_hf(model, inputs):
    """P(t1), P(t2), P(t3) with Hugging Face's own logits processors, built by its generate()
    machinery from ``model.generation_config``, over each prefix (enumerating t1 and t2)."""
    config, _ = model._prepare_generation_config(None)
    prompt = inputs["input_ids"]
    processors = model._get_logits_processor(config, input_ids_seq_length=prompt.shape[1], device="cpu",
                                             model_kwargs={"attention_mask": inputs["attention_mask"]})
    out = model(**inputs, use_cache=True)
    positions, _ = model.model.get_rope_index(prompt, inputs["mm_token_type_ids"], video_grid_thw=inputs["video_grid_thw"])
    last = int(positions[0, 0, -1])

    def probs(logits, ids):
        return processors(torch.tensor([ids]), logits[None].float().clone())[0].softmax(-1).double()

    def step(cache, token, offset):
        cache = copy.deepcopy(cache)
        pos = torch.full((3, 1, 1), last + offset)
        o = model(input_ids=torch.tensor([[token]]), past_key_values=cache, position_ids=pos, use_cache=True)
        return o.past_key_values, o.logits[0, -1]

    ids = prompt[0].tolist()
    p1 = probs(out.logits[0, -1], ids)
    p2, p3 = torch.zeros(V, dtype=torch.float64), torch.zeros(V, dtype=torch.float64)
    for t1 in range(V):
        if p1[t1] < 1e-6:
            continue
        cache1, logits2 = step(out.past_key_values, t1, 1)
        q2 = probs(logits2, ids + [t1])
        p2 += p1[t1] * q2
        for t2 in range(V):
            if p1[t1] * q2[t2] >= 1e-5:
                p3 += p1[t1] * q2[t2] * probs(step(cache1, t2, 2)[1], ids + [t1, t2])
    return p1, p2, p3 / p3.sum()


@pytest.mark.slow
def test_sampling_with_every_supported_setting_follows_the_target_distribution():
    arch = "qwen2_vl"
    model = build_tiny_model(arch, seed=4, vocab_size=V)
    model.generation_config.update(eos_token_id=None, do_sample=True, temperature=1.3, top_k=12, top_p=0.97,
                                   min_p=0.02, repetition_penalty=3.0)
    # a strong penalty: the second and third tokens' distributions depend on the tokens before them
    inputs = make_video_inputs(arch, model, num_frames=2, prompt_ids_before=[1, 2, 3], prompt_ids_after=[4, 5], seed=1)
    exact = exact_marginals_hf(model, inputs)
    proposer = DraftProposer(tiny_draft(model, "none", seed=2), TreeConfig(depth=3, top_k=8, total_tokens=16))
    gen = SpeculativeGenerator(model, proposer, eos_token_ids=set())
    draws, accepted = [], 0
    for seed in range(RUNS):
        result = gen.generate(inputs, max_new_tokens=3, seed=seed)
        draws.append(result.tokens)
        accepted += sum(n - 1 for n in result.stats.accepted_per_step)
    assert result.sampling == SamplingConfig(1.3, 0.97, 12, 0.02, 3.0)
    draws = np.array(draws)
    assert accepted > RUNS // 10, "the test must exercise accepted candidates, not only bonus tokens"
    for position, p in enumerate(exact):
        assert pvalue(draws[:, position], p) > 1e-3, f"token {position + 1} is not distributed as the target's"


def test_settings_resolve_as_generate_resolves_them():
    from transformers import GenerationConfig

    hf = GenerationConfig._get_default_generation_params()
    assert {k: hf.get(k) for k in HF_DEFAULTS} == HF_DEFAULTS
    resolve = SamplingConfig.from_generation_config
    assert resolve(None) == SamplingConfig()  # greedy
    assert resolve(GenerationConfig(do_sample=True)) == SamplingConfig(1.0, top_k=50)  # generate()'s top_k
    shipped = GenerationConfig(do_sample=True, temperature=0.7, top_k=20, top_p=0.8, repetition_penalty=1.05)
    assert resolve(shipped) == SamplingConfig(0.7, 0.8, 20, None, 1.05)
    assert resolve(shipped, temperature=0) == SamplingConfig(repetition_penalty=1.05)  # 0: greedy
    assert resolve(shipped, top_k=0, min_p=0.1) == SamplingConfig(0.7, 0.8, 0, 0.1, 1.05)
    assert resolve(GenerationConfig(), temperature=0.5) == SamplingConfig(0.5, top_k=50)  # above 0: samples
    assert resolve(GenerationConfig(top_k=5, temperature=0.5)) == SamplingConfig()  # do_sample unset: greedy
    with pytest.raises(InvalidInputError, match="top_p"):
        resolve(None, top_p=0)
    with pytest.raises(InvalidInputError, match="repetition_penalty"):
        resolve(None, repetition_penalty=0)


@pytest.mark.parametrize("setting", [
    {"no_repeat_ngram_size": 2}, {"bad_words_ids": [[5]]}, {"suppress_tokens": [3]}, {"forced_eos_token_id": 2},
    {"num_beams": 2}, {"min_new_tokens": 3}, {"do_sample": True, "typical_p": 0.5},
])
def test_unsupported_generation_settings_are_refused_in_one_line(setting):
    model = build_tiny_model("qwen2_vl")
    model.generation_config.update(**setting)
    inputs = prompt_inputs(model, "qwen2_vl", seed=0, frames=2)
    name = next(k for k in setting if k != "do_sample")
    with pytest.raises(InvalidInputError, match=f"generation_config.{name}=") as info:
        SpeculativeGenerator(model).generate(inputs, max_new_tokens=4)
    assert "\n" not in str(info.value)


def test_library_calls_leave_the_global_rng_alone():
    model = build_tiny_model("qwen2_vl")
    inputs = prompt_inputs(model, "qwen2_vl", seed=0, frames=2)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    draft = tiny_draft(model, seed=7)
    SpeculativeGenerator(model, DraftProposer(draft)).generate(inputs, max_new_tokens=4, temperature=1.0, seed=None)
    assert torch.equal(torch.rand(3), expected)
    assert torch.equal(tiny_draft(model, seed=7).fc.weight, draft.fc.weight)  # still from its seed
