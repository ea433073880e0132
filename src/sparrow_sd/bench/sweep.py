"""The visual-token sweep: every method on the same prompts, in one process, side by side.

For each visual-token length, each clip and each temperature setting, every
method decodes the same inputs; the autoregressive run comes first and is the
reference. The engine's methods decode each clip from one target prefill
(:func:`~.methods.share_prefill`), sized for the largest tree among them. Greedy outputs of every other method must equal it token for
token: a difference is recorded, and :func:`check_lossless` (called after the
report is written, so it shows which sample failed) raises
:class:`LosslessnessError`. Sampled runs are not compared token by
token (different random streams); their exactness is the sampling tests' job.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

from ..errors import SparrowError
from ..progress import progress as progress_bar
from .methods import Method, MethodRun, share_prefill


class LosslessnessError(SparrowError):
    """A method's greedy output differed from plain decoding."""


@dataclass(frozen=True)
class SweepConfig:
    visual_tokens: tuple[int, ...] = (1000, 3000, 13000, 25000)
    clips: int = 3
    max_new_tokens: int = 200
    temperatures: tuple[float, ...] = (0.0,)
    seed: int = 0
    sample_lengths: tuple[int, ...] | None = None  # sampling temperatures only at these lengths (None: at all)

    def temperatures_at(self, visual_tokens: int) -> tuple[float, ...]:
        """The temperatures run at one length: greedy everywhere, sampling where ``sample_lengths`` allows."""
        allowed = self.sample_lengths is None or visual_tokens in self.sample_lengths
        return tuple(t for t in self.temperatures if t == 0 or allowed)


@dataclass
class SampleResult:
    method: str
    visual_tokens: int  # the requested length
    actual_visual_tokens: int
    clip: int
    temperature: float
    run: MethodRun
    lossless: bool | None  # None: not checked (sampling, or the reference itself)


@dataclass
class SweepResult:
    config: SweepConfig
    samples: list[SampleResult] = field(default_factory=list)
    methods: dict[str, dict] = field(default_factory=dict)

    def failures(self) -> list[SampleResult]:
        return [s for s in self.samples if s.lossless is False]

    def to_dict(self) -> dict:
        return {
            "config": asdict(self.config),
            "methods": self.methods,
            "samples": [
                {"method": s.method, "visual_tokens": s.visual_tokens, "actual_visual_tokens": s.actual_visual_tokens,
                 "clip": s.clip, "temperature": s.temperature, "lossless": s.lossless,
                 "new_tokens": len(s.run.tokens), "tau": s.run.tau, "target_prefill_s": s.run.target_prefill_s,
                 "draft_prefill_s": s.run.draft_prefill_s, "decode_s": s.run.decode_s, "total_s": s.run.total_s,
                 "decode_tokens_per_s": s.run.decode_tokens_per_s, "draft_cache_bytes": s.run.draft_cache_bytes,
                 "peak_memory_bytes": s.run.peak_memory_bytes, "steps": s.run.steps, "draft_s": s.run.draft_s,
                 "verify_s": s.run.verify_s, "commit_s": s.run.commit_s, "tokens": s.run.tokens}
                for s in self.samples
            ],
        }


def run_sweep(methods: Sequence[Method], make_sample: Callable[[int, int], tuple[dict, int]],
              cfg: SweepConfig, progress: bool = True,
              on_length_done: Callable[[SweepResult], object] | None = None) -> SweepResult:
    """``make_sample(visual_tokens, clip_index) -> (inputs, actual visual tokens)``; the first
    method is the autoregressive reference. One target prefill per clip serves every method
    whose :meth:`~.methods.Method.prefill_needs` asks for one. ``on_length_done(result so far)``
    runs after each length (the bench writes its reports there)."""
    result = SweepResult(cfg, methods={m.name: m.settings() for m in methods})  # before at_length() changes trees
    total = sum(len(cfg.temperatures_at(n)) for n in cfg.visual_tokens) * cfg.clips * len(methods)
    bar = progress_bar(total, "bench", "run", enabled=progress)
    for tokens in cfg.visual_tokens:
        for method in methods:
            method.at_length(tokens)
        for clip in range(cfg.clips):
            inputs, actual = make_sample(tokens, clip)
            bar.set_postfix_str(f"{tokens} visual tokens, clip {clip}, prefill")
            prefills = share_prefill([m.prefill_needs() for m in methods], inputs, cfg.max_new_tokens)
            try:
                for temperature in cfg.temperatures_at(tokens):
                    reference = None
                    for method, prefill in zip(methods, prefills):
                        bar.set_postfix_str(f"{tokens} visual tokens, clip {clip}, {method.name}")
                        shared = {} if prefill is None else {"prefill": prefill}
                        run = method.run(inputs, cfg.max_new_tokens, temperature, seed=cfg.seed + clip, **shared)
                        lossless = None
                        if reference is None:
                            reference = run.tokens
                        elif temperature == 0:
                            lossless = run.tokens == reference
                        result.samples.append(SampleResult(method.name, tokens, actual, clip, temperature, run,
                                                           lossless))
                        bar.update(1)
            finally:
                for prefill in prefills:
                    if prefill is not None:
                        prefill.release()
        if on_length_done is not None:
            on_length_done(result)
    bar.close()
    return result


def check_lossless(result: SweepResult) -> None:
    """Raise :class:`LosslessnessError` if any greedy run differed from plain decoding."""
    if result.failures():
        bad = result.failures()[0]
        raise LosslessnessError(f"{len(result.failures())} greedy run(s) differ from plain decoding, first: "
                                f"{bad.method} at {bad.visual_tokens} visual tokens, clip {bad.clip}")
