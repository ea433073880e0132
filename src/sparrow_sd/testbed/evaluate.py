"""``sparrow testbed eval``: does the testbed describe the video, at every length up to 25k tokens?

On held-out SynthVideo clips (evaluation seeds 100,000 + i, never trained on)
at about 1k, 3k, 13k and 25k visual tokens, the target describes each clip
(greedy: the engine's plain decoding, one prefill per clip, token for token what
Hugging Face's own ``generate()`` gives), and the descriptions are scored with
:mod:`.metrics`:

- median description length in tokens;
- repetition: the most frequent token's share, distinct 4-grams;
- grounding: colour+shape mentions that exist in the clip, for the clip's own
  description, for the description of *another* clip's video (clip i+1 scored
  against clip i: what a description that ignored the video would score), and
  whether the description of a blank video names any object;
- event recall: the share of the clip's events the description states;
- the time it took.

:func:`bar_checks` holds the testbed's bars, so the CLI, the docs and the
tests read them from one place.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field


from ..generate import SpeculativeGenerator
from ..progress import progress as progress_bar
from ..synth import bounded_num_events, make_clip
from ..targets import wrap_target
from .metrics import distinct_4grams, event_recall, grounding, names_any_object, top_token_share
from .processor import TestbedProcessor
from .training import EVAL_SEED_BASE, blank_frames

# visual tokens -> frames at 196 tokens per frame (+1 newline)
DEFAULT_LENGTHS = (1000, 3000, 13000, 25000)


@dataclass(frozen=True)
class EvalConfig:
    """Which lengths, how many held-out clips at each, and the generation budget."""

    lengths: tuple[int, ...] = DEFAULT_LENGTHS
    clips: tuple[int, ...] = (8, 6, 3, 3)
    max_new_tokens: int = 320
    max_events: int = 8
    events: int | None = None  # every clip holds this many events (a probe); None: the length's own count
    repetition_penalty: float | None = None  # a probe of the decoding; None: the model's generation config
    seed_base: int = EVAL_SEED_BASE

    def __post_init__(self) -> None:
        if len(self.clips) not in (1, len(self.lengths)):
            raise ValueError("give one clip count, or one per length")
        if min(self.clips) < 2:
            raise ValueError("each length needs at least 2 clips (the other-clip control pairs them)")
        if self.events is not None and self.events < 1:
            raise ValueError("events must be at least 1")
        if self.repetition_penalty is not None and not self.repetition_penalty > 0:
            raise ValueError("repetition_penalty must be > 0")

    def clips_at(self, index: int) -> int:
        return self.clips[0] if len(self.clips) == 1 else self.clips[index]


@dataclass
class LengthReport:
    visual_tokens: int
    frames: int
    clips: int
    median_tokens: float
    top_token_share: float
    distinct_4grams: float
    grounding_own: float
    grounding_other: float
    blank_names_object: bool
    event_recall: float
    seconds: float
    prefill_s: float = float("nan")
    decode_ms_per_token: float = float("nan")
    blank_text: str = ""
    samples: list[dict] = field(default_factory=list)


@dataclass
class Description:
    tokens: list[int]
    prefill_s: float  # the target's prefill (the scene reader and the prompt's forward) and the first token
    decode_ms_per_token: float | None  # between the first and the last new token


def describe(model, processor: TestbedProcessor, frames, max_new_tokens: int,
             repetition_penalty: float | None = None) -> Description:
    """The target's greedy description of ``frames`` (new tokens, end-of-turn dropped), timed.

    ``model``: the target or its adapter (wrap it once for many descriptions).
    ``repetition_penalty``: None keeps the model's generation config's."""
    target = wrap_target(model)
    inputs = processor(processor.config.describe_prompt, frames, dtype=target.model.dtype)
    result = SpeculativeGenerator(target).generate(inputs, max_new_tokens=max_new_tokens, do_sample=False,
                                                   repetition_penalty=repetition_penalty)
    tokens, stats = result.tokens, result.stats
    decode = stats.decode_s / (len(tokens) - 1) * 1000 if len(tokens) > 1 else None
    kept = [t for t in tokens if t not in (processor.eos_token_id, processor.pad_token_id)]
    return Description(kept, stats.target_prefill_s, decode)


def _median(values: Sequence[float | None]) -> float:
    kept = [v for v in values if v is not None]
    return round(float(statistics.median(kept)), 1) if kept else float("nan")


def _mean(values: Sequence[float | None]) -> float:
    kept = [v for v in values if v is not None]
    return float(statistics.mean(kept)) if kept else float("nan")


def evaluate_length(model, processor: TestbedProcessor, visual_tokens: int, clips: int,
                    config: EvalConfig, log: Callable[[str], None] = lambda s: None) -> LengthReport:
    target = wrap_target(model)  # one adapter for every description
    frames = processor.config.frames_for_tokens(visual_tokens)
    size = processor.config.image_size
    began = time.perf_counter()
    scenes, texts, samples, token_lists, timings = [], [], [], [], []
    bar = progress_bar(clips, f"{processor.num_video_tokens(frames)} visual tokens", "clip", leave=False)
    for i in range(clips):
        seed = config.seed_base + i
        events = config.events or bounded_num_events(frames, config.max_events)
        clip = make_clip(seed, num_frames=frames, height=size, width=size, num_events=events)
        result = describe(target, processor, clip.frames, config.max_new_tokens, config.repetition_penalty)
        tokens, text = result.tokens, processor.decode(result.tokens)
        timings.append(result)
        scenes.append(clip.scene)
        texts.append(text)
        token_lists.append(tokens)
        samples.append({"seed": seed, "events": len(clip.scene.events), "tokens": len(tokens), "text": text,
                        "event_recall": event_recall(text, clip.scene), "grounding": grounding(text, clip.scene)})
        log(f"  clip {seed}: {len(tokens)} tokens: {text}")
        bar.update(1)
    bar.close()
    blank = processor.decode(describe(target, processor, blank_frames(frames, size, size), config.max_new_tokens,
                                      config.repetition_penalty).tokens)
    log(f"  blank video: {blank}")
    other = [grounding(texts[(i + 1) % clips], scenes[i]) for i in range(clips)]
    return LengthReport(
        visual_tokens=processor.num_video_tokens(frames),
        frames=frames,
        clips=clips,
        median_tokens=float(statistics.median(len(t) for t in token_lists)),
        top_token_share=max(top_token_share(t) for t in token_lists),
        distinct_4grams=min(distinct_4grams(t) for t in token_lists),
        grounding_own=_mean([s["grounding"] for s in samples]),
        grounding_other=_mean([0.0 if g is None else g for g in other]),
        blank_names_object=names_any_object(blank),
        event_recall=_mean([s["event_recall"] for s in samples]),
        seconds=round(time.perf_counter() - began, 1),
        prefill_s=float(statistics.median(t.prefill_s for t in timings)),
        decode_ms_per_token=_median([t.decode_ms_per_token for t in timings]),
        blank_text=blank,
        samples=samples,
    )


def evaluate_testbed(model, processor: TestbedProcessor, config: EvalConfig | None = None,
                     log: Callable[[str], None] = lambda s: None) -> list[LengthReport]:
    """One :class:`LengthReport` per length in ``config.lengths``."""
    config = config or EvalConfig()
    target = wrap_target(model)
    return [evaluate_length(target, processor, tokens, config.clips_at(i), config, log)
            for i, tokens in enumerate(config.lengths)]


def bar_checks(report: LengthReport, longest: bool = False) -> list[tuple[str, float, str, bool]]:
    """(measure, value, bar, met) for one length; event recall's bar is 0.6 at 1k and 0.5 at 25k."""
    recall_bar = 0.5 if longest or report.visual_tokens > 2000 else 0.6
    return [
        ("median description tokens", report.median_tokens, "60-300", 60 <= report.median_tokens <= 300),
        ("grounding, own clip", report.grounding_own, ">= 0.9", report.grounding_own >= 0.9),
        ("grounding, other clip's video", report.grounding_other, "<= 0.3", report.grounding_other <= 0.3),
        ("blank video names an object", float(report.blank_names_object), "no", not report.blank_names_object),
        ("event recall", report.event_recall, f">= {recall_bar}", report.event_recall >= recall_bar),
        ("most frequent token share (worst)", report.top_token_share, "<= 0.20", report.top_token_share <= 0.20),
        ("distinct 4-grams (worst)", report.distinct_4grams, ">= 0.8", report.distinct_4grams >= 0.8),
    ]


def format_table(reports: Sequence[LengthReport]) -> str:
    """A markdown table: one column per length, one row per measure, bars marked."""
    head = "| measure | bar | " + " | ".join(f"{r.visual_tokens:,} tok ({r.clips} clips)" for r in reports) + " |"
    lines = [head, "|" + "---|" * (len(reports) + 2)]
    checks = [bar_checks(r) for r in reports]
    for row, (name, _, bar, _) in enumerate(checks[0]):
        cells = []
        for check in checks:
            value, met = check[row][1], check[row][3]
            shown = ("yes" if value else "no") if name.startswith("blank") else f"{value:.2f}"
            cells.append(shown + ("" if met else " (missed)"))
        lines.append(f"| {name} | {bar} | " + " | ".join(cells) + " |")
    lines.append("| target prefill, s (median) | | " + " | ".join(f"{r.prefill_s:.1f}" for r in reports) + " |")
    lines.append("| decode, ms per token (median) | | " + " | ".join(f"{r.decode_ms_per_token:.0f}" for r in reports) + " |")
    lines.append("| seconds for the length | | " + " | ".join(f"{r.seconds:.0f}" for r in reports) + " |")
    return "\n".join(lines)
