"""The decoding loop: propose, verify, commit, repeat.

One generator serves every method. With a :class:`~sparrow_sd.proposers.NullProposer`
each tree is the root alone and the loop is plain autoregressive decoding on the
same preallocated cache, so the baseline and the speculative runs differ only in
the proposer.

Timing (``GenerationStats``): ``target_prefill_s`` is the target's prompt forward
(vision tower included); everything after it is ``decode_s``, which includes the
draft's prefill (also reported alone as ``draft_prefill_s``), since a user waits
for it. Decode speedup compares ``decode_s``; end-to-end compares ``total_s``.

``tau``, the mean accepted length, counts the tokens each verification step
emits, the target's bonus token included (plain decoding has tau = 1). The first
new token comes from the prefill, not from a verification step, and is not
counted.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch

from .errors import InvalidInputError
from .proposers import NullProposer, Proposer
from .sampling import SamplingConfig, target_probs
from .targets import TargetAdapter, wrap_target
from .verify import verify_greedy, verify_sampling


@dataclass
class GenerationStats:
    prompt_tokens: int = 0
    visual_tokens: int = 0
    new_tokens: int = 0
    steps: int = 0  # target verification forwards
    accepted_per_step: list[int] = field(default_factory=list)  # tokens emitted per step, bonus included
    target_prefill_s: float = 0.0
    draft_prefill_s: float = 0.0
    decode_s: float = 0.0  # everything after the target prefill (draft prefill included)
    draft_context_items: int = 0
    draft_cache_bytes: int = 0
    target_cache_bytes: int = 0

    @property
    def tau(self) -> float:
        return sum(self.accepted_per_step) / self.steps if self.steps else 0.0

    @property
    def total_s(self) -> float:
        return self.target_prefill_s + self.decode_s

    @property
    def decode_tokens_per_s(self) -> float:
        return self.new_tokens / self.decode_s if self.decode_s > 0 else 0.0

    def to_dict(self) -> dict:
        out = {k: v for k, v in self.__dict__.items() if k != "accepted_per_step"}
        out.update(tau=self.tau, total_s=self.total_s, decode_tokens_per_s=self.decode_tokens_per_s)
        return out


@dataclass
class GenerationResult:
    tokens: list[int]
    stats: GenerationStats


def _eos_ids(model) -> set[int]:
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if eos is None:
        return set()
    return {int(e) for e in (eos if isinstance(eos, (list, tuple)) else [eos])}


class SpeculativeGenerator:
    """Generates from a Video LLM with a proposer; output identical to the model's own.

    ``target``: a supported Hugging Face model (or its adapter); ``proposer``: e.g.
    ``SparrowProposer(draft)``, or None for plain autoregressive decoding.
    """

    def __init__(self, target, proposer: Proposer | None = None, eos_token_ids: set[int] | None = None):
        self.target: TargetAdapter = wrap_target(target)
        self.proposer = proposer or NullProposer()
        self.eos = _eos_ids(self.target.model) if eos_token_ids is None else set(eos_token_ids)

    def _sync(self):
        if self.target.device.type == "cuda":
            torch.cuda.synchronize(self.target.device)

    @torch.inference_mode()
    def generate(
        self,
        inputs: Mapping[str, torch.Tensor],
        max_new_tokens: int = 256,
        temperature: float = 0.0,
        top_p: float = 1.0,
        seed: int | None = None,
        on_tokens: Callable[[list[int]], None] | None = None,
    ) -> GenerationResult:
        """Generate up to ``max_new_tokens`` (stopping after an EOS token).

        ``on_tokens`` is called with each batch of newly emitted tokens (streaming).
        """
        if max_new_tokens < 1:
            raise InvalidInputError("max_new_tokens must be at least 1")
        sampling = SamplingConfig(temperature, top_p)
        generator = None
        if not sampling.greedy:
            generator = torch.Generator(device="cpu")
            generator.manual_seed(seed if seed is not None else torch.seed())
        target, proposer, stats = self.target, self.proposer, GenerationStats()

        def choose(logits: torch.Tensor) -> int:
            if sampling.greedy:
                return int(logits.argmax())
            return int(torch.multinomial(target_probs(logits, sampling).cpu(), 1, generator=generator))

        self._sync()
        t0 = time.perf_counter()
        room = max_new_tokens + proposer.max_tree_nodes + 1
        prefill = target.prefill(inputs, room, proposer.capture_layers)
        tokens = [choose(prefill.last_logits)]
        self._sync()
        t1 = time.perf_counter()
        stats.target_prefill_s = t1 - t0
        stats.prompt_tokens, stats.visual_tokens = prefill.input_ids.numel(), prefill.num_visual_tokens
        if on_tokens:
            on_tokens(tokens[:])

        done = tokens[-1] in self.eos or len(tokens) >= max_new_tokens
        if not done:
            proposer.start(target, prefill, tokens[0], max_new_tokens)
        del prefill
        self._sync()
        stats.draft_prefill_s = time.perf_counter() - t1

        while not done:
            tree = proposer.propose()
            out = target.verify(tree.tokens, tree.mask, tree.depths, proposer.verify_layers)
            if sampling.greedy:
                path, bonus = verify_greedy(tree.tokens, tree.parents, out.logits)
            else:
                path, bonus = verify_sampling(
                    tree.tokens, tree.parents, target_probs(out.logits, sampling).cpu(), generator
                )
            emitted = tree.tokens[path].tolist() + [bonus]
            # Stop mid-path on EOS or when the budget runs out.
            room = max_new_tokens - len(tokens)
            cut = next((i + 1 for i, t in enumerate(emitted) if t in self.eos), len(emitted))
            emitted = emitted[: min(cut, room)]
            done = len(emitted) < len(path) + 1 or emitted[-1] in self.eos or len(tokens) + len(emitted) >= max_new_tokens
            tokens += emitted
            stats.steps += 1
            stats.accepted_per_step.append(len(emitted))
            if on_tokens:
                on_tokens(emitted)
            if done:
                break
            kept = torch.tensor([0] + path)
            target.commit(kept)
            proposer.advance(torch.tensor(emitted), proposer.states(out)[kept.to(out.hidden.device)])

        self._sync()
        stats.decode_s = time.perf_counter() - t1
        stats.new_tokens = len(tokens)
        stats.draft_context_items = getattr(proposer, "context_items", 0)
        stats.draft_cache_bytes = proposer.cache_bytes()
        stats.target_cache_bytes = target.cache.nbytes() if target.cache is not None else 0
        target.release()
        return GenerationResult(tokens=tokens, stats=stats)
