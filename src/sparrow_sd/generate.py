"""The decoding loop: prefill once, then propose, verify, commit, repeat.

Generating is two steps: a :class:`~sparrow_sd.targets.TargetSession` prefills the
prompt, and :func:`decode` runs a proposer's loop from the end of that prompt.
A session is rewound before each decode, so one prefill serves any number of
decodes (plain decoding and every draft, each token for token as from a fresh
prefill); :meth:`SpeculativeGenerator.generate` is the one-prompt, one-decode case.
With a :class:`~sparrow_sd.proposers.NullProposer` each tree is the root alone and
the loop is plain autoregressive decoding on the same preallocated cache, so the
baseline and the speculative runs differ only in the proposer.

Timing (``GenerationStats``): ``target_prefill_s`` is the target's prompt forward
(vision tower included; for a shared session, the one prefill every decode from it
reports) plus choosing the first token; everything after it is ``decode_s``, which
includes the draft's prefill (also reported alone as ``draft_prefill_s``), since a
user waits for it. Decode speedup compares ``decode_s``; end-to-end compares ``total_s``.

``tau``, the mean accepted length, counts the tokens each verification step
emits, the target's bonus token included (plain decoding has tau = 1). The first
new token comes from the prefill, not from a verification step, and is not
counted.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import torch

from .errors import InvalidInputError, ProposerError
from .proposers import NullProposer, Proposer
from .sampling import SamplingConfig, default_eos_ids, prefix_mask, process_logits
from .targets import TargetAdapter, TargetPrefill, TargetSession, wrap_target
from .targets.session import synchronize
from .tree import DraftTree
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
    # where decode_s goes, summed over the steps (the rest of it: draft prefill, checks, bookkeeping)
    draft_s: float = 0.0   # proposing trees and advancing the draft over what was accepted
    verify_s: float = 0.0  # the target's forward over each tree and choosing what it keeps
    commit_s: float = 0.0  # keeping the accepted path in the target's cache
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
    def other_s(self) -> float:
        """Decode time outside the three phases: the draft's prefill, the tree checks, bookkeeping."""
        return max(0.0, self.decode_s - self.draft_s - self.verify_s - self.commit_s)

    @property
    def decode_tokens_per_s(self) -> float:
        return self.new_tokens / self.decode_s if self.decode_s > 0 else 0.0

    def to_dict(self) -> dict:
        out = {k: v for k, v in self.__dict__.items() if k != "accepted_per_step"}
        out.update(tau=self.tau, total_s=self.total_s, other_s=self.other_s,
                   decode_tokens_per_s=self.decode_tokens_per_s)
        return out


@dataclass
class GenerationResult:
    tokens: list[int]
    stats: GenerationStats
    sampling: SamplingConfig = field(default_factory=SamplingConfig)  # the settings decoding used


class _Chooser:
    """The target's choices under ``sampling``: ``generate()``'s logits processing, then the
    argmax (greedy) or an exact sample from a private generator seeded by ``seed``."""

    def __init__(self, sampling: SamplingConfig, seed: int | None, prefill: TargetPrefill):
        self.sampling = sampling
        self.generator = None
        if not sampling.greedy:
            self.generator = torch.Generator(device="cpu")
            if seed is None:
                self.generator.seed()
            else:
                self.generator.manual_seed(seed)
        self.seen = None  # (V,) the prompt's and the emitted tokens, for the repetition penalty
        if sampling.penalised:
            logits = prefill.last_logits
            self.seen = torch.zeros(logits.shape[-1], dtype=torch.bool, device=logits.device)
            self.seen[prefill.input_ids.to(logits.device)] = True

    def first(self, logits: torch.Tensor) -> int:
        """The token after the prompt, from the prefill's last logits."""
        scores = process_logits(logits[None], self.sampling, None if self.seen is None else self.seen[None])[0]
        if self.sampling.greedy:
            token = int(scores.argmax())
        else:
            token = int(torch.multinomial(scores.softmax(-1).cpu(), 1, generator=self.generator))
        self.saw([token])
        return token

    def verify(self, tree: DraftTree, mask: torch.Tensor, logits: torch.Tensor) -> tuple[list[int], int]:
        """The accepted path (node indices) and the bonus token; each node's scores as ``generate()``
        would process them after that node's own prefix."""
        seen = None if self.seen is None else prefix_mask(self.seen, tree.tokens, mask)
        scores = process_logits(logits, self.sampling, seen)
        if self.sampling.greedy:
            return verify_greedy(tree.tokens, tree.parents, scores)
        return verify_sampling(tree.tokens, tree.parents, scores.softmax(-1).cpu(), self.generator)

    def saw(self, tokens: list[int]) -> None:
        if self.seen is not None:
            self.seen[torch.tensor(tokens, device=self.seen.device)] = True


def check_tree(tree: DraftTree, last_token: int, proposer: Proposer, vocab_size: int) -> None:
    """The proposer contract (docs/engine.md): a tree rooted at the last emitted token, no
    larger than the proposer's ``max_tree_nodes``, of token ids the target has."""
    name = type(proposer).__name__
    if tree.tokens.ndim != 1 or tree.parents.shape != tree.tokens.shape or len(tree) < 1:
        raise ProposerError(f"{name} proposed a malformed tree: tokens {tuple(tree.tokens.shape)}, "
                            f"parents {tuple(tree.parents.shape)}")
    root = int(tree.tokens[0])
    if root != last_token:
        raise ProposerError(f"{name} proposed a tree rooted at token {root}, but the last emitted token is "
                            f"{last_token}: node 0 must be the last emitted token")
    if len(tree) - 1 > proposer.max_tree_nodes:
        raise ProposerError(f"{name} proposed {len(tree) - 1} candidates but declares max_tree_nodes="
                            f"{proposer.max_tree_nodes} (the target's cache is sized by it)")
    low, high = int(tree.tokens.min()), int(tree.tokens.max())
    if low < 0 or high >= vocab_size:
        raise ProposerError(f"{name} proposed token id {low if low < 0 else high}, outside the target's "
                            f"vocabulary of {vocab_size}")


def _cut(emitted: list[int], so_far: int, max_new_tokens: int, eos: set[int]) -> tuple[list[int], bool]:
    """A step's tokens cut after an EOS token or at the budget, and whether the generation ends there."""
    full = len(emitted)
    cut = next((i + 1 for i, t in enumerate(emitted) if t in eos), full)
    emitted = emitted[: min(cut, max_new_tokens - so_far)]
    done = len(emitted) < full or emitted[-1] in eos or so_far + len(emitted) >= max_new_tokens
    return emitted, done


def prefill(target: TargetAdapter, inputs: Mapping[str, torch.Tensor], max_new_tokens: int,
            proposers: Iterable[Proposer] = ()) -> TargetSession:
    """One prefill of ``inputs`` that plain decoding and any of ``proposers`` can :func:`decode` up to
    ``max_new_tokens`` from: room for the largest tree among them, every target layer any of them reads."""
    if max_new_tokens < 1:
        raise InvalidInputError("max_new_tokens must be at least 1")
    proposers = list(proposers)
    nodes = max((p.max_tree_nodes for p in proposers), default=0)
    layers = sorted({layer for p in proposers for layer in p.capture_layers})
    return TargetSession(target, inputs, max_new_tokens + nodes + 1, layers)


@torch.inference_mode()
def decode(session: TargetSession, proposer: Proposer, sampling: SamplingConfig, max_new_tokens: int,
           eos: set[int], seed: int | None = None,
           on_tokens: Callable[[list[int]], None] | None = None) -> GenerationResult:
    """Decode up to ``max_new_tokens`` from the end of ``session``'s prompt (stopping after an EOS token).

    The session is rewound first, so it may have served other decodes; it must have
    room for this one and hold the proposer's ``capture_layers`` (:meth:`TargetSession.require`).
    ``seed`` seeds sampling; ``on_tokens`` gets each batch of newly emitted tokens.
    """
    if max_new_tokens < 1:
        raise InvalidInputError("max_new_tokens must be at least 1")
    session.require(max_new_tokens + proposer.max_tree_nodes + 1, proposer.capture_layers)
    session.rewind()
    target, prompt = session.target, session.prefill
    stats = GenerationStats(prompt_tokens=prompt.input_ids.numel(), visual_tokens=prompt.num_visual_tokens)
    synchronize(target.device)
    began = time.perf_counter()
    chooser = _Chooser(sampling, seed, prompt)
    tokens = [chooser.first(prompt.last_logits)]
    synchronize(target.device)
    after_first = time.perf_counter()
    stats.target_prefill_s = session.prefill_s + (after_first - began)
    if on_tokens:
        on_tokens(tokens[:])
    done = tokens[-1] in eos or len(tokens) >= max_new_tokens
    if not done:
        proposer.start(target, prompt, tokens[0], max_new_tokens)
    synchronize(target.device)
    stats.draft_prefill_s = time.perf_counter() - after_first

    # Phase clocks add no synchronisation, so they do not slow the decode: on a CPU they are exact;
    # on a GPU, work a phase queued without reading its result may be counted in the next phase.
    clock = time.perf_counter
    while not done:
        t0 = clock()
        tree = proposer.propose()
        check_tree(tree, tokens[-1], proposer, target.vocab_size)
        t1 = clock()
        mask = tree.mask
        out = session.verify(tree.tokens, mask, tree.depths, proposer.verify_layers)
        path, bonus = chooser.verify(tree, mask, out.logits)
        t2 = clock()
        stats.draft_s += t1 - t0
        stats.verify_s += t2 - t1
        emitted, done = _cut(tree.tokens[path].tolist() + [bonus], len(tokens), max_new_tokens, eos)
        tokens += emitted
        chooser.saw(emitted)
        stats.steps += 1
        stats.accepted_per_step.append(len(emitted))
        if on_tokens:
            on_tokens(emitted)
        if not done:
            kept = torch.tensor([0] + path)
            t3 = clock()
            session.commit(kept)
            t4 = clock()
            proposer.advance(torch.tensor(emitted), proposer.states(out)[kept.to(out.hidden.device)])
            t5 = clock()
            stats.commit_s += t4 - t3
            stats.draft_s += t5 - t4

    synchronize(target.device)
    stats.decode_s = time.perf_counter() - after_first
    stats.new_tokens = len(tokens)
    stats.draft_context_items = getattr(proposer, "context_items", 0)
    stats.draft_cache_bytes = proposer.cache_bytes()
    stats.target_cache_bytes = session.nbytes()
    return GenerationResult(tokens=tokens, stats=stats, sampling=sampling)


class SpeculativeGenerator:
    """Generates from a Video LLM with a proposer; output identical to the model's own.

    ``target``: a supported Hugging Face model (or its adapter; wrap a model once with
    :func:`~sparrow_sd.targets.wrap_target` to share one adapter); ``proposer``: e.g.
    ``DraftProposer(draft)``, or None for plain autoregressive decoding.
    """

    def __init__(self, target, proposer: Proposer | None = None, eos_token_ids: set[int] | None = None):
        self.target: TargetAdapter = wrap_target(target)
        self.proposer = proposer or NullProposer()
        self.eos = default_eos_ids(self.target.model) if eos_token_ids is None else set(eos_token_ids)

    def sampling(self, prompt_length: int | None = None, **settings) -> SamplingConfig:
        """The next-token settings for this target: each of ``settings`` given (not None) wins, then the
        model's ``generation_config``, then Hugging Face's defaults (:meth:`SamplingConfig.from_generation_config`)."""
        return SamplingConfig.from_generation_config(getattr(self.target.model, "generation_config", None),
                                                     prompt_length=prompt_length, **settings)

    def prefill(self, inputs: Mapping[str, torch.Tensor], max_new_tokens: int) -> TargetSession:
        """A session for ``inputs`` with room and layers for this proposer's decode of ``max_new_tokens``."""
        return prefill(self.target, inputs, max_new_tokens, [self.proposer])

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
        """Generate up to ``max_new_tokens`` (stopping after an EOS token): prefill, then :func:`decode`.

        The next-token settings are ``model.generate(**inputs)``'s: each one given here wins,
        then the model's ``generation_config``, then Hugging Face's defaults (see
        :meth:`SamplingConfig.from_generation_config`; ``temperature=0`` is greedy, a
        temperature above 0 without ``do_sample`` samples). ``seed`` seeds sampling (a
        private generator; None draws a fresh seed, the global RNG is left alone).
        ``on_tokens`` is called with each batch of newly emitted tokens (streaming).
        """
        if max_new_tokens < 1:  # before the settings and the prefill, as before any work
            raise InvalidInputError("max_new_tokens must be at least 1")
        prompt = inputs.get("input_ids") if hasattr(inputs, "get") else None
        sampling = self.sampling(prompt.shape[-1] if prompt is not None else None, do_sample=do_sample,
                                 temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p,
                                 repetition_penalty=repetition_penalty)
        session = prefill(self.target, inputs, max_new_tokens, [self.proposer])
        try:
            return decode(session, self.proposer, sampling, max_new_tokens, self.eos, seed, on_tokens)
        finally:
            session.release()

    def decode(self, session: TargetSession, max_new_tokens: int = 256, *, seed: int | None = None,
               on_tokens: Callable[[list[int]], None] | None = None, sampling: SamplingConfig | None = None,
               **settings) -> GenerationResult:
        """Decode from ``session``'s prompt (rewound first; the session stays open for other decodes).

        ``settings``: ``temperature``, ``top_p``, ``top_k``, ``min_p``, ``repetition_penalty``,
        ``do_sample``, as for :meth:`generate`; or ``sampling``, settings already resolved by
        :meth:`sampling`.
        """
        if sampling is None:
            sampling = self.sampling(session.prompt_length, **settings)
        elif settings:
            raise InvalidInputError(f"give either sampling or next-token settings, not both: {sorted(settings)}")
        return decode(session, self.proposer, sampling, max_new_tokens, self.eos, seed, on_tokens)
