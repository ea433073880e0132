"""The Sparrow draft: text-anchored context, video-independent cost, files, mismatches."""

import pytest
import torch
from safetensors.torch import load_file
from conftest import prompt_inputs, tiny_model

from sparrow_sd.draft import DraftConfig, Draft, build_draft_context, load_draft, save_draft
from sparrow_sd.draft.kv import DraftKV
from sparrow_sd.errors import DraftTargetMismatchError, InvalidInputError
from sparrow_sd.generate import SpeculativeGenerator
from sparrow_sd.proposers import DraftProposer, TreeConfig
from sparrow_sd.targets import TargetSession, wrap_target
from sparrow_sd.testing import build_tiny_model, frames_for_tokens
from sparrow_sd.testing.drafts import tiny_draft


def prefill(model, arch, frames, layers=(1,)):
    target = wrap_target(model)
    inputs = prompt_inputs(model, arch, seed=0, frames=frames)
    return target, TargetSession(target, inputs, room=8, capture_layers=layers).prefill


class RecordingProposer(DraftProposer):
    """Records the number of items of every draft forward."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls = []
        forward = self.draft.forward

        def spy(embeds, hidden, kv, plan):
            self.calls.append((embeds.shape[0], plan.key_slots.shape[0]))
            return forward(embeds, hidden, kv, plan)

        self.draft.forward = spy


def test_draft_cost_does_not_depend_on_video_length(arch):
    """Same prompt text, a ~60-token and a ~700-token video: identical draft input shapes."""
    model = tiny_model(arch)
    short, long = frames_for_tokens(arch, model.config, 60), frames_for_tokens(arch, model.config, 700)
    runs = {}
    for frames in (short, long):
        proposer = RecordingProposer(tiny_draft(model, "none"), TreeConfig(depth=3, top_k=2, total_tokens=5))
        inputs = prompt_inputs(model, arch, seed=0, frames=frames)
        result = SpeculativeGenerator(model, proposer).generate(inputs, max_new_tokens=12)
        runs[frames] = (result.stats.visual_tokens, proposer.context_items, proposer.calls, result.stats.draft_cache_bytes)
    (vs, ctx_s, calls_s, bytes_s), (vl, ctx_l, calls_l, bytes_l) = runs[short], runs[long]
    assert vl > 8 * vs  # the long video really is long
    assert ctx_s == ctx_l == 5 + 6 + (2 if arch != "llava_onevision" else 0) - 1  # text items only
    assert calls_s[0] == calls_l[0] and calls_s[0][0] == ctx_s + 1  # draft prefill: prompt text + first token
    assert calls_s[:3] == calls_l[:3]  # prefill, then the first tree's two levels of 2 nodes
    assert calls_s[1][0] == calls_s[2][0] == 2
    bound = ctx_s + 1 + 12 + 3 * 2  # prompt text, first token, generated tokens, tree scratch
    assert max(keys for _, keys in calls_s + calls_l) <= bound  # never reads anything of the video
    assert bytes_s == bytes_l


def test_full_mode_grows_with_the_video(arch):
    model = tiny_model(arch)
    sizes = []
    for tokens in (60, 300):
        target, pre = prefill(model, arch, frames_for_tokens(arch, model.config, tokens))
        sizes.append((pre.num_visual_tokens, len(build_draft_context(pre, tiny_draft(model, "full").config))))
    (v1, n1), (v2, n2) = sizes
    assert n2 - n1 == v2 - v1  # one item per visual token


def test_context_per_visual_mode(arch):
    model = tiny_model(arch)
    target, pre = prefill(model, arch, frames_for_tokens(arch, model.config, 200))
    n_text = int((~pre.visual_mask[1:]).sum())
    n_vis = pre.num_visual_tokens
    ctx = {mode: build_draft_context(pre, tiny_draft(model, mode).config) for mode in ("none", "glimpse", "full", "pruned")}
    assert len(ctx["none"]) == n_text
    assert not pre.visual_mask[ctx["none"].source].any()
    assert len(ctx["glimpse"]) == n_text + 16 and (ctx["glimpse"].source[:16] == -1).all()
    assert len(ctx["full"]) == n_text + n_vis
    assert len(ctx["pruned"]) == n_text + -(-n_vis // 10)
    # each item pairs the embedding at p with the target state at p - 1
    full = ctx["full"]
    torch.testing.assert_close(full.hidden, pre.hidden[full.source - 1])
    torch.testing.assert_close(full.embeds, pre.input_embeds[full.source])
    # glimpse items average the intermediate layer over spans of the video
    glimpse = ctx["glimpse"]
    layer = tiny_draft(model, "glimpse").config.ivsb_layer
    first_span = torch.tensor_split(pre.visual_positions, 16)[0]
    torch.testing.assert_close(glimpse.embeds[0], pre.layer_hidden[layer][first_span].mean(0))


def test_ivsb_replaces_visual_embeddings_with_the_chosen_layer(arch):
    model = tiny_model(arch)
    target, pre = prefill(model, arch, 4, layers=(0, 1))
    for layer in (0, 1):
        ctx = build_draft_context(pre, tiny_draft(model, "full", ivsb_layer=layer).config)
        visual = pre.visual_mask[ctx.source]
        torch.testing.assert_close(ctx.embeds[visual], pre.layer_hidden[layer][ctx.source[visual]])
        torch.testing.assert_close(ctx.embeds[~visual], pre.input_embeds[ctx.source[~visual]])


def test_window_bounds_what_each_step_reads():
    kv = DraftKV(num_kv_heads=1, head_dim=4, capacity=200, window=16, dtype=torch.float32, device="cpu")
    kv.pin_prefix(6)
    kv.plan_extend(6)
    for _ in range(50):
        plan = kv.plan_extend(3)
        assert plan.key_slots.numel() <= 16 + 3
        assert plan.mask.sum(1).max() <= 16
        assert plan.mask[:, :6].all()  # the pinned prompt stays visible
    depths = torch.tensor([1, 1])
    plan = kv.plan_tree(depths, torch.eye(2, dtype=torch.bool))
    assert plan.mask.shape == (2, plan.key_slots.numel()) and plan.mask.sum(1).max() <= 16 + 1
    kv.rollback()
    assert kv.length == kv.committed == 6 + 150


@pytest.mark.parametrize("window,prompt", [(2, 1), (2, 3), (3, 1), (5, 2), (5, 9)])
def test_tree_nodes_deeper_than_the_window_see_what_the_window_rule_says(window, prompt):
    """A chain deeper than the window: each node sees exactly the items (committed ones and
    its ancestors, at the positions they would take if accepted) the window rule allows."""
    kv = DraftKV(num_kv_heads=1, head_dim=4, capacity=64, window=window, dtype=torch.float32, device="cpu")
    kv.pin_prefix(prompt)
    kv.plan_extend(prompt)
    kv.plan_extend(2)  # two emitted tokens
    committed, pinned, recent = kv.committed, kv.pinned, window - kv.pinned
    for depth in range(1, window + 4):
        plan = kv.plan_tree(torch.tensor([depth]), torch.ones(1, depth, dtype=torch.bool))  # chain: all ancestors
        q = committed + depth - 1
        slots = plan.key_slots[plan.mask[0]]
        seen = [int(s) if s < committed else int(kv.scratch_positions[s - committed]) for s in slots]
        assert sorted(seen) == [k for k in range(q + 1) if k < pinned or q - k < recent], (depth, seen)
    kv.rollback()
    assert kv.scratch_positions.numel() == 0 and kv.length == committed


@pytest.mark.parametrize("shape", [TreeConfig.chain(4), TreeConfig(depth=6, top_k=2, total_tokens=8)], ids=["chain", "tree"])
def test_draft_windows_smaller_than_the_tree(arch, shape):
    """window 2 with a short prompt and trees 4-6 deep: no crash, output still the target's."""
    from conftest import hf_greedy

    model = tiny_model(arch)
    inputs = prompt_inputs(model, arch, seed=2, frames=2, before=1, after=1)
    ref = hf_greedy(model, inputs, 10)
    for window in (2, 3):
        proposer = DraftProposer(tiny_draft(model, "none", seed=1, window=window), shape)
        assert SpeculativeGenerator(model, proposer).generate(inputs, max_new_tokens=10).tokens == ref


def test_save_load_roundtrip_gives_identical_logits(tmp_path, arch):
    model = tiny_model(arch)
    vocab = torch.arange(0, 100, 3)
    draft = tiny_draft(model, "glimpse", seed=3, draft_vocab=vocab)
    torch.nn.init.normal_(draft.fc.weight)  # not just the initial state
    save_draft(draft, tmp_path / "d")
    names = set(load_file(tmp_path / "d" / "model.safetensors"))
    assert {"fc.weight", "norm.weight", "lm_head.weight", "d2t", "t2d", "midlayer.self_attn.q_proj.weight"} <= names
    loaded = load_draft(tmp_path / "d")
    assert loaded.config == draft.config
    target = wrap_target(model)
    inputs = prompt_inputs(model, arch, seed=1, frames=4)
    outs = []
    for d in (draft, loaded):
        proposer = DraftProposer(d, TreeConfig(3, 2, 5))
        pre = TargetSession(target, inputs, 64, proposer.capture_layers).prefill
        proposer.start(target, pre, 7, 20)
        ctx = build_draft_context(pre, d.config)  # the prompt's logits, through the draft's public forward
        kv = d.new_cache(len(ctx), target.device, target.dtype)
        with torch.no_grad():
            _, logits = d(ctx.embeds, ctx.hidden, kv, kv.plan_extend(len(ctx)))
        outs.append((logits, proposer.propose().tokens))
    torch.testing.assert_close(outs[0][0], outs[1][0], rtol=0, atol=0)
    assert torch.equal(outs[0][1], outs[1][1])
    # a reduced vocabulary only ever proposes its own tokens
    assert set(outs[0][1][1:].tolist()) <= set(vocab.tolist())


def test_a_packed_draft_is_the_same_draft_in_bf16(tmp_path):
    """`sparrow drafts pack`: half the bytes, the training record kept, weights equal to bf16 rounding."""
    import json

    from sparrow_sd.cli import main

    draft = tiny_draft(tiny_model("qwen2_vl"), "none", seed=5)
    torch.nn.init.normal_(draft.fc.weight)
    source = save_draft(draft, tmp_path / "suite" / "sparrow")
    (source / "training.json").write_text(json.dumps({"steps": 12}))
    (tmp_path / "suite" / "suite.json").write_text(json.dumps({"command": "sparrow drafts build x", "drafts": {
        "sparrow": {"held_out_agreement": [0.5]}, "full": {"held_out_agreement": [0.4]}}}))
    assert main(["drafts", "pack", "--draft", str(source), "--out", str(tmp_path / "packed")]) == 0
    packed = tmp_path / "packed"
    assert (packed / "model.safetensors").stat().st_size < 0.6 * (source / "model.safetensors").stat().st_size
    assert json.loads((packed / "training.json").read_text()) == {"steps": 12}
    manifest = json.loads((packed / "manifest.json").read_text())
    assert manifest["weights_dtype"] == "bfloat16" and manifest["suite"]["command"] == "sparrow drafts build x"
    assert manifest["this_draft"] == {"held_out_agreement": [0.5]}
    loaded = load_draft(packed)
    assert loaded.config == draft.config and loaded.fc.weight.dtype == torch.float32
    assert torch.equal(loaded.fc.weight, draft.fc.weight.to(torch.bfloat16).float())
    assert torch.equal(loaded.d2t, draft.d2t) and torch.equal(loaded.t2d, draft.t2d)


def test_load_refuses_missing_or_corrupt_files(tmp_path):
    with pytest.raises(InvalidInputError, match="config.json is missing"):
        load_draft(tmp_path)
    draft = tiny_draft(tiny_model("qwen2_vl"))
    save_draft(draft, tmp_path / "d")
    (tmp_path / "d" / "model.safetensors").write_bytes(b"not a tensor file")
    with pytest.raises(InvalidInputError, match="cannot be read"):
        load_draft(tmp_path / "d")


def test_mismatched_draft_is_refused():
    qwen = tiny_model("qwen2_vl")
    wide = build_tiny_model("qwen2_vl", vocab_size=160)
    llava = tiny_model("llava_onevision")
    draft = tiny_draft(qwen)
    inputs = prompt_inputs(wide, "qwen2_vl", seed=0)
    with pytest.raises(DraftTargetMismatchError, match="vocabulary 128 vs target 160"):
        SpeculativeGenerator(wide, DraftProposer(draft)).generate(inputs, max_new_tokens=4)
    with pytest.raises(DraftTargetMismatchError, match="built for qwen2_vl"):
        SpeculativeGenerator(llava, DraftProposer(draft)).generate(prompt_inputs(llava, "llava_onevision", 0), 4)
    with pytest.raises(DraftTargetMismatchError, match="hidden size"):
        Draft.from_target(wrap_target(qwen), DraftConfig(32, 64, 2, 1, vocab_size=128))
    with pytest.raises(DraftTargetMismatchError, match="IVSB layer 9"):
        tiny_draft(qwen, "glimpse", ivsb_layer=9)
