"""The target adapter: one stateless interface over unmodified Hugging Face Video LLMs.

One adapter per model. It holds no request state: the cache and the positions are
passed in, as gpt-fast passes ``input_pos``. It does two forwards:

* ``prefill`` the prompt (video included) into an empty cache at the prompt's
  positions, and hand back the last token's logits, the hidden states the draft
  reuses, and which positions are visual;
* ``verify`` a tree of candidate tokens in one forward after the cache's contents
  (custom 4-D mask, explicit positions) and return logits and hidden states for
  every node.

A request's state (its cache, where later positions continue, the prefill's result,
keeping the accepted path, rewinding to the end of the prompt) is a
:class:`~sparrow_sd.targets.session.TargetSession`.

Only the parts that differ between families live in subclasses: how positions are
numbered (M-RoPE for Qwen-VL, plain for LLaVA-OneVision) and how many placeholder
tokens a video must occupy. Everything runs through the models' public inputs;
the hidden states come from the base model's output and, for an intermediate
layer, from a forward hook, so no modeling file is forked.
"""

from __future__ import annotations

import contextlib
import os
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn

from ..errors import InvalidInputError, UnsupportedModelError, VideoTokenMismatchError
from ..kv_cache import PreallocatedCache, cache_argument

@contextmanager
def sdpa_native_gqa() -> Iterator[None]:
    """Let Hugging Face's SDPA path use the kernel's grouped-query attention with a mask.

    With a custom mask and more than one query, transformers 5.x otherwise repeats
    every key/value head to match the query heads (``repeat_kv``), copying the
    whole cache each layer: at 25k tokens that made a tree verification about 7x
    slower per attention call on the CPU. ``TRANSFORMERS_SDPA_FORCE_GQA`` is
    transformers' own switch for this; it is read at call time, so we set it for
    the duration of a forward only.
    """
    key = "TRANSFORMERS_SDPA_FORCE_GQA"
    saved = os.environ.get(key)
    os.environ[key] = "1"
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = saved


def _attention_layout(text_config) -> tuple[tuple[str, ...], int | None]:
    """Each decoder layer's attention type, and the sliding window (None when no layer slides).

    Read as the models read them: ``layer_types`` (which Qwen2's configs derive from
    ``use_sliding_window``, ``sliding_window`` and ``max_window_layers``). Tree masks
    apply the window exactly; any other kind of layer is refused.
    """
    layers = text_config.num_hidden_layers
    types = tuple(getattr(text_config, "layer_types", None) or ("full_attention",) * layers)
    unknown = sorted(set(types) - {"full_attention", "sliding_attention"})
    if unknown:
        raise UnsupportedModelError(f"attention layer types {unknown} are not supported (only full and "
                                    "sliding-window attention)")
    if "sliding_attention" not in types:
        return types, None
    window = getattr(text_config, "sliding_window", None)
    if not window or window < 1:
        raise UnsupportedModelError(f"the config has sliding-attention layers but sliding_window={window!r}")
    return types, int(window)


@dataclass
class TargetPrefill:
    """What the prompt's prefill leaves for the draft and the decoding loop.

    All tensors are for the single sequence (no batch dimension).
    """

    input_ids: torch.Tensor  # (L,) the prompt, video placeholders included
    visual_mask: torch.Tensor  # (L,) True where the position holds a visual token
    input_embeds: torch.Tensor  # (L, H) embeddings as the target saw them (vision features merged in)
    hidden: torch.Tensor  # (L, H) last-layer hidden states (after the final norm)
    layer_hidden: dict[int, torch.Tensor] = field(default_factory=dict)  # layer -> (L, H) decoder layer outputs
    last_logits: torch.Tensor | None = None  # (V,) float32, logits of the prompt's last token
    video_token_id: int | None = None

    @property
    def num_visual_tokens(self) -> int:
        return int(self.visual_mask.sum())

    @property
    def text_positions(self) -> torch.Tensor:
        return (~self.visual_mask).nonzero().squeeze(-1)

    @property
    def visual_positions(self) -> torch.Tensor:
        return self.visual_mask.nonzero().squeeze(-1)


@dataclass
class TargetVerify:
    """The target's view of one candidate tree."""

    logits: torch.Tensor  # (N, V) float32: the next-token logits at every node
    hidden: torch.Tensor  # (N, H) last-layer hidden states at every node
    layer_hidden: dict[int, torch.Tensor] = field(default_factory=dict)  # layer -> (N, H) decoder layer outputs


class TargetAdapter(ABC):
    """Drives one Hugging Face Video LLM for speculative decoding (batch size 1); holds no request state."""

    #: Hugging Face classes (by name) this adapter accepts.
    model_class_names: tuple[str, ...] = ()
    #: Whether positions are M-RoPE's (3, 1, N) rather than plain (1, N).
    mrope: bool = False
    #: Processor outputs, besides input_ids, that the model's forward takes for a video.
    vision_input_keys: tuple[str, ...] = ("pixel_values_videos",)

    def __init__(self, model: nn.Module):
        self.model = model
        self.base = model.model  # the `...Model` inside `...ForConditionalGeneration`
        self.language_model = self.base.language_model
        self.lm_head = model.get_output_embeddings()
        self.text_config = model.config.get_text_config()
        attn = getattr(self.text_config, "_attn_implementation", None) or "sdpa"
        if attn not in ("sdpa", "eager"):
            raise UnsupportedModelError(
                f"attention implementation {attn!r} cannot take tree masks; load the model with "
                "attn_implementation='sdpa' (or 'eager')."
            )
        self._additive_mask = attn == "eager"
        self.layer_types, self.sliding_window = _attention_layout(self.text_config)
        self._cache_kwarg = cache_argument(self.base)

    # -- facts about the model -------------------------------------------------------------------
    @property
    def hidden_size(self) -> int:
        return self.text_config.hidden_size

    @property
    def vocab_size(self) -> int:
        return self.lm_head.weight.shape[0]

    @property
    def num_layers(self) -> int:
        return self.text_config.num_hidden_layers

    @property
    def device(self) -> torch.device:
        return self.lm_head.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.lm_head.weight.dtype

    @property
    def video_token_id(self) -> int:
        return int(self.model.config.video_token_id)

    def embed_tokens(self, token_ids: torch.Tensor) -> torch.Tensor:
        """The target's own (frozen) input embedding, shared with the draft."""
        return self.model.get_input_embeddings()(token_ids)

    def new_cache(self, capacity: int) -> PreallocatedCache:
        """An empty cache of ``capacity`` positions, one layer per decoder layer."""
        return PreallocatedCache(self.num_layers, capacity)

    # -- family-specific parts -------------------------------------------------------------------
    @abstractmethod
    def expected_video_tokens(self, inputs: Mapping[str, torch.Tensor]) -> int:
        """How many video placeholder tokens the prompt must hold for this video."""

    @abstractmethod
    def prompt_positions(self, inputs: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
        """Position ids for the prompt in the model's format, and the offset of later positions.

        Every position after the prompt is ``cache index + offset``, all M-RoPE rows equal
        (0 for plain RoPE; see :mod:`.qwen_vl` for how Qwen-VL's offset is chosen).
        """

    # -- the two forwards ------------------------------------------------------------------------
    def validate_inputs(self, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Check batch size and the video placeholder count; return the (1, L) input ids."""
        if "input_ids" not in inputs:
            raise InvalidInputError("inputs must contain 'input_ids' (the processor's output)")
        input_ids = inputs["input_ids"]
        if input_ids.ndim != 2 or input_ids.shape[0] != 1:
            raise InvalidInputError(f"batch size must be 1, got input_ids of shape {tuple(input_ids.shape)}")
        if inputs.get("pixel_values") is not None:
            raise InvalidInputError("image inputs are not supported; pass the video as pixel_values_videos")
        found = int((input_ids == self.video_token_id).sum())
        if inputs.get("pixel_values_videos") is None:
            if found:
                raise InvalidInputError(
                    f"the prompt holds {found} video placeholder tokens but no pixel_values_videos were given"
                )
            return input_ids
        expected = self.expected_video_tokens(inputs)
        if found != expected:
            raise VideoTokenMismatchError(
                f"the prompt holds {found} video placeholder tokens (id {self.video_token_id}) but the video "
                f"needs {expected}; build the prompt with the model's processor for this video"
            )
        return input_ids

    @torch.inference_mode()
    def prefill(self, inputs: Mapping[str, torch.Tensor], cache: PreallocatedCache, positions: torch.Tensor,
                capture_layers: Sequence[int] = ()) -> TargetPrefill:
        """Run the prompt into the empty ``cache`` at ``positions`` (from :meth:`prompt_positions`).

        ``capture_layers`` are decoder-layer indices whose outputs the draft needs
        (intermediate-layer visual state bridging); only those are kept.
        """
        input_ids = self.validate_inputs(inputs).to(self.device)
        if cache.length:
            raise InvalidInputError(f"prefill() needs an empty cache; this one holds {cache.length} positions")
        self.check_layers(capture_layers)
        captured: dict[str, torch.Tensor] = {}
        hooks = [
            self.language_model.register_forward_pre_hook(
                lambda _m, _a, kwargs: captured.__setitem__("embeds", kwargs["inputs_embeds"]), with_kwargs=True
            )
        ]
        hooks += self._layer_hooks(capture_layers, captured)
        model_inputs = {
            k: inputs[k].to(self.device) for k in self.vision_input_keys if inputs.get(k) is not None
        }
        try:
            out = self.base(
                input_ids=input_ids,
                position_ids=positions.to(self.device),
                **{self._cache_kwarg: cache},
                use_cache=True,
                **model_inputs,
            )
        finally:
            for hook in hooks:
                hook.remove()
        hidden = out.last_hidden_state[0]
        return TargetPrefill(
            input_ids=input_ids[0],
            visual_mask=input_ids[0] == self.video_token_id,
            input_embeds=captured["embeds"][0],
            hidden=hidden,
            layer_hidden={layer: captured[layer][0] for layer in capture_layers},
            last_logits=self.lm_head(hidden[-1]).float(),
            video_token_id=self.video_token_id,
        )

    def check_layers(self, layers: Sequence[int]) -> None:
        """Refuse a decoder-layer index the target does not have."""
        for layer in layers:
            if not 0 <= layer < self.num_layers:
                raise InvalidInputError(f"layer {layer} out of range: the target has {self.num_layers} layers")

    def _layer_hooks(self, layers: Sequence[int], captured: dict) -> list:
        """Forward hooks that keep the outputs of decoder ``layers`` in ``captured[layer]``."""
        def keep(layer):
            return lambda _m, _a, out: captured.__setitem__(layer, out[0] if isinstance(out, tuple) else out)
        return [self.language_model.layers[layer].register_forward_hook(keep(layer)) for layer in layers]

    def _tree_attention_mask(self, length: int, tree_mask: torch.Tensor, depths: torch.Tensor) -> torch.Tensor | dict:
        """(1, 1, N, length + N): every node sees the ``length`` cached positions and its own ancestors.

        With sliding-window layers, a dict by layer type (as ``generate`` hands the
        models): on ``sliding_attention`` layers a node at depth d, i.e. sequence index
        ``length + d``, sees only keys whose sequence index is within ``sliding_window``
        of its own (cached positions and ancestors alike), Hugging Face's window rule
        ``key > query - window``.
        """
        n = tree_mask.shape[0]
        tree_mask = tree_mask.to(self.device)
        mask = torch.ones(n, length + n, dtype=torch.bool, device=self.device)
        mask[:, length:] = tree_mask
        if self.sliding_window is None:
            return self._mask_for_attention(mask)
        query = length + depths.to(self.device)
        keys = torch.cat([torch.arange(length, device=self.device), query])  # sequence index of each key
        windowed = mask & (keys[None, :] > query[:, None] - self.sliding_window)
        return {"full_attention": self._mask_for_attention(mask),
                "sliding_attention": self._mask_for_attention(windowed)}

    def _mask_for_attention(self, mask: torch.Tensor) -> torch.Tensor:
        """(N, K) bool -> (1, 1, N, K), boolean for SDPA, additive for eager attention."""
        mask = mask[None, None]
        if self._additive_mask:
            return torch.zeros(mask.shape, dtype=self.dtype, device=self.device).masked_fill(
                ~mask, torch.finfo(self.dtype).min
            )
        return mask

    @torch.inference_mode()
    def verify(self, cache: PreallocatedCache, tokens: torch.Tensor, positions: torch.Tensor,
               tree_mask: torch.Tensor, depths: torch.Tensor, capture_layers: Sequence[int] = ()) -> TargetVerify:
        """Score a candidate tree in one forward, its keys written after ``cache``'s contents.

        ``tokens`` (N,), node 0 the root (the last emitted token, not yet in the cache);
        ``positions`` the nodes' position ids in the model's format ((3, 1, N) for M-RoPE,
        (1, N) otherwise; see :func:`~sparrow_sd.tree.tree_position_ids`); ``tree_mask``
        (N, N) bool, True where a node may attend to another (ancestors and itself);
        ``depths`` (N,), root 0 (node i sits at sequence index ``cache.length + depths[i]``
        if accepted, which sliding-window layers need). ``capture_layers``: decoder layers
        whose outputs at the nodes the draft reads (an eagle3 draft's aux layers).
        """
        self.check_layers(capture_layers)
        captured: dict = {}
        hooks = self._layer_hooks(capture_layers, captured)
        # One query: transformers' own single-token path (pack_gqa) is the faster one.
        single = tokens.numel() == 1  # a lone root sees the whole cache: no mask needed
        gqa = contextlib.nullcontext() if single else sdpa_native_gqa()
        try:
            with gqa:
                out = self.base(
                    input_ids=tokens.to(self.device)[None],
                    position_ids=positions.to(self.device),
                    attention_mask=None if single else self._tree_attention_mask(cache.length, tree_mask, depths),
                    **{self._cache_kwarg: cache},
                    use_cache=True,
                )
        finally:
            for hook in hooks:
                hook.remove()
        hidden = out.last_hidden_state[0]
        return TargetVerify(logits=self.lm_head(hidden).float(), hidden=hidden,
                            layer_hidden={layer: captured[layer][0] for layer in capture_layers})
