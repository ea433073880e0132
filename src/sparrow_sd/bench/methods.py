"""The decoding methods a benchmark puts side by side, behind one interface.

Every method takes the same model inputs and returns a :class:`MethodRun`
with the tokens and the timings defined in the README (decode time excludes
the target's prefill and includes the draft's). Methods:

- :class:`Autoregressive`: sparrow-sd's plain loop on the same cache (the
  baseline every speedup is measured against);
- :class:`DraftMethod`: any trained draft (Sparrow or a peer) with a tree;
- :class:`HFGenerate`: Hugging Face's own ``generate()``, plain (the same
  autoregressive decoding, on Hugging Face's loop and its own prefill) or with
  prompt lookup decoding (:func:`PromptLookup`), timed by a streamer (its first
  streamed new token marks the end of its prefill; each later streamer call is
  one verification step).

The engine's methods decode one clip from one target prefill
(:class:`SharedPrefill`, made by :func:`share_prefill` from what each method's
:meth:`Method.prefill_needs` asks for): they all report that prefill's time, and a
peak memory of the larger of the prefill's peak and what the prefill holds plus
the decode's own peak, i.e. what the method would peak at from a prefill of its own.
A method that prefills by itself (Hugging Face's ``generate``) says so with
``prefill_needs() -> None``.
"""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ..generate import SpeculativeGenerator
from ..generate import prefill as engine_prefill
from ..proposers import NullProposer, Proposer, DraftProposer, TreeConfig
from ..targets import TargetAdapter, TargetSession, wrap_target


@dataclass
class MethodRun:
    tokens: list[int]
    tau: float
    target_prefill_s: float
    draft_prefill_s: float
    decode_s: float
    total_s: float
    draft_cache_bytes: int = 0
    peak_memory_bytes: int = 0
    extra: dict = field(default_factory=dict)
    # the engine's own methods only (GenerationStats): verification steps and where decode_s went
    steps: int = 0
    draft_s: float = 0.0
    verify_s: float = 0.0
    commit_s: float = 0.0

    @property
    def decode_tokens_per_s(self) -> float:
        return max(0, len(self.tokens) - 1) / self.decode_s if self.decode_s > 0 else 0.0


class PeakMemory:
    """Peak memory above the starting point while the block runs, and what is still held at its end:
    CUDA allocator statistics on a GPU, resident set size sampled every few ms on a CPU."""

    def __init__(self, device: torch.device):
        self.device = torch.device(device)
        self.peak = 0
        self.held = 0

    @staticmethod
    def _rss() -> int:
        try:
            pages = int(Path("/proc/self/statm").read_text().split()[1])
        except (OSError, ValueError, IndexError):
            return 0
        return pages * 4096

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
            return self
        self.base = self._rss()
        self.running = True
        self.highest = self.base

        def sample():
            while self.running:
                self.highest = max(self.highest, self._rss())
                time.sleep(0.005)

        self.thread = threading.Thread(target=sample, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak = torch.cuda.max_memory_allocated(self.device) - self.base
            self.held = max(0, torch.cuda.memory_allocated(self.device) - self.base)
            return
        self.running = False
        self.thread.join()
        now = self._rss()
        self.peak = max(0, max(self.highest, now) - self.base)
        self.held = max(0, now - self.base)


@dataclass(frozen=True)
class PrefillNeeds:
    """What a method's decode needs of a shared engine prefill: its target (adapter) and its
    proposer (whose largest tree and captured layers size the prefill)."""

    target: TargetAdapter
    proposer: Proposer


@dataclass
class SharedPrefill:
    """One clip's target prefill, which every engine method decodes from, and its memory."""

    session: TargetSession
    peak_bytes: int = 0  # above the memory before the prefill, at its highest during it
    held_bytes: int = 0  # still held after it: the cache and the prefill's states

    def release(self) -> None:
        self.session.release()


def share_prefill(needs: list[PrefillNeeds | None], inputs, max_new_tokens: int) -> list[SharedPrefill | None]:
    """One prefill of ``inputs`` per target model among ``needs``, sized for all of that model's methods;
    for each entry its prefill (None where the method prefills by itself)."""
    groups: dict[int, list[PrefillNeeds]] = {}
    for need in needs:
        if need is not None:
            groups.setdefault(id(need.target.model), []).append(need)
    made = {}
    for key, group in groups.items():
        with PeakMemory(group[0].target.device) as memory:
            session = engine_prefill(group[0].target, inputs, max_new_tokens, [need.proposer for need in group])
        made[key] = SharedPrefill(session, memory.peak, memory.held)
    return [None if need is None else made[id(need.target.model)] for need in needs]


class Method:
    name: str = "method"
    needs_training: bool = False

    def settings(self) -> dict:
        return {}

    def at_length(self, visual_tokens: int) -> None:
        """Called before the sweep's runs at ``visual_tokens`` (a method tuned per length switches here)."""

    def prefill_needs(self) -> PrefillNeeds | None:
        """What this method's decode needs of a shared engine prefill; None (the default): the method
        prefills by itself, and :meth:`run` gets no ``prefill``."""
        return None

    def run(self, inputs, max_new_tokens: int, temperature: float = 0.0, seed: int = 0,
            prefill: SharedPrefill | None = None) -> MethodRun:
        """Decode ``inputs``; ``prefill``: the clip's shared prefill, when :meth:`prefill_needs` asked for one."""
        raise NotImplementedError


class _GeneratorMethod(Method):
    def __init__(self, model, eos_token_ids=None):
        self.target = wrap_target(model)
        self.model = self.target.model
        self.eos = eos_token_ids

    def _proposer(self):
        return None

    def prefill_needs(self) -> PrefillNeeds:
        return PrefillNeeds(self.target, self._proposer() or NullProposer())

    def run(self, inputs, max_new_tokens, temperature=0.0, seed=0, prefill=None):
        generator = SpeculativeGenerator(self.target, self._proposer(), eos_token_ids=self.eos)
        with PeakMemory(self.target.device) as memory:
            if prefill is None:
                result = generator.generate(inputs, max_new_tokens=max_new_tokens, temperature=temperature, seed=seed)
            else:
                result = generator.decode(prefill.session, max_new_tokens, temperature=temperature, seed=seed)
        peak = memory.peak if prefill is None else max(prefill.peak_bytes, prefill.held_bytes + memory.peak)
        s = result.stats
        return MethodRun(result.tokens, s.tau, s.target_prefill_s, s.draft_prefill_s, s.decode_s, s.total_s,
                         s.draft_cache_bytes, peak, steps=s.steps, draft_s=s.draft_s, verify_s=s.verify_s,
                         commit_s=s.commit_s)


class Autoregressive(_GeneratorMethod):
    name = "autoregressive"


class DraftMethod(_GeneratorMethod):
    """A trained draft; ``name`` says which (e.g. 'sparrow', 'full-visual')."""

    needs_training = True

    def __init__(self, model, draft, tree: TreeConfig, name: str, eos_token_ids=None):
        super().__init__(model, eos_token_ids)
        self.draft, self.tree, self.name = draft, tree, name
        self.default_tree = tree
        self.trees: dict[int, TreeConfig] = {}  # per sweep length, when tuned per length

    def at_length(self, visual_tokens: int) -> None:
        self.tree = self.trees.get(visual_tokens, self.default_tree)

    def settings(self):
        c = self.draft.config
        tree = {"tree": asdict(self.default_tree)}
        if self.trees:
            tree = {"tree_by_visual_tokens": {str(n): asdict(t) for n, t in sorted(self.trees.items())}}
        return {**tree, "visual_mode": c.visual_mode, "ivsb_layer": c.ivsb_layer, "window": c.window,
                "draft_vocab_size": c.draft_vocab_size}

    def _proposer(self):
        return DraftProposer(self.draft, self.tree)


class _StreamClock:
    def __init__(self):
        self.times: list[float] = []
        self.sizes: list[int] = []

    def put(self, value):
        self.times.append(time.perf_counter())
        self.sizes.append(int(value.numel()))

    def end(self):
        pass


class HFGenerate(Method):
    """Hugging Face's own ``model.generate()``, plain or with prompt lookup decoding
    (``prompt_lookup_num_tokens``), greedy or sampled, streamer-timed. It prefills by itself."""

    def __init__(self, model, prompt_lookup_num_tokens: int | None = None, max_matching_ngram_size: int = 2,
                 eos_token_ids=None):
        self.model, self.num_tokens, self.ngram = model, prompt_lookup_num_tokens, max_matching_ngram_size
        self.eos = eos_token_ids
        self.name = "hf-generate" if prompt_lookup_num_tokens is None else "hf-prompt-lookup"

    def settings(self):
        if self.num_tokens is None:
            return {}
        return {"prompt_lookup_num_tokens": self.num_tokens, "max_matching_ngram_size": self.ngram}

    def run(self, inputs, max_new_tokens, temperature=0.0, seed=0, prefill=None):
        clock = _StreamClock()
        kwargs = {"do_sample": temperature > 0, "max_new_tokens": max_new_tokens, "streamer": clock}
        if self.num_tokens is not None:
            kwargs.update(prompt_lookup_num_tokens=self.num_tokens, max_matching_ngram_size=self.ngram)
        if temperature > 0:  # the rest as the model's generation config says, as for the other methods
            kwargs.update(temperature=temperature)
            torch.manual_seed(seed)
        if self.eos is not None:
            kwargs["eos_token_id"] = sorted(self.eos)
        device = next(self.model.parameters()).device
        prompt = inputs["input_ids"].shape[1]
        with PeakMemory(device) as memory, torch.inference_mode():
            start = time.perf_counter()
            out = self.model.generate(**inputs, **kwargs)
            end = time.perf_counter()
        tokens = out[0, prompt:].tolist()
        # put() #0 is the prompt; #1 carries the first new token(s) after the prefill
        first = clock.times[1] if len(clock.times) > 1 else end
        steps = max(1, len(clock.times) - 2)
        tau = (len(tokens) - clock.sizes[1]) / steps if len(clock.times) > 2 else 1.0
        return MethodRun(tokens, tau, first - start, 0.0, end - first, end - start, 0, memory.peak,
                         {"streamer_calls": len(clock.times) - 1})


def PromptLookup(model, num_tokens: int = 10, max_matching_ngram_size: int = 2, eos_token_ids=None) -> HFGenerate:
    """Hugging Face's prompt lookup decoding (``generate(prompt_lookup_num_tokens=...)``)."""
    return HFGenerate(model, num_tokens, max_matching_ngram_size, eos_token_ids)
