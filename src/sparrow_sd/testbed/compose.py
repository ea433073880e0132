"""SmolLM2 inside Hugging Face's ``Qwen2VLForConditionalGeneration``: the testbed target.

Why Qwen2-VL: its M-RoPE gives a video's tokens 3-D (time, height, width)
positions, so a 25k-token video occupies only a few hundred positions, while
SmolLM2 was trained on 8k. Why the mapping is exact for text: both stacks are
pre-norm decoders with RMSNorm, SwiGLU MLPs, grouped-query attention and
rotate-half RoPE; they differ only in that Qwen2's q/k/v projections carry
biases (set to zero here) and in M-RoPE, whose three rows are identical for
text, so each frequency sees the same position as in plain RoPE whatever the
``mrope_section`` split. A test checks the logits match.

Names map one to one: ``model.X`` of ``LlamaForCausalLM`` becomes
``model.language_model.X``; the embedding gains one row per added vision token
(the LM head is tied to it, as in SmolLM2); the vision tower and merger
(``model.visual.*``) start random from ``config.seed`` and are trained later.
"""

from __future__ import annotations

import torch
from transformers import GenerationConfig, LlamaConfig, Qwen2VLConfig, Qwen2VLForConditionalGeneration
from transformers.initialization import no_init_weights

from ..errors import InvalidInputError
from .config import TestbedConfig
from .language import SmolLM2Weights

_LLAMA_PREFIX = "model."
_QWEN_TEXT_PREFIX = "model.language_model."


def _check_language(cfg: LlamaConfig) -> None:
    """Refuse a Llama config whose layers have no Qwen2 counterpart."""
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    rope = cfg.rope_parameters or {}
    problems = []
    if head_dim * cfg.num_attention_heads != cfg.hidden_size:
        problems.append(f"head_dim {head_dim} * heads {cfg.num_attention_heads} != hidden {cfg.hidden_size}")
    if cfg.attention_bias or cfg.mlp_bias:
        problems.append("attention or MLP biases")
    if rope.get("rope_type", "default") != "default":
        problems.append(f"rope_type {rope.get('rope_type')!r}")
    if cfg.hidden_act != "silu":
        problems.append(f"hidden_act {cfg.hidden_act!r}")
    if not cfg.tie_word_embeddings:
        problems.append("untied embeddings")
    if problems:
        raise InvalidInputError("language model cannot be mapped onto Qwen2-VL: " + "; ".join(problems))


def testbed_hf_config(language: LlamaConfig, config: TestbedConfig) -> Qwen2VLConfig:
    """The ``Qwen2VLConfig`` of the testbed: SmolLM2's text stack, the testbed's vision tower.

    Special tokens take ids ``vocab_size .. vocab_size + 3`` in the order of
    ``config.special_tokens`` (the tokenizer adds them in the same order).
    """
    _check_language(language)
    head_dim = language.hidden_size // language.num_attention_heads
    if sum(config.mrope_section) != head_dim // 2:
        raise InvalidInputError(f"mrope_section {config.mrope_section} must sum to head_dim/2 = {head_dim // 2}")
    base = language.vocab_size
    start, end, image, video = (base + i for i in range(4))
    tokens = dict(
        bos_token_id=language.bos_token_id, eos_token_id=language.eos_token_id, pad_token_id=language.pad_token_id
    )
    text = dict(
        vocab_size=base + len(config.special_tokens),
        hidden_size=language.hidden_size,
        intermediate_size=language.intermediate_size,
        num_hidden_layers=language.num_hidden_layers,
        num_attention_heads=language.num_attention_heads,
        num_key_value_heads=language.num_key_value_heads,
        hidden_act="silu",
        max_position_embeddings=language.max_position_embeddings,
        rms_norm_eps=language.rms_norm_eps,
        rope_parameters={
            "rope_type": "default",
            "rope_theta": language.rope_parameters["rope_theta"],
            "mrope_section": list(config.mrope_section),
        },
        initializer_range=language.initializer_range,
        **tokens,
    )
    vision = dict(
        depth=config.vision_depth,
        embed_dim=config.vision_width,
        hidden_size=language.hidden_size,  # merger output = text width
        num_heads=config.vision_heads,
        mlp_ratio=config.vision_mlp_ratio,
        in_channels=3,
        patch_size=config.patch_size,
        temporal_patch_size=config.temporal_patch_size,
        spatial_merge_size=config.spatial_merge_size,
    )
    return Qwen2VLConfig(
        text_config=text,
        vision_config=vision,
        vision_start_token_id=start,
        vision_end_token_id=end,
        image_token_id=image,
        video_token_id=video,
        tie_word_embeddings=True,
        attn_implementation="sdpa",
        **tokens,
    )


def _added_rows(count: int, width: int, std: float, seed: int) -> torch.Tensor:
    """Embeddings for the added tokens: small seeded noise (HF's ``initializer_range``).

    Small on purpose: the LM head is tied to the embedding, so these rows are
    also output logits. Measured on SmolLM2, rows near the mean embedding
    score up to ~24 against top text logits of 12-19 (the untrained testbed
    could then emit ``<|vision_end|>``), while N(0, 0.02) rows score about
    +-1.5. Distinct rows let the model tell vision start from end; training
    replaces them.
    """
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(count, width, generator=gen, dtype=torch.float32) * std


@torch.no_grad()
def build_testbed_model(
    language: SmolLM2Weights, config: TestbedConfig | None = None, dtype: torch.dtype = torch.float32
) -> Qwen2VLForConditionalGeneration:
    """The testbed target in eval mode: SmolLM2 weights on Qwen2-VL's text stack, a random vision tower.

    The vision tower, merger and added token rows are drawn from
    ``config.seed`` alone (the global RNG is left as it was), so an untrained
    testbed is the same on every machine with this transformers version.
    Load trained vision weights afterwards with
    :func:`sparrow_sd.testbed.load_vision_weights`.
    ``model.generation_config`` is greedy and stops at ``<|im_end|>``.
    """
    config = config or TestbedConfig()
    hf_config = testbed_hf_config(language.config, config)
    # Skip the random init of the 135M text weights (about 3 s): all of them
    # are overwritten below, and a check refuses any left unset.
    with no_init_weights():
        model = Qwen2VLForConditionalGeneration(hf_config)
    # The vision tower gets HF's own init, drawn from the seed alone.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model.model.visual = type(model.model.visual)(hf_config.vision_config)
    model.tie_weights()

    target = model.state_dict()
    loaded = set()
    for name, tensor in language.state.items():
        if name == "lm_head.weight":
            continue  # tied to the embedding
        if not name.startswith(_LLAMA_PREFIX):
            raise InvalidInputError(f"unexpected SmolLM2 weight {name!r}")
        qwen_name = _QWEN_TEXT_PREFIX + name[len(_LLAMA_PREFIX) :]
        if qwen_name not in target:
            raise InvalidInputError(f"SmolLM2 weight {name!r} has no place in Qwen2-VL ({qwen_name!r})")
        dest = target[qwen_name]
        if qwen_name.endswith("embed_tokens.weight"):
            base = tensor.shape[0]
            dest[:base].copy_(tensor)
            std = hf_config.text_config.initializer_range
            dest[base:].copy_(_added_rows(dest.shape[0] - base, dest.shape[1], std, config.seed))
        else:
            dest.copy_(tensor)
        loaded.add(qwen_name)

    for name, dest in target.items():
        if not name.startswith(_QWEN_TEXT_PREFIX) or name in loaded:
            continue
        if name.endswith(("q_proj.bias", "k_proj.bias", "v_proj.bias")):
            dest.zero_()  # Llama has no q/k/v biases
            loaded.add(name)
    missing = [n for n in target if n.startswith(_QWEN_TEXT_PREFIX) and n not in loaded]
    if missing:
        raise InvalidInputError(f"Qwen2-VL text weights left unset: {missing[:5]}")
    if model.lm_head.weight.data_ptr() != model.model.language_model.embed_tokens.weight.data_ptr():
        raise InvalidInputError("LM head is not tied to the embedding")

    model.generation_config = GenerationConfig(
        do_sample=False,
        eos_token_id=hf_config.eos_token_id,
        pad_token_id=hf_config.pad_token_id,
        bos_token_id=hf_config.bos_token_id,
    )
    model.testbed_config = config
    return model.to(dtype).eval()
