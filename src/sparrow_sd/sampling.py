"""Turning logits into the distribution the target samples from.

The same warping as Hugging Face's ``generate(do_sample=True, temperature=...,
top_p=...)``: divide by the temperature, then keep the smallest set of most
likely tokens whose probability reaches ``top_p`` (at least one token). Sampling
speculative decoding is lossless with respect to *this* distribution, so it must
match the one users get from ``generate``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .errors import InvalidInputError


@dataclass(frozen=True)
class SamplingConfig:
    """``temperature == 0`` means greedy decoding."""

    temperature: float = 0.0
    top_p: float = 1.0

    def __post_init__(self):
        if self.temperature < 0:
            raise InvalidInputError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise InvalidInputError(f"top_p must be in (0, 1], got {self.top_p}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


def warp_logits(logits: torch.Tensor, config: SamplingConfig) -> torch.Tensor:
    """Temperature then top-p, on the last dimension; removed tokens get -inf."""
    logits = logits.float() / config.temperature
    if config.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=False)
        cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        remove_sorted = cumulative <= (1 - config.top_p)
        remove_sorted[..., -1:] = False  # always keep the most likely token
        remove = remove_sorted.scatter(-1, order, remove_sorted)
        logits = logits.masked_fill(remove, float("-inf"))
    return logits


def target_probs(logits: torch.Tensor, config: SamplingConfig) -> torch.Tensor:
    """The probabilities the target samples its next token from."""
    return warp_logits(logits, config).softmax(dim=-1)
