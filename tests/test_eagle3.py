"""The eagle3-form draft: its layer, its aux-layer states, losslessness, training and export."""

import json

import pytest
import torch
from conftest import appended, hf_greedy, prompt_inputs, tiny_model
from safetensors.torch import load_file

from sparrow_sd.cli import main
from sparrow_sd.draft import DraftConfig, load_draft, save_draft
from sparrow_sd.draft.config import default_aux_layers
from sparrow_sd.draft.export import EAGLE3_ARCHITECTURE, export_eagle3
from sparrow_sd.errors import DraftTargetMismatchError, InvalidInputError
from sparrow_sd.generate import SpeculativeGenerator
from sparrow_sd.proposers import DraftProposer, TreeConfig
from sparrow_sd.targets import TargetSession, wrap_target
from sparrow_sd.testing.drafts import tiny_draft
from sparrow_sd.training.datagen import DatagenConfig, Sample, run_datagen
from sparrow_sd.training.records import prefill_from_record
from sparrow_sd.training.shards import DataShards
from sparrow_sd.training.trainer import DraftTrainConfig, sample_loss, train_draft

AUX = (0, 1, 2)  # the tiny targets have three layers


def eagle3_draft(model, seed=0, **overrides):
    draft = tiny_draft(model, "none", seed=seed, architecture="eagle3", aux_layers=AUX, **overrides)
    with torch.no_grad():  # norms away from 1 so that the reference below would notice a missing one
        for name, p in draft.named_parameters():
            if name.endswith("norm.weight"):
                p.uniform_(0.5, 1.5)
    return draft


def rms(x, w, eps):
    return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def reference_layer(draft, embeds, aux):
    """EAGLE-3's layer written out by hand: fc(aux) is the state and the residual; attention
    reads [input_layernorm(embeds), hidden_norm(state)]; causal, RoPE at 0..T-1; logits of norm(out)."""
    cfg, m = draft.config, draft.midlayer
    eps, hd, heads, kv = cfg.rms_norm_eps, cfg.head_dim, cfg.num_attention_heads, cfg.num_key_value_heads
    state = aux @ draft.fc.weight.T
    x = torch.cat([rms(embeds, m.input_layernorm.weight, eps), rms(state, m.hidden_norm.weight, eps)], -1)
    t = x.shape[0]
    q = (x @ m.self_attn.q_proj.weight.T).view(t, heads, hd)
    k = (x @ m.self_attn.k_proj.weight.T).view(t, kv, hd).repeat_interleave(heads // kv, dim=1)
    v = (x @ m.self_attn.v_proj.weight.T).view(t, kv, hd).repeat_interleave(heads // kv, dim=1)
    inv = 1.0 / cfg.rope_theta ** (torch.arange(0, hd, 2).float() / hd)
    angle = torch.arange(t).float()[:, None] * inv[None]
    cos, sin = torch.cat([angle.cos()] * 2, -1)[:, None], torch.cat([angle.sin()] * 2, -1)[:, None]

    def rope(z):
        return z * cos + torch.cat([-z[..., hd // 2:], z[..., : hd // 2]], -1) * sin

    q, k = rope(q), rope(k)
    scores = torch.einsum("qhd,khd->hqk", q, k) / hd**0.5
    scores = scores.masked_fill(~torch.ones(t, t, dtype=torch.bool).tril(), float("-inf"))
    attn = torch.einsum("hqk,khd->qhd", scores.softmax(-1), v).reshape(t, -1) @ m.self_attn.o_proj.weight.T
    h = state + attn
    mlp = m.mlp
    post = rms(h, m.post_attention_layernorm.weight, eps)
    out = h + (torch.nn.functional.silu(post @ mlp.gate_proj.weight.T) * (post @ mlp.up_proj.weight.T)) @ mlp.down_proj.weight.T
    return out, rms(out, draft.norm.weight, eps) @ draft.lm_head.weight.T


def test_eagle3_layer_is_the_eagle3_computation():
    model = tiny_model("qwen2_vl")
    draft = eagle3_draft(model).float()
    torch.manual_seed(0)
    embeds, aux = torch.randn(7, 64), torch.randn(7, 3 * 64)
    kv = draft.new_cache(16, "cpu", torch.float32)
    out, logits = draft(embeds, aux, kv, kv.plan_extend(7))
    ref_out, ref_logits = reference_layer(draft, embeds, aux)
    torch.testing.assert_close(out, ref_out, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(logits, ref_logits, rtol=1e-4, atol=1e-4)
    # its own fed-back state (H wide) skips fc; anything else is refused
    kv2 = draft.new_cache(16, "cpu", torch.float32)
    own, _ = draft(embeds[:1], out[:1], kv2, kv2.plan_extend(1))
    assert own.shape == (1, 64)
    with pytest.raises(DraftTargetMismatchError, match="width 100"):
        draft(embeds[:1], torch.randn(1, 100), kv2, kv2.plan_extend(1))


def test_eagle3_config_is_checked():
    base = dict(hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=2, vocab_size=128)
    with pytest.raises(InvalidInputError, match="three aux_layers"):
        DraftConfig(**base, architecture="eagle3")
    with pytest.raises(InvalidInputError, match="text-only"):
        DraftConfig(**base, architecture="eagle3", aux_layers=AUX, visual_mode="glimpse", ivsb_layer=1)
    with pytest.raises(InvalidInputError, match="eagle3 architecture only"):
        DraftConfig(**base, aux_layers=AUX)
    assert default_aux_layers(28) == (1, 13, 24)  # inputs of layers 2, 14, 25 (vLLM's default)
    assert default_aux_layers(3) == AUX
    with pytest.raises(DraftTargetMismatchError, match="aux layer 5"):
        tiny_draft(tiny_model("qwen2_vl"), architecture="eagle3", aux_layers=(0, 1, 5))


def test_verify_captures_the_same_aux_states_as_a_prefill():
    model = tiny_model("qwen2_vl")
    target = wrap_target(model)
    inputs = prompt_inputs(model, "qwen2_vl", seed=2, frames=4)
    extra = torch.tensor([9, 11, 13])
    full = TargetSession(target, appended(inputs, extra), room=1, capture_layers=AUX).prefill
    session = TargetSession(target, inputs, room=8, capture_layers=AUX)
    chain = torch.ones(3, 3, dtype=torch.bool).tril()
    out = session.verify(extra, chain, torch.arange(3), capture_layers=AUX)
    for layer in AUX:
        torch.testing.assert_close(out.layer_hidden[layer], full.layer_hidden[layer][-3:], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("shape", [TreeConfig(depth=4, top_k=3, total_tokens=10), TreeConfig.chain(4)],
                         ids=["tree", "chain"])
def test_eagle3_draft_matches_generate(arch, shape):
    model = tiny_model(arch)
    for seed in (3, 4):
        inputs = prompt_inputs(model, arch, seed, frames=4)
        ref = hf_greedy(model, inputs, 24)
        proposer = DraftProposer(eagle3_draft(model, seed=seed), shape)
        assert proposer.capture_layers == AUX and proposer.verify_layers == AUX
        result = SpeculativeGenerator(model, proposer).generate(inputs, max_new_tokens=24)
        assert result.tokens == ref


@pytest.fixture(scope="module")
def aux_data(tmp_path_factory):
    model = tiny_model("qwen2_vl")
    out = tmp_path_factory.mktemp("aux-data")
    samples = [Sample(f"s{i}", prompt_inputs(model, "qwen2_vl", seed=i, frames=4)) for i in range(6)]
    run_datagen(model, samples, out, DatagenConfig(max_new_tokens=12, aux_layers=AUX), progress=False)
    return model, out


def test_aux_records_rebuild_the_targets_aux_states(aux_data):
    model, out = aux_data
    record = DataShards(out)[0]
    assert record["aux"].shape == (record["hidden_positions"].numel(), 3 * 64)
    rebuilt = prefill_from_record(record, model.get_input_embeddings().weight.float(), None, aux_layers=AUX)
    target = wrap_target(model)
    inputs = prompt_inputs(model, "qwen2_vl", seed=0, frames=4)
    response = record["input_ids"][inputs["input_ids"].shape[1]:]
    live = TargetSession(target, appended(inputs, response), room=1, capture_layers=AUX).prefill
    where = record["hidden_positions"].long()
    for layer in AUX:  # stored in bf16
        torch.testing.assert_close(rebuilt.layer_hidden[layer][where], live.layer_hidden[layer][where].float(),
                                   rtol=2e-2, atol=2e-2)


def test_eagle3_trains_saves_and_exports(aux_data, tmp_path):
    model, out = aux_data
    cfg = DraftTrainConfig(architecture="eagle3", epochs=6, lr=3e-3, warmup=2, grad_accum=1, mtp_steps=2,
                           draft_vocab_size=48, eval_every=0, checkpoint_every=0, intermediate_size=64)
    draft = train_draft(model, out, tmp_path / "draft", cfg, progress=False, log=lambda m: None)
    assert draft.config.architecture == "eagle3" and draft.config.aux_layers == AUX
    index = DataShards(out)
    embed = model.get_input_embeddings().weight.float()
    fresh = eagle3_draft(model, draft_vocab=draft.to_target_ids(torch.arange(48)), intermediate_size=64).float()
    trained = sum(sample_loss(draft, index[i], embed, cfg)[0].item() for i in range(len(index)))
    untrained = sum(sample_loss(fresh, index[i], embed, cfg)[0].item() for i in range(len(index)))
    assert trained < 0.8 * untrained

    loaded = load_draft(tmp_path / "draft").float()
    kv_a, kv_b = loaded.new_cache(8, "cpu", torch.float32), draft.new_cache(8, "cpu", torch.float32)
    x, aux = torch.randn(3, 64), torch.randn(3, 192)
    assert torch.equal(loaded(x, aux, kv_a, kv_a.plan_extend(3))[1], draft(x, aux, kv_b, kv_b.plan_extend(3))[1])

    assert main(["export", "--to", "eagle3", "--draft", str(tmp_path / "draft"), "--out", str(tmp_path / "e3")]) == 0
    config = json.loads((tmp_path / "e3" / "config.json").read_text())
    assert config["architectures"] == [EAGLE3_ARCHITECTURE]
    assert config["draft_vocab_size"] == 48 and config["vocab_size"] == 128 and config["num_hidden_layers"] == 1
    assert config["eagle_aux_hidden_state_layer_ids"] == [1, 2, 3]  # vLLM: layer inputs
    assert config["eagle_config"]["eagle_aux_hidden_state_layer_ids"] == [0, 1, 2]  # SGLang: layer outputs
    weights = load_file(tmp_path / "e3" / "model.safetensors")
    h, inter, heads, kvh, hd = 64, 64, 4, 2, 16
    expected = {
        "fc.weight": (h, 3 * h), "midlayer.self_attn.q_proj.weight": (heads * hd, 2 * h),
        "midlayer.self_attn.k_proj.weight": (kvh * hd, 2 * h), "midlayer.self_attn.v_proj.weight": (kvh * hd, 2 * h),
        "midlayer.self_attn.o_proj.weight": (h, heads * hd), "midlayer.mlp.gate_proj.weight": (inter, h),
        "midlayer.mlp.up_proj.weight": (inter, h), "midlayer.mlp.down_proj.weight": (h, inter),
        "midlayer.input_layernorm.weight": (h,), "midlayer.hidden_norm.weight": (h,),
        "midlayer.post_attention_layernorm.weight": (h,), "norm.weight": (h,), "lm_head.weight": (48, h),
        "d2t": (48,), "t2d": (128,),
    }
    assert {k: tuple(v.shape) for k, v in weights.items()} == expected
    assert weights["d2t"].dtype == torch.int64 and weights["t2d"].dtype == torch.bool
    # EAGLE-3's d2t convention: target id = draft id + d2t[draft id]
    assert torch.equal(torch.arange(48) + weights["d2t"], draft.to_target_ids(torch.arange(48)))
    assert int(weights["t2d"].sum()) == 48


def test_export_writes_the_trained_dtype_and_the_targets_positions(tmp_path, capsys):
    from sparrow_sd.testing import build_tiny_model

    model = build_tiny_model("qwen2_vl")
    model.config.get_text_config().max_position_embeddings = 4096  # not the old constant
    draft = eagle3_draft(model)
    assert draft.config.target_max_position_embeddings == 4096
    save_draft(draft, tmp_path / "d")  # fp32 weights, as training writes them
    (tmp_path / "d" / "training.json").write_text(json.dumps({"settings": {"mixed_precision": "bf16"}}))

    def export(*flags):
        out = tmp_path / f"e3{len(flags)}"
        assert main(["export", "--to", "eagle3", "--draft", str(tmp_path / "d"), "--out", str(out), *flags]) == 0
        return json.loads((out / "config.json").read_text()), load_file(out / "model.safetensors")

    config, weights = export()  # trained in bf16: bf16 by default
    assert config["torch_dtype"] == "bfloat16" and weights["fc.weight"].dtype == torch.bfloat16
    assert config["max_position_embeddings"] == 4096
    assert weights["d2t"].dtype == torch.int64 and weights["t2d"].dtype == torch.bool
    config, weights = export("--dtype", "fp32", "--max-position-embeddings", "8192")
    assert config["torch_dtype"] == "float32" and weights["fc.weight"].dtype == torch.float32
    assert config["max_position_embeddings"] == 8192
    assert torch.equal(weights["fc.weight"], draft.fc.weight)

    # a draft from before the target's positions were recorded, with no training record: its stored dtype
    draft.config.target_max_position_embeddings = None
    save_draft(draft, tmp_path / "old", dtype=torch.float16)
    with pytest.raises(InvalidInputError, match="--max-position-embeddings"):
        export_eagle3(tmp_path / "old", tmp_path / "out")
    export_eagle3(tmp_path / "old", tmp_path / "out", max_position_embeddings=2048)
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["torch_dtype"] == "float16" and config["max_position_embeddings"] == 2048


def test_export_refuses_a_sparrow_form_draft(tmp_path):
    save_draft(tiny_draft(tiny_model("qwen2_vl")), tmp_path / "d")
    with pytest.raises(InvalidInputError, match="only drafts trained with `--architecture eagle3`"):
        export_eagle3(tmp_path / "d", tmp_path / "out")


def test_eagle3_training_needs_aux_data(tmp_path):
    model = tiny_model("qwen2_vl")
    samples = [Sample("s0", prompt_inputs(model, "qwen2_vl", seed=0, frames=4))]
    run_datagen(model, samples, tmp_path, DatagenConfig(max_new_tokens=4), progress=False)
    with pytest.raises(InvalidInputError, match="--aux-layers default"):
        train_draft(model, tmp_path, tmp_path / "d", DraftTrainConfig(architecture="eagle3"), progress=False,
                    log=lambda m: None)
