"""Tiny random Video LLMs: they build, read the video, and accept exactly the
placeholder count we compute; plus the transformers 5.23 behaviours the
decoder relies on (M-RoPE positions in generate, mm_token_type_ids)."""

import pytest
import torch

from sparrow_sd.testing import (
    ARCHS,
    build_tiny_model,
    default_frame_size,
    frames_for_tokens,
    make_video_inputs,
    num_video_tokens,
    spec_from_config,
    video_block_span,
)

QWEN = ("qwen2_vl", "qwen2_5_vl")
BEFORE = [5, 6, 7]
AFTER = [8, 9]


@pytest.fixture(scope="module", params=ARCHS)
def model(request):
    return build_tiny_model(request.param, seed=0)


def arch_of(model):
    return model.tiny_spec.arch


def frame_sizes(arch, model):
    """(frames, height, width) cases, including Qwen's padded odd frame count
    and a non-square frame."""
    h, w = default_frame_size(arch, model.config)
    if arch in QWEN:
        return [(2, h, w), (3, h, w), (4, 8, 24)]
    return [(1, h, w), (3, h, w)]


def logits(model, inputs):
    with torch.no_grad():
        return model(**inputs).logits


def test_builds_with_consistent_spec(model):
    arch = arch_of(model)
    spec = model.tiny_spec
    assert not model.training
    assert model.config.model_type == arch
    assert model.config.text_config.vocab_size == spec.vocab_size == 128
    assert sum(p.numel() for p in model.parameters()) < 500_000
    assert all(0 <= i < spec.vocab_size for i in spec.special_token_ids)
    assert not set(spec.text_token_range) & set(spec.special_token_ids)
    assert model.lm_head.out_features == spec.vocab_size  # eos is an emittable id
    assert spec_from_config(arch, model.config) == spec
    assert model.generation_config.eos_token_id == spec.eos_token_id
    assert model.generation_config.pad_token_id == spec.pad_token_id


def test_seed_reproducible():
    a, b, c = (build_tiny_model("qwen2_vl", seed=s) for s in (1, 1, 2))
    wa, wb, wc = (m.lm_head.weight for m in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)


def test_token_count_matches_forward(model):
    arch = arch_of(model)
    for frames, h, w in frame_sizes(arch, model):
        inputs = make_video_inputs(arch, model, frames, h, w, BEFORE, AFTER, seed=1)
        n = num_video_tokens(arch, model.config, frames, h, w)
        start, end = video_block_span(arch, model, inputs["input_ids"])
        assert (end - start) == n
        assert start == len(BEFORE) + (1 if arch in QWEN else 0)  # Qwen's vision_start
        out = logits(model, inputs)
        assert out.shape == (1, inputs["input_ids"].shape[1], model.tiny_spec.vocab_size)
        assert torch.isfinite(out).all()


@pytest.mark.parametrize("delta", [-1, 1])
def test_wrong_placeholder_count_raises(model, delta):
    arch = arch_of(model)
    inputs = make_video_inputs(arch, model, 2, prompt_ids_before=BEFORE, prompt_ids_after=AFTER)
    start, end = video_block_span(arch, model, inputs["input_ids"])
    for key in ("input_ids", "attention_mask", "mm_token_type_ids"):
        if key in inputs:  # drop the last placeholder, or repeat it
            t = inputs[key]
            last = t[:, end - 1 : end]
            inputs[key] = torch.cat([t[:, : end - 1], *[last] * (1 + delta), t[:, end:]], dim=1)
    with pytest.raises(ValueError, match="do not match"):
        logits(model, inputs)


def test_frame_size_validation():
    qwen = build_tiny_model("qwen2_vl")
    with pytest.raises(ValueError):
        num_video_tokens("qwen2_vl", qwen.config, 2, 12, 16)  # not a multiple of 8
    llava = build_tiny_model("llava_onevision")
    with pytest.raises(ValueError):
        make_video_inputs("llava_onevision", llava, 2, 32, 32)  # not image_size
    with pytest.raises(ValueError):
        build_tiny_model("llama")


def test_frames_for_tokens_short_and_long(model):
    arch = arch_of(model)
    h, w = default_frame_size(arch, model.config)
    for target in (16, 400):
        frames = frames_for_tokens(arch, model.config, target)
        n = num_video_tokens(arch, model.config, frames, h, w)
        assert abs(n - target) <= 4
    long_inputs = make_video_inputs(arch, model, frames_for_tokens(arch, model, 400), prompt_ids_before=BEFORE)
    assert logits(model, long_inputs).shape[1] > 400


def test_generate_emits_max_new_tokens(model):
    arch = arch_of(model)
    inputs = make_video_inputs(arch, model, 2, prompt_ids_before=BEFORE, prompt_ids_after=AFTER, seed=3)
    out = model.generate(**inputs, do_sample=False, max_new_tokens=8)
    assert out.shape == (1, inputs["input_ids"].shape[1] + 8)
    assert torch.equal(out[:, : inputs["input_ids"].shape[1]], inputs["input_ids"])


def test_generation_stops_on_eos(model):
    """Whatever id is eos, generate stops when the model emits it."""
    arch = arch_of(model)
    inputs = make_video_inputs(arch, model, 2, prompt_ids_before=BEFORE, seed=3)
    length = inputs["input_ids"].shape[1]
    free = model.generate(**inputs, max_new_tokens=8)[0, length:].tolist()
    stop_at = free.index(free[2])  # first occurrence of the third token
    out = model.generate(**inputs, max_new_tokens=8, eos_token_id=free[2])
    assert out[0, length:].tolist() == free[: stop_at + 1]


def test_video_changes_logits(model):
    arch = arch_of(model)
    make = lambda seed: make_video_inputs(arch, model, 2, prompt_ids_before=BEFORE, prompt_ids_after=AFTER, seed=seed)
    a, a2, b = logits(model, make(1)), logits(model, make(1)), logits(model, make(2))
    assert torch.equal(a, a2)
    text_before = slice(0, len(BEFORE))  # causal: the prompt before the video cannot see it
    assert torch.allclose(a[:, text_before], b[:, text_before])
    assert (a[0, -1] - b[0, -1]).abs().max() > 0.1


def greedy_with_cache(model, inputs, max_new_tokens, use_generate_positions=True):
    """Greedy decoding with an explicit KV cache, one token per forward.

    With ``use_generate_positions`` the new tokens get the positions
    ``generate`` gives them: the last prompt position + 1, + 2, ... on every
    M-RoPE row. Without it the Qwen forward infers them as
    cache length + ``model.model.rope_deltas``.
    """
    arch = arch_of(model)
    length = inputs["input_ids"].shape[1]
    with torch.no_grad():
        out = model(**inputs, use_cache=True)
        if arch in QWEN:
            kw = {k: v for k, v in inputs.items() if k not in ("input_ids", "pixel_values_videos")}
            last = model.model.get_rope_index(inputs["input_ids"], **kw)[0][:, :, -1:]  # (3, 1, 1)
        else:
            last = torch.tensor([[length - 1]])
        tokens = [int(out.logits[0, -1].argmax())]
        cache = out.past_key_values
        for step in range(1, max_new_tokens):
            kwargs = {"position_ids": last + step} if use_generate_positions else {}
            out = model(input_ids=torch.tensor([[tokens[-1]]]), past_key_values=cache, use_cache=True, **kwargs)
            cache = out.past_key_values
            tokens.append(int(out.logits[0, -1].argmax()))
    return tokens


def test_cached_greedy_reproduces_generate(model):
    """A long-in-time video, where Qwen's temporal positions outrun the text."""
    arch = arch_of(model)
    frames = 20 if arch in QWEN else 3
    inputs = make_video_inputs(arch, model, frames, prompt_ids_before=BEFORE, prompt_ids_after=AFTER, seed=4)
    length = inputs["input_ids"].shape[1]
    reference = model.generate(**inputs, max_new_tokens=6)[0, length:].tolist()
    assert greedy_with_cache(model, inputs, 6) == reference


@pytest.mark.parametrize("arch", QWEN)
def test_qwen_position_facts(arch):
    """Pins the transformers 5.23 M-RoPE behaviour documented in tiny_models."""
    model = build_tiny_model(arch)
    inputs = make_video_inputs(arch, model, 20, prompt_ids_before=BEFORE, prompt_ids_after=AFTER)
    ids = inputs["input_ids"]
    length = ids.shape[1]
    kw = {k: v for k, v in inputs.items() if k not in ("input_ids", "pixel_values_videos")}
    positions, deltas = model.model.get_rope_index(ids, **kw)
    assert positions.shape == (3, 1, length) and deltas.shape == (1, 1)
    assert int(deltas) == int(positions.max()) + 1 - length

    # Text after the video resumes at start + max(grid_h, grid_w) // merge,
    # below the video's temporal extent...
    start, end = video_block_span(arch, model, ids)
    _, grid_h, grid_w = inputs["video_grid_thw"][0].tolist()
    merge = model.config.vision_config.spatial_merge_size
    assert positions[:, 0, end].tolist() == [start + max(grid_h, grid_w) // merge] * 3
    assert positions[0, 0].max() > positions[0, 0, -1]
    # ...so generate's next position (last + 1) is not cache length + rope_deltas.
    assert int(positions[0, 0, -1]) + 1 != length + int(deltas)

    # generate passes (4, B, L) positions at prefill (row 0: text positions
    # for the mask) and (4, B, 1) = previous + 1 while decoding.
    seen = []
    hook = model.model.language_model.register_forward_pre_hook(
        lambda mod, args, kwargs: seen.append(kwargs["position_ids"]), with_kwargs=True
    )
    try:
        model.generate(**inputs, max_new_tokens=3)
    finally:
        hook.remove()
    assert seen[0].shape == (4, 1, length)
    assert torch.equal(seen[0][0, 0], torch.arange(length))
    assert torch.equal(seen[0][1:], positions)
    assert seen[1].shape == (4, 1, 1)
    assert seen[1][1:, 0, 0].tolist() == (positions[:, 0, -1] + 1).tolist()
    assert torch.equal(model.model.rope_deltas, deltas)

    # The explicit positions from get_rope_index give the same logits as
    # letting the forward compute them.
    with torch.no_grad():
        explicit = model(**inputs, position_ids=positions).logits
    assert torch.allclose(explicit, logits(model, inputs), atol=1e-5)


def test_mm_token_type_ids_required_or_silently_wrong():
    """Qwen2-VL raises without mm_token_type_ids; Qwen2.5-VL silently uses 1-D
    positions (different logits)."""
    for arch in QWEN:
        model = build_tiny_model(arch)
        inputs = make_video_inputs(arch, model, 4, prompt_ids_before=BEFORE, prompt_ids_after=AFTER)
        without = {k: v for k, v in inputs.items() if k != "mm_token_type_ids"}
        if arch == "qwen2_vl":
            with pytest.raises(ValueError, match="mm_token_type_ids"):
                logits(model, without)
        else:
            assert not torch.allclose(logits(model, without), logits(model, inputs), atol=1e-3)


def test_bfloat16_builds_and_generates():
    model = build_tiny_model("llava_onevision", dtype=torch.bfloat16)
    inputs = make_video_inputs("llava_onevision", model, 2, prompt_ids_before=BEFORE)
    assert inputs["pixel_values_videos"].dtype == torch.bfloat16
    out = model.generate(**inputs, max_new_tokens=3)
    assert out.shape[1] == inputs["input_ids"].shape[1] + 3
