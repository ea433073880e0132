"""The target's next-token choice, processed exactly as Hugging Face's ``generate()`` does.

Speculative decoding is lossless with respect to one distribution per position, so
that distribution must be the one ``model.generate(**inputs)`` samples from (or
takes the argmax of), with the settings a checkpoint ships in its
``generation_config`` (Qwen2-VL / Qwen2.5-VL Instruct ship ``repetition_penalty``
1.05 with ``top_k`` / ``top_p``), Hugging Face's global defaults under them
(``top_k`` 50 when sampling), and the caller's overrides on top.

:meth:`SamplingConfig.from_generation_config` resolves those settings in
``generate()``'s order of precedence; :func:`process_logits` applies, in
``generate()``'s order:

1. the repetition penalty, over the prefix of each position (the prompt, the
   emitted tokens and, at a tree node, the node's own ancestors and itself): a seen
   token's logit is multiplied by the penalty when negative, divided when not;
2. when sampling: temperature, top-k, top-p, min-p (removed tokens get -inf).

Greedy decoding takes the argmax of step 1. Any other logits processor a generation
config switches on (``no_repeat_ngram_size``, ``bad_words_ids``, ``suppress_tokens``,
forced tokens, beam search, ...) is refused with one line: it is not applied, and
silently leaving it out would not be ``generate()``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .errors import InvalidInputError

#: Hugging Face's global defaults for the settings read here (``GenerationConfig._get_default_generation_params``),
#: which ``generate()`` uses where neither the caller nor the model's generation config sets one.
HF_DEFAULTS = {"do_sample": False, "temperature": 1.0, "top_k": 50, "top_p": 1.0, "min_p": None,
               "repetition_penalty": 1.0}


@dataclass(frozen=True)
class SamplingConfig:
    """Resolved next-token settings. ``temperature == 0`` means greedy (``do_sample=False``);
    ``top_k == 0`` and ``min_p is None`` switch those filters off."""

    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float | None = None
    repetition_penalty: float = 1.0

    def __post_init__(self):
        if self.temperature < 0:
            raise InvalidInputError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise InvalidInputError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0 or int(self.top_k) != self.top_k:
            raise InvalidInputError(f"top_k must be a whole number >= 0 (0: off), got {self.top_k}")
        if self.min_p is not None and not 0 <= self.min_p <= 1:
            raise InvalidInputError(f"min_p must be in [0, 1], got {self.min_p}")
        if not self.repetition_penalty > 0:
            raise InvalidInputError(f"repetition_penalty must be > 0, got {self.repetition_penalty}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    @property
    def penalised(self) -> bool:
        return self.repetition_penalty != 1.0

    @classmethod
    def from_generation_config(
        cls,
        generation_config=None,
        *,
        do_sample: bool | None = None,
        temperature: float | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
        min_p: float | None = None,
        repetition_penalty: float | None = None,
        prompt_length: int | None = None,
    ) -> "SamplingConfig":
        """The settings ``generate()`` would use: each argument given (not None) wins, then the
        model's ``generation_config``, then Hugging Face's defaults (:data:`HF_DEFAULTS`).

        ``temperature`` given without ``do_sample`` chooses the mode too: 0 is greedy, above 0
        samples (this library's shorthand; ``generate()`` would need ``do_sample=True``).
        Raises :class:`InvalidInputError` for a setting that would switch on a logits processor
        or a decoding mode this engine does not apply (``prompt_length`` lets ``min_length``
        pass when the prompt already reaches it).
        """
        def setting(name, given):
            if given is not None:
                return given
            value = getattr(generation_config, name, None)
            return HF_DEFAULTS[name] if value is None else value

        given = dict(temperature=temperature, top_p=top_p, top_k=top_k, min_p=min_p,
                     repetition_penalty=repetition_penalty)
        cls(**{k: v for k, v in given.items() if v is not None})  # the values given are valid, whatever the mode
        if do_sample is None and temperature is not None:
            do_sample = temperature > 0
        sample = bool(setting("do_sample", do_sample))
        _refuse_unsupported(generation_config, sample, prompt_length)
        penalty = float(setting("repetition_penalty", repetition_penalty))
        if not sample:
            return cls(repetition_penalty=penalty)
        temperature = float(setting("temperature", temperature))
        if temperature <= 0:
            raise InvalidInputError(f"sampling needs a temperature > 0, got {temperature} (temperature 0: greedy)")
        return cls(temperature=temperature, top_p=float(setting("top_p", top_p)),
                   top_k=int(setting("top_k", top_k) or 0), min_p=setting("min_p", min_p),
                   repetition_penalty=penalty)


def default_eos_ids(model) -> set[int]:
    """The stop tokens ``generate()`` uses by default: ``model.generation_config.eos_token_id``
    (one id or a list), as a set; empty when the model declares none."""
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if eos is None:
        return set()
    return {int(e) for e in (eos if isinstance(eos, (list, tuple)) else [eos])}


def _refuse_unsupported(config, sample: bool, prompt_length: int | None) -> None:
    """One line naming the first generation-config setting that ``generate()`` would act on and we do not."""
    def get(name, default=None):
        value = getattr(config, name, None)
        return default if value is None else value

    checks = [
        ("num_beams", get("num_beams", 1) > 1, "beam search"),
        ("num_return_sequences", get("num_return_sequences", 1) > 1, "several sequences per prompt"),
        ("constraints", get("constraints") is not None, "constrained beam search"),
        ("force_words_ids", get("force_words_ids") is not None, "constrained beam search"),
        ("penalty_alpha", not sample and get("penalty_alpha", 0) > 0 and get("top_k", 50) > 1, "contrastive search"),
        ("dola_layers", get("dola_layers") is not None, "DoLa decoding"),
        ("guidance_scale", get("guidance_scale", 1) != 1, "classifier-free guidance"),
        ("sequence_bias", get("sequence_bias") is not None, "SequenceBiasLogitsProcessor"),
        ("no_repeat_ngram_size", get("no_repeat_ngram_size", 0) > 0, "NoRepeatNGramLogitsProcessor"),
        ("bad_words_ids", get("bad_words_ids") is not None, "NoBadWordsLogitsProcessor"),
        ("min_length", get("min_length", 0) > (prompt_length or 0), "MinLengthLogitsProcessor"),
        ("min_new_tokens", get("min_new_tokens", 0) > 0, "MinNewTokensLengthLogitsProcessor"),
        ("forced_bos_token_id", get("forced_bos_token_id") is not None, "ForcedBOSTokenLogitsProcessor"),
        ("forced_eos_token_id", get("forced_eos_token_id") is not None, "ForcedEOSTokenLogitsProcessor"),
        ("remove_invalid_values", get("remove_invalid_values") is True, "InfNanRemoveLogitsProcessor"),
        ("exponential_decay_length_penalty", get("exponential_decay_length_penalty") is not None,
         "ExponentialDecayLengthPenalty"),
        ("suppress_tokens", get("suppress_tokens") is not None, "SuppressTokensLogitsProcessor"),
        ("begin_suppress_tokens", get("begin_suppress_tokens") is not None, "SuppressTokensAtBeginLogitsProcessor"),
        ("watermarking_config", get("watermarking_config") is not None, "watermarking"),
        ("renormalize_logits", get("renormalize_logits") is True, "LogitNormalization"),
        ("stop_strings", get("stop_strings") is not None, "StopStringCriteria"),
        ("top_h", sample and get("top_h") is not None, "TopHLogitsWarper"),
        ("typical_p", sample and get("typical_p", 1.0) < 1.0, "TypicalLogitsWarper"),
        ("epsilon_cutoff", sample and 0 < get("epsilon_cutoff", 0.0) < 1, "EpsilonLogitsWarper"),
        ("eta_cutoff", sample and 0 < get("eta_cutoff", 0.0) < 1, "EtaLogitsWarper"),
    ]
    for name, active, what in checks:
        if active:
            raise InvalidInputError(
                f"generation_config.{name}={get(name)!r} ({what}) is not supported by sparrow-sd: supported are "
                "repetition_penalty, temperature, top_k, top_p and min_p; unset it in model.generation_config")


def prefix_mask(seen: torch.Tensor, tokens: torch.Tensor, tree_mask: torch.Tensor) -> torch.Tensor:
    """(N, V) bool: the tokens in each tree node's prefix.

    ``seen`` (V,) marks the prompt and the emitted tokens (the root, the last emitted
    token, among them); ``tree_mask`` (N, N) marks each node's ancestors and itself, whose
    tokens are added to its row.
    """
    rows, cols = tree_mask.nonzero(as_tuple=True)
    out = seen.expand(tokens.shape[0], -1).clone()
    out[rows.to(out.device), tokens.to(out.device)[cols.to(out.device)]] = True
    return out


def process_logits(logits: torch.Tensor, config: SamplingConfig, seen: torch.Tensor | None = None) -> torch.Tensor:
    """``generate()``'s logits processing: the repetition penalty over ``seen`` (same shape as
    ``logits``: the tokens of each row's prefix), then, when sampling, the warpers."""
    logits = logits.float()
    if config.penalised:
        if seen is None:
            raise ValueError("a repetition penalty needs the tokens seen so far")
        penalty = config.repetition_penalty
        logits = torch.where(seen, torch.where(logits < 0, logits * penalty, logits / penalty), logits)
    return logits if config.greedy else warp_logits(logits, config)


def warp_logits(logits: torch.Tensor, config: SamplingConfig) -> torch.Tensor:
    """Temperature, top-k, top-p, min-p on the last dimension, as Hugging Face's warpers
    compute them (at least one token kept); removed tokens get -inf."""
    logits = logits.float() / config.temperature
    if config.top_k:
        k = min(config.top_k, logits.shape[-1])
        logits = logits.masked_fill(logits < torch.topk(logits, k)[0][..., -1, None], float("-inf"))
    if config.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=False)
        cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        remove_sorted = cumulative <= (1 - config.top_p)
        remove_sorted[..., -1:] = False  # always keep the most likely token
        remove = remove_sorted.scatter(-1, order, remove_sorted)
        logits = logits.masked_fill(remove, float("-inf"))
    if config.min_p is not None:
        probs = logits.softmax(dim=-1)
        remove = probs < config.min_p * probs.amax(dim=-1, keepdim=True)
        remove.scatter_(-1, torch.topk(probs, 1, dim=-1).indices, False)
        logits = logits.masked_fill(remove, float("-inf"))
    return logits


def target_probs(logits: torch.Tensor, config: SamplingConfig, seen: torch.Tensor | None = None) -> torch.Tensor:
    """The probabilities the target samples its next token from."""
    return process_logits(logits, config, seen).softmax(dim=-1)
