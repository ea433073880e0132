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

from .errors import InvalidInputError, ProposerError
from .proposers import NullProposer, Proposer
from .sampling import SamplingConfig, default_eos_ids, prefix_mask, process_logits
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
    sampling: SamplingConfig = field(default_factory=SamplingConfig)  # the settings decoding used


class SpeculativeGenerator:
    """Generates from a Video LLM with a proposer; output identical to the model's own.

    ``target``: a supported Hugging Face model (or its adapter); ``proposer``: e.g.
    ``SparrowProposer(draft)``, or None for plain autoregressive decoding.
    """

    def __init__(self, target, proposer: Proposer | None = None, eos_token_ids: set[int] | None = None):
        self.target: TargetAdapter = wrap_target(target)
        self.proposer = proposer or NullProposer()
        self.eos = default_eos_ids(self.target.model) if eos_token_ids is None else set(eos_token_ids)

    def _sync(self):
        if self.target.device.type == "cuda":
            torch.cuda.synchronize(self.target.device)

    @torch.inference_mode()
    def generate(
        self,
        inputs: Mapping[str, torch.Tensor],
        max_new_tokens: int = 256,
        temperature: float | None = None,
        top_p: float | None = None,
        seed: int | None = None,
        on_tokens: Callable[[list[int]], None] | None = None,
        *,
        top_k: int | None = None,
        min_p: float | None = None,
        repetition_penalty: float | None = None,
        do_sample: bool | None = None,
    ) -> GenerationResult:
        """Generate up to ``max_new_tokens`` (stopping after an EOS token).

        The next-token settings are ``model.generate(**inputs)``'s: each one given here wins,
        then the model's ``generation_config``, then Hugging Face's defaults (see
        :meth:`SamplingConfig.from_generation_config`; ``temperature=0`` is greedy, a
        temperature above 0 without ``do_sample`` samples). ``seed`` seeds sampling (a
        private generator; None draws a fresh seed, the global RNG is left alone).
        ``on_tokens`` is called with each batch of newly emitted tokens (streaming).
        """
        if max_new_tokens < 1:
            raise InvalidInputError("max_new_tokens must be at least 1")
        prompt = inputs.get("input_ids") if hasattr(inputs, "get") else None
        sampling = SamplingConfig.from_generation_config(
            getattr(self.target.model, "generation_config", None), do_sample=do_sample, temperature=temperature,
            top_k=top_k, top_p=top_p, min_p=min_p, repetition_penalty=repetition_penalty,
            prompt_length=prompt.shape[-1] if prompt is not None else None)
        generator = None
        if not sampling.greedy:
            generator = torch.Generator(device="cpu")
            if seed is None:
                generator.seed()
            else:
                generator.manual_seed(seed)
        target, proposer, stats = self.target, self.proposer, GenerationStats()
        seen = None  # (V,) the prompt's and the emitted tokens, for the repetition penalty

        def choose(logits: torch.Tensor) -> int:
            scores = process_logits(logits[None], sampling, None if seen is None else seen[None])[0]
            if sampling.greedy:
                return int(scores.argmax())
            return int(torch.multinomial(scores.softmax(-1).cpu(), 1, generator=generator))

        self._sync()
        t0 = time.perf_counter()
        room = max_new_tokens + proposer.max_tree_nodes + 1
        prefill = target.prefill(inputs, room, proposer.capture_layers)
        if sampling.penalised:
            seen = torch.zeros(prefill.last_logits.shape[-1], dtype=torch.bool, device=prefill.last_logits.device)
            seen[prefill.input_ids.to(seen.device)] = True
        tokens = [choose(prefill.last_logits)]
        if seen is not None:
            seen[tokens[0]] = True
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
            self._check_tree(tree, tokens[-1])
            mask = tree.mask
            out = target.verify(tree.tokens, mask, tree.depths, proposer.verify_layers)
            # each node's scores as generate() would process them after that node's own prefix
            scores = process_logits(out.logits, sampling, None if seen is None else prefix_mask(seen, tree.tokens, mask))
            if sampling.greedy:
                path, bonus = verify_greedy(tree.tokens, tree.parents, scores)
            else:
                path, bonus = verify_sampling(tree.tokens, tree.parents, scores.softmax(-1).cpu(), generator)
            emitted = tree.tokens[path].tolist() + [bonus]
            # Stop mid-path on EOS or when the budget runs out.
            room = max_new_tokens - len(tokens)
            cut = next((i + 1 for i, t in enumerate(emitted) if t in self.eos), len(emitted))
            emitted = emitted[: min(cut, room)]
            done = len(emitted) < len(path) + 1 or emitted[-1] in self.eos or len(tokens) + len(emitted) >= max_new_tokens
            tokens += emitted
            if seen is not None:
                seen[torch.tensor(emitted, device=seen.device)] = True
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
        return GenerationResult(tokens=tokens, stats=stats, sampling=sampling)

    def _check_tree(self, tree, last_token: int) -> None:
        """The proposer contract (docs/engine.md): a tree rooted at the last emitted token, no
        larger than the proposer's ``max_tree_nodes``, of token ids the target has."""
        name = type(self.proposer).__name__
        if tree.tokens.ndim != 1 or tree.parents.shape != tree.tokens.shape or len(tree) < 1:
            raise ProposerError(f"{name} proposed a malformed tree: tokens {tuple(tree.tokens.shape)}, "
                                f"parents {tuple(tree.parents.shape)}")
        root = int(tree.tokens[0])
        if root != last_token:
            raise ProposerError(f"{name} proposed a tree rooted at token {root}, but the last emitted token is "
                                f"{last_token}: node 0 must be the last emitted token")
        if len(tree) - 1 > self.proposer.max_tree_nodes:
            raise ProposerError(f"{name} proposed {len(tree) - 1} candidates but declares max_tree_nodes="
                                f"{self.proposer.max_tree_nodes} (the target's cache is sized by it)")
        low, high = int(tree.tokens.min()), int(tree.tokens.max())
        if low < 0 or high >= self.target.vocab_size:
            raise ProposerError(f"{name} proposed token id {low if low < 0 else high}, outside the target's "
                                f"vocabulary of {self.target.vocab_size}")
