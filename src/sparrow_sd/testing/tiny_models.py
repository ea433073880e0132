"""Tiny random Video LLMs and matching video inputs, built offline from configs.

The speculative decoder must be tested against the real Hugging Face classes
(no forked modeling files), but no weights can be downloaded here. So this
module builds the three supported target architectures with random weights and
a few-layer, 64-wide text stack, and makes raw video inputs whose shapes are
exactly what each class's ``forward`` expects. A model builds in milliseconds
and a forward over a few hundred visual tokens takes a few milliseconds on CPU.
The inputs are made by :mod:`.tiny_inputs`.

Supported architectures (``arch``):

- ``"qwen2_vl"``: ``Qwen2VLForConditionalGeneration``
- ``"qwen2_5_vl"``: ``Qwen2_5_VLForConditionalGeneration``
- ``"llava_onevision"``: ``LlavaOnevisionForConditionalGeneration``

Facts about these classes in transformers 5.23 (read from its source; the
decoder relies on them, so they are pinned here and checked by the tests):

Qwen2-VL / Qwen2.5-VL positions (M-RoPE)
    ``model.model.get_rope_index(input_ids, mm_token_type_ids,
    image_grid_thw=None, video_grid_thw=None, attention_mask=None, **kw)``
    (Qwen2.5-VL adds ``second_per_grid_ts``) returns
    ``(position_ids, rope_deltas)`` with ``position_ids`` of shape (3, B, L)
    (temporal, height, width rows) and ``rope_deltas`` of shape (B, 1).
    It is ``mm_token_type_ids`` (0 text, 1 image, 2 video), not the token
    ids, that locates the visual blocks. Text after a visual block resumes at
    ``start + max(grid_h, grid_w) // merge`` (the temporal extent is not
    counted, unlike the original Qwen code), while ``rope_deltas`` is
    ``max(position) + 1 - L``; so a decoded token at absolute index ``i`` gets
    position ``i + rope_deltas`` on all three rows. In Qwen2.5-VL the temporal
    row advances by ``tokens_per_second * second_per_grid_ts`` per temporal
    patch (``second_per_grid_ts`` defaults to 1 when not given).
    The inner ``Qwen2VLModel`` / ``Qwen2_5_VLModel`` caches the deltas in
    ``model.model.rope_deltas``: its forward recomputes them whenever the cache
    is empty (prefill) and otherwise, with a non-empty cache and no
    ``position_ids``, uses ``past_length + arange(new) + rope_deltas``. It is
    stateful: a forward on another video overwrites it. With a cache and a
    full-length 2-D ``attention_mask`` but no ``position_ids`` it computes
    positions for the whole mask and fails with a shape error, so pass
    ``position_ids`` explicitly when decoding with a mask.
    The text model accepts position ids of shape (L,)/(B, L) (broadcast to
    three identical rows), (3, B, L), or (4, B, L), where row 0 is the plain
    text position used only to build the causal mask (for packed sequences)
    and rows 1-3 are the M-RoPE rows. ``generate`` builds (4, B, L) up front in
    ``_prepare_position_ids_for_generation`` (which also sets ``rope_deltas``)
    and then extends every row by +1 per new token, passing (4, B, 1) at each
    decode step.
    GOTCHA: these two rules disagree whenever the video's temporal positions
    reach past the text that follows it (many frames, small frames; with
    Qwen2.5-VL's time interval this is the normal case for long videos):
    ``generate`` continues from the last prompt position + 1, while a cached
    forward without ``position_ids`` continues from ``max(position) + 1``.
    To reproduce ``generate`` token for token, pass positions
    ``last_prompt_position + k`` (all three rows) for the k-th new token.
``mm_token_type_ids``
    Qwen2-VL's forward raises ``ValueError`` when ``video_grid_thw`` (or
    ``image_grid_thw``) is given without ``mm_token_type_ids``. Qwen2.5-VL
    silently falls back to plain 1-D positions, which is wrong for video, so
    always pass it. ``generate`` extends it with zeros for new tokens.
``cache_position``
    Gone: no model forward here takes it and ``generate`` no longer creates it
    (only for remote-code models). Positions of cached decoding come from
    ``past_key_values.get_seq_length()`` (or explicit ``position_ids``), masks
    from ``attention_mask`` plus the cache length. ``DynamicCache.crop`` takes
    a negative count to drop tokens from the end.
Placeholder count
    All three classes compare the number of placeholder tokens with the number
    of visual feature rows and raise ``ValueError`` ("Video features and video
    tokens do not match") on a mismatch. The video features are computed only
    when ``pixel_values_videos`` is passed (generate passes it only at prefill).
Qwen video tokens
    ``pixel_values_videos`` is a 2-D tensor (grid_t * grid_h * grid_w,
    C * temporal_patch_size * patch_size**2) of flattened patches, ordered so
    that each run of ``merge**2`` rows is one 2x2 merge group; ``video_grid_thw``
    is (num_videos, 3) = (frames / temporal_patch_size, H / patch, W / patch).
    Tokens = grid_t * grid_h * grid_w / merge**2. The processor pads the frame
    count to a multiple of ``temporal_patch_size`` by repeating the last frame.
LLaVA-OneVision video tokens
    ``pixel_values_videos`` is (B, frames, C, S, S) with S exactly
    ``vision_config.image_size`` (the pooling reshapes by the config size, and
    SigLIP's position table is fixed). Each frame's SigLIP patch grid
    (g = S / patch) is projected, then bilinearly pooled to ceil(g/2)^2, the
    frames are concatenated, and ONE ``image_newline`` vector is appended per
    video (not per row/frame): tokens = frames * ceil(g/2)**2 + 1. Positions are
    plain 1-D; the video needs no grid or size tensors (``image_sizes_videos``
    is accepted but unused). ``vision_feature_select_strategy`` must be
    ``"full"`` (SigLIP has no CLS token to drop).

A random model can emit any id in its small vocabulary, including the
placeholder and vision start/end ids; nothing suppresses them (that would make
``generate`` disagree with a plain argmax). Code that locates the visual block
should look only at the prompt, never at generated tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import (
    GenerationConfig,
    LlavaOnevisionConfig,
    LlavaOnevisionForConditionalGeneration,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2VLConfig,
    Qwen2VLForConditionalGeneration,
)

ARCHS = ("qwen2_vl", "qwen2_5_vl", "llava_onevision")
QWEN_ARCHS = ("qwen2_vl", "qwen2_5_vl")

# Special ids sit at the top of the vocabulary, counted down from the end, so
# that every id below them is an ordinary text token whatever the vocab size.
_SPECIAL_OFFSETS = {
    "eos_token_id": 1,
    "pad_token_id": 2,
    "bos_token_id": 3,
    "vision_start_token_id": 4,
    "vision_end_token_id": 5,
    "image_token_id": 6,
    "video_token_id": 7,
}
_NUM_SPECIAL = len(_SPECIAL_OFFSETS)
_MIN_VOCAB = 16

# Text stack shared by all three architectures: small but with grouped-query
# attention (4 query heads, 2 KV heads) like the real targets.
_TEXT = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=3,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=32768,
)
# head_dim 16 -> 8 rotary frequencies, split over (temporal, height, width)
# in the same 1:1.5:1.5 proportion as the real [16, 24, 24].
_MROPE_SECTION = [2, 3, 3]
# Patch 4 px and 2x2 merge: a 16x16 frame pair gives 4 Qwen visual tokens.
_QWEN_PATCH = 4
_LLAVA_PATCH = 4
_LLAVA_IMAGE_SIZE = 16  # 4x4 patch grid pooled to 2x2: 4 tokens per frame
# Larger than HF's 0.02 so that the random model's next-token distribution is
# peaked: greedy argmax then has clear margins and does not flip under the
# tiny numerical differences between batched and sequential forwards.
_INIT_RANGE = 0.2


@dataclass(frozen=True)
class TinySpec:
    """Which token ids of a (tiny or real) model are special.

    ``text_token_range`` holds the ordinary text tokens only, so tests can draw
    random prompt tokens with ``torch.randint(r.start, r.stop, ...)`` without
    hitting a placeholder. ``vision_start/end_token_id`` are None for
    LLaVA-OneVision, whose prompts have no such markers around the video.
    """

    arch: str
    vocab_size: int
    eos_token_id: int
    pad_token_id: int
    bos_token_id: int
    image_token_id: int
    video_token_id: int
    vision_start_token_id: int | None
    vision_end_token_id: int | None
    text_token_range: range

    @property
    def special_token_ids(self) -> tuple[int, ...]:
        """All non-ordinary ids, for masking or sanity checks."""
        ids = (
            self.eos_token_id,
            self.pad_token_id,
            self.bos_token_id,
            self.image_token_id,
            self.video_token_id,
            self.vision_start_token_id,
            self.vision_end_token_id,
        )
        return tuple(i for i in ids if i is not None)


def check_arch(arch: str) -> None:
    """ValueError unless ``arch`` is one of :data:`ARCHS`."""
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; expected one of {ARCHS}")


def _special_ids(vocab_size: int) -> dict[str, int]:
    return {name: vocab_size - off for name, off in _SPECIAL_OFFSETS.items()}


def tiny_spec(arch: str, vocab_size: int = 128) -> TinySpec:
    """The token layout ``build_tiny_model`` uses for ``arch`` and ``vocab_size``."""
    check_arch(arch)
    if vocab_size < _MIN_VOCAB:
        raise ValueError(f"vocab_size must be at least {_MIN_VOCAB}, got {vocab_size}")
    ids = _special_ids(vocab_size)
    if arch not in QWEN_ARCHS:
        ids["vision_start_token_id"] = None
        ids["vision_end_token_id"] = None
    return TinySpec(arch=arch, vocab_size=vocab_size, text_token_range=range(0, vocab_size - _NUM_SPECIAL), **ids)


def spec_from_config(arch: str, config) -> TinySpec:
    """Read the special ids back from a model config (tiny or real).

    For a real checkpoint the ordinary-text range is only approximate (the
    vocabulary is not laid out like the tiny one), so it is set to the ids
    below the smallest special id.
    """
    check_arch(arch)
    text = config.text_config
    eos = text.eos_token_id if text.eos_token_id is not None else config.eos_token_id
    eos = eos[0] if isinstance(eos, (list, tuple)) else eos
    ids = dict(
        eos_token_id=eos,
        pad_token_id=text.pad_token_id,
        bos_token_id=text.bos_token_id,
        image_token_id=config.image_token_id,
        video_token_id=config.video_token_id,
        vision_start_token_id=getattr(config, "vision_start_token_id", None) if arch in QWEN_ARCHS else None,
        vision_end_token_id=getattr(config, "vision_end_token_id", None) if arch in QWEN_ARCHS else None,
    )
    lowest = min(v for v in ids.values() if v is not None)
    return TinySpec(arch=arch, vocab_size=text.vocab_size, text_token_range=range(0, lowest), **ids)


def tiny_config(arch: str, vocab_size: int = 128, attn_implementation: str = "sdpa",
                sliding_window: int | None = None, max_window_layers: int = 1):
    """The config ``build_tiny_model`` instantiates (random weights come later).

    ``sliding_window``: turn on the text stack's sliding-window attention
    (``use_sliding_window``) with that window, on the layers from
    ``max_window_layers`` on (the Qwen2 convention: earlier layers attend fully).
    """
    spec = tiny_spec(arch, vocab_size)
    tokens = dict(eos_token_id=spec.eos_token_id, pad_token_id=spec.pad_token_id, bos_token_id=spec.bos_token_id)
    text = dict(_TEXT, vocab_size=vocab_size, initializer_range=_INIT_RANGE, **tokens)
    if sliding_window is not None:
        text.update(use_sliding_window=True, sliding_window=sliding_window, max_window_layers=max_window_layers)
    if arch == "qwen2_vl":
        text["rope_parameters"] = {"rope_type": "default", "rope_theta": 1e6, "mrope_section": _MROPE_SECTION}
        vision = dict(
            depth=2,
            embed_dim=32,
            hidden_size=_TEXT["hidden_size"],  # merger output = text width
            num_heads=2,
            mlp_ratio=2,
            patch_size=_QWEN_PATCH,
            spatial_merge_size=2,
            temporal_patch_size=2,
            initializer_range=_INIT_RANGE,
        )
        cfg_cls = Qwen2VLConfig
    elif arch == "qwen2_5_vl":
        text["rope_parameters"] = {"rope_type": "default", "rope_theta": 1e6, "mrope_section": _MROPE_SECTION}
        vision = dict(
            depth=2,
            hidden_size=32,
            intermediate_size=64,
            out_hidden_size=_TEXT["hidden_size"],
            num_heads=2,
            patch_size=_QWEN_PATCH,
            spatial_merge_size=2,
            temporal_patch_size=2,
            # window of 16 px = 2x2 merged tokens; block 1 attends to the full
            # frame, block 0 to windows, so both attention paths are exercised
            window_size=16,
            fullatt_block_indexes=[1],
            tokens_per_second=2,
            initializer_range=_INIT_RANGE,
        )
        cfg_cls = Qwen2_5_VLConfig
    else:
        text["model_type"] = "qwen2"
        vision = dict(
            model_type="siglip_vision_model",
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=_LLAVA_IMAGE_SIZE,
            patch_size=_LLAVA_PATCH,
            vision_use_head=False,
        )
        config = LlavaOnevisionConfig(
            text_config=text,
            vision_config=vision,
            image_token_index=spec.image_token_id,
            video_token_index=spec.video_token_id,
            vision_feature_select_strategy="full",
            vision_feature_layer=-1,
            initializer_range=_INIT_RANGE,
            attn_implementation=attn_implementation,
            **tokens,
        )
        return config
    return cfg_cls(
        text_config=text,
        vision_config=vision,
        image_token_id=spec.image_token_id,
        video_token_id=spec.video_token_id,
        vision_start_token_id=spec.vision_start_token_id,
        vision_end_token_id=spec.vision_end_token_id,
        attn_implementation=attn_implementation,
        **tokens,
    )


_MODEL_CLASSES = {
    "qwen2_vl": Qwen2VLForConditionalGeneration,
    "qwen2_5_vl": Qwen2_5_VLForConditionalGeneration,
    "llava_onevision": LlavaOnevisionForConditionalGeneration,
}


def build_tiny_model(
    arch: str,
    seed: int = 0,
    vocab_size: int = 128,
    dtype: torch.dtype = torch.float32,
    attn_implementation: str = "sdpa",
    sliding_window: int | None = None,
    max_window_layers: int = 1,
):
    """A tiny random ``arch`` model in eval mode, reproducible from ``seed``.

    The global torch RNG is left untouched (weights are drawn inside a forked
    RNG), so building a model in a test does not perturb other random draws.
    The token layout is attached as ``model.tiny_spec`` (a ``TinySpec``) and
    ``model.generation_config`` is set to greedy with the tiny eos/pad ids, so
    ``model.generate(**inputs, max_new_tokens=N)`` works as is.
    """
    config = tiny_config(arch, vocab_size, attn_implementation, sliding_window, max_window_layers)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = _MODEL_CLASSES[arch](config)
    model = model.to(dtype).eval()
    spec = tiny_spec(arch, vocab_size)
    model.tiny_spec = spec
    model.generation_config = GenerationConfig(
        do_sample=False,
        eos_token_id=spec.eos_token_id,
        pad_token_id=spec.pad_token_id,
        bos_token_id=spec.bos_token_id,
    )
    return model
