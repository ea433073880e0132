"""Target adapters and the preallocated cache: equivalence with HF, and named errors."""

import pytest
import torch
from conftest import appended, prompt_inputs, tiny_model

from sparrow_sd.errors import CacheCapacityError, InvalidInputError, UnsupportedModelError, VideoTokenMismatchError
from sparrow_sd.generate import SpeculativeGenerator
from sparrow_sd.kv_cache import PreallocatedCache
from sparrow_sd.targets import TargetSession, wrap_target
from sparrow_sd.tree import tree_attention_mask, tree_depths


def test_prefill_matches_plain_forward(arch):
    model = tiny_model(arch)
    inputs = prompt_inputs(model, arch, seed=0)
    with torch.no_grad():
        ref = model(**inputs, output_hidden_states=True)
    target = wrap_target(model)
    pre = TargetSession(target, inputs, room=4, capture_layers=(1,)).prefill
    torch.testing.assert_close(pre.last_logits, ref.logits[0, -1].float())
    torch.testing.assert_close(pre.hidden, ref.hidden_states[-1][0])
    torch.testing.assert_close(pre.layer_hidden[1], ref.hidden_states[2][0])  # [0] is the embeddings
    assert pre.visual_mask.sum() == (inputs["input_ids"] == model.config.video_token_id).sum()


def test_tree_verify_equals_sequential_decoding(arch):
    """Each node's logits equal those of decoding its root-to-node path one token at a time."""
    model = tiny_model(arch)
    inputs = prompt_inputs(model, arch, seed=1)
    target = wrap_target(model)
    parents = torch.tensor([-1, 0, 0, 1, 1, 3])
    tokens = torch.tensor([5, 9, 17, 23, 4, 42])
    session = TargetSession(target, inputs, room=64)
    start = session.length
    tree = session.verify(tokens, tree_attention_mask(parents), tree_depths(parents))
    for node, path in {3: [0, 1, 3], 5: [0, 1, 3, 5], 2: [0, 2]}.items():
        with torch.no_grad():
            ref = model.generate(**appended(inputs, tokens[path]), max_new_tokens=1, do_sample=False,
                                 output_logits=True, return_dict_in_generate=True)
        torch.testing.assert_close(tree.logits[node], ref.logits[0][0].float(), atol=1e-4, rtol=1e-4)
    # commit the path 0-1-3 and continue: the next token's logits match too
    session.commit(torch.tensor([0, 1, 3]))
    assert session.length == start + 3
    nxt = session.verify(tokens[5:6], torch.ones(1, 1, dtype=torch.bool), torch.zeros(1, dtype=torch.long))
    torch.testing.assert_close(nxt.logits[0], tree.logits[5], atol=1e-4, rtol=1e-4)


def test_cache_keep_moves_entries():
    cache = PreallocatedCache(num_layers=1, capacity=10)
    k = torch.arange(6.0).view(1, 1, 6, 1)
    cache.update(k, k, 0)
    cache.keep(2, torch.tensor([0, 2, 3]))
    layer = cache.layers[0]
    assert cache.length == 5 and layer.keys[0, 0, :5, 0].tolist() == [0, 1, 2, 4, 5]
    with pytest.raises(CacheCapacityError, match="holds 10 positions"):
        cache.update(torch.zeros(1, 1, 6, 1), torch.zeros(1, 1, 6, 1), 0)


def test_unsupported_model_is_named():
    from transformers import LlamaConfig, LlamaForCausalLM

    llama = LlamaForCausalLM(LlamaConfig(vocab_size=32, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                         intermediate_size=32))
    with pytest.raises(UnsupportedModelError, match="LlamaForCausalLM is not a supported target"):
        wrap_target(llama)


def test_video_token_count_mismatch_is_named(arch):
    model = tiny_model(arch)
    inputs = prompt_inputs(model, arch, seed=0, frames=4)
    ids = inputs["input_ids"]
    vid = model.config.video_token_id
    drop = (ids[0] == vid).nonzero()[0, 0]
    inputs["input_ids"] = torch.cat([ids[:, :drop], ids[:, drop + 1 :]], dim=1)  # one placeholder short
    with pytest.raises(VideoTokenMismatchError, match="needs"):
        SpeculativeGenerator(model).generate(inputs, max_new_tokens=2)


def test_other_bad_inputs(arch):
    model = tiny_model(arch)
    inputs = prompt_inputs(model, arch, seed=0)
    gen = SpeculativeGenerator(model)
    with pytest.raises(InvalidInputError, match="batch size must be 1"):
        gen.generate({**inputs, "input_ids": inputs["input_ids"].repeat(2, 1)}, max_new_tokens=2)
    with pytest.raises(InvalidInputError, match="no pixel_values_videos"):
        gen.generate({"input_ids": inputs["input_ids"]}, max_new_tokens=2)
    with pytest.raises(InvalidInputError, match="max_new_tokens"):
        gen.generate(inputs, max_new_tokens=0)
    with pytest.raises(InvalidInputError, match="temperature"):
        gen.generate(inputs, max_new_tokens=2, temperature=-1)


def test_flash_attention_is_refused():
    model = tiny_model("qwen2_vl")
    saved = model.config.get_text_config()._attn_implementation
    try:
        model.config.get_text_config()._attn_implementation = "flash_attention_2"
        with pytest.raises(UnsupportedModelError, match="cannot take tree masks"):
            wrap_target(model)
    finally:
        model.config.get_text_config()._attn_implementation = saved
