"""``sparrow testbed eval``: does the testbed's answer really come from the video?

On held-out SynthVideo clips (seeds below the training range) it measures:

- question-answer accuracy, greedy, exact match, at about 1k visual tokens
  (6 frames, 972 tokens) and about 25k (154 frames, 24,948 tokens), with the
  same scene complexity (3 events) at both lengths so that only length differs;
- two controls at the short length: a blank video (background only) and the
  video of another held-out clip, asked the first clip's questions; beside
  them the prior-only baseline (always the most common answer of each
  question kind on this evaluation set), which is what "chance" means here;
- the length in tokens of the answer to the detailed-description prompt.

One video prefill serves all of a clip's questions: the questions come after
the video in the user turn, so the cache is cut back to the end of the video
block after each answer (``DynamicCache.crop``). Positions are the model's own
``get_rope_index`` for the full prompt and continue one per generated token
from the prompt's last position, as ``generate()`` numbers them.
"""

from __future__ import annotations

import statistics
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from transformers import DynamicCache

from ..synth import make_clip
from ..synth.vocab import BACKGROUND
from .processor import VIDEO_TOKEN_TYPE, TestbedProcessor
from .training import DESCRIBE_PROMPTS, TRAIN_SEED_BASE

EVAL_SEED_BASE = 100_000
SHORT_FRAMES = 6     # 972 visual tokens
LONG_FRAMES = 154    # 24,948 visual tokens
EVAL_EVENTS = 3


@dataclass(frozen=True)
class EvalConfig:
    """How many held-out clips each measurement uses (the CLI's flags)."""

    short_clips: int = 30
    long_clips: int = 6
    control_clips: int = 30
    description_clips: int = 10
    short_frames: int = SHORT_FRAMES
    long_frames: int = LONG_FRAMES
    events: int = EVAL_EVENTS
    max_answer_tokens: int = 12
    max_description_tokens: int = 400


def eval_clip(index: int, num_frames: int, processor: TestbedProcessor, events: int = EVAL_EVENTS):
    """The ``index``-th held-out clip at ``num_frames`` frames (never a training seed)."""
    seed = EVAL_SEED_BASE + index
    assert seed < TRAIN_SEED_BASE
    height, width = processor.config.frame_size
    return make_clip(seed, num_frames=num_frames, height=height, width=width, num_events=events)


def normalise(text: str) -> str:
    """Lower case, outer whitespace and a final full stop removed: how answers are compared."""
    return text.strip().lower().rstrip(".").strip()


class VideoSession:
    """One video prefilled once, then any number of greedy single-question answers."""

    def __init__(self, model, processor: TestbedProcessor, frames):
        self.model, self.processor = model, processor
        dtype = model.dtype
        self.pixels, self.grid = processor.preprocess_video(frames, dtype)
        self.count = int(self.grid.prod()) // processor.config.spatial_merge_size**2
        probe = processor.prompt_ids("?", self.count)
        self.prefix_len = probe.index(processor.vision_end_token_id) + 1
        self.prefix = probe[: self.prefix_len]
        self.cache = DynamicCache(config=model.config)
        ids = torch.tensor([probe])
        positions = self._positions(ids)
        with torch.no_grad():
            model.model(
                input_ids=ids[:, : self.prefix_len],
                pixel_values_videos=self.pixels,
                video_grid_thw=self.grid,
                mm_token_type_ids=self._types(ids)[:, : self.prefix_len],
                position_ids=positions[:, :, : self.prefix_len],
                past_key_values=self.cache,
                use_cache=True,
            )

    def _types(self, ids: torch.Tensor) -> torch.Tensor:
        return (ids == self.processor.video_token_id).long() * VIDEO_TOKEN_TYPE

    def _positions(self, ids: torch.Tensor) -> torch.Tensor:
        positions, _ = self.model.model.get_rope_index(
            ids, mm_token_type_ids=self._types(ids), video_grid_thw=self.grid, attention_mask=torch.ones_like(ids)
        )
        return positions

    @torch.no_grad()
    def answer(self, question: str, max_new_tokens: int) -> list[int]:
        """Greedy answer token ids (without the stop token) to ``question`` about this video."""
        ids = self.processor.prompt_ids(question, self.count)
        if ids[: self.prefix_len] != self.prefix:
            raise RuntimeError("the prompt's video block moved; the cached prefix does not apply")
        full = torch.tensor([ids])
        positions = self._positions(full)
        last = int(positions[:, 0, -1].max())
        stop = {self.processor.eos_token_id, self.processor.tokenizer.convert_tokens_to_ids("<|im_end|>")}
        out: list[int] = []
        try:
            feed, pos = full[:, self.prefix_len :], positions[:, :, self.prefix_len :]
            for step in range(max_new_tokens):
                logits = self.model(input_ids=feed, position_ids=pos, past_key_values=self.cache,
                                    use_cache=True, logits_to_keep=1).logits
                token = int(logits[0, -1].argmax())
                if token in stop:
                    break
                out.append(token)
                feed = torch.tensor([[token]])
                pos = torch.full((3, 1, 1), last + 1 + step, dtype=torch.long)
        finally:
            extra = self.cache.get_seq_length() - self.prefix_len
            if extra:
                self.cache.crop(-extra)  # transformers 5.x: a negative count removes that many tokens
        return out


def _score(model, processor, frames, qa, cfg: EvalConfig) -> list[tuple[str, bool, str]]:
    session = VideoSession(model, processor, frames)
    rows = []
    for q in qa:
        said = normalise(processor.decode(session.answer(q.question, cfg.max_answer_tokens)))
        rows.append((q.kind, said == q.answer, said))
    return rows


def _accuracy(rows) -> float:
    return sum(ok for _, ok, _ in rows) / max(1, len(rows))


def _per_kind(rows) -> dict[str, float]:
    kinds = defaultdict(list)
    for kind, ok, _ in rows:
        kinds[kind].append(ok)
    return {k: round(sum(v) / len(v), 3) for k, v in sorted(kinds.items())}


def prior_baseline(clips) -> float:
    """Accuracy of always giving each question kind's most common answer on these clips."""
    by_kind = defaultdict(Counter)
    for clip in clips:
        for q in clip.qa:
            by_kind[q.kind][q.answer] += 1
    right = sum(c.most_common(1)[0][1] for c in by_kind.values())
    return right / max(1, sum(sum(c.values()) for c in by_kind.values()))


def evaluate_testbed(model, processor: TestbedProcessor, cfg: EvalConfig | None = None,
                     log: Callable[[str], None] = print, progress: bool = True) -> dict:
    """All the figures of the module docstring, as a JSON-ready dict."""
    from tqdm.auto import tqdm

    cfg = cfg or EvalConfig()
    result: dict = {"settings": {k: getattr(cfg, k) for k in cfg.__dataclass_fields__}}
    started = time.time()

    def bar(items, label):
        return tqdm(items, desc=label, disable=None if progress else True, leave=False)

    short = [eval_clip(i, cfg.short_frames, processor, cfg.events) for i in range(cfg.short_clips)]
    rows = [r for clip in bar(short, "short clips") for r in _score(model, processor, clip.frames, clip.qa, cfg)]
    tokens = processor.num_video_tokens(cfg.short_frames)
    result["short"] = {"visual_tokens": tokens, "clips": len(short), "questions": len(rows),
                       "accuracy": round(_accuracy(rows), 4), "per_kind": _per_kind(rows)}
    log(f"short videos ({tokens} visual tokens): accuracy {_accuracy(rows):.3f} on {len(rows)} questions")

    controls = short[: cfg.control_clips]
    blank = np.empty_like(controls[0].frames)
    blank[:] = BACKGROUND
    blank_rows = [r for clip in bar(controls, "blank control") for r in _score(model, processor, blank, clip.qa, cfg)]
    other_rows = [r for i, clip in enumerate(bar(controls, "other-clip control"))
                  for r in _score(model, processor, controls[(i + 1) % len(controls)].frames, clip.qa, cfg)]
    result["controls"] = {
        "blank_video_accuracy": round(_accuracy(blank_rows), 4),
        "other_clip_accuracy": round(_accuracy(other_rows), 4),
        "prior_baseline_accuracy": round(prior_baseline(controls), 4),
        "questions": len(blank_rows),
    }
    log(f"controls: blank video {_accuracy(blank_rows):.3f}, another clip's video {_accuracy(other_rows):.3f}, "
        f"prior-only baseline {prior_baseline(controls):.3f}")

    lengths = []
    for clip in bar(short[: cfg.description_clips], "descriptions"):
        session = VideoSession(model, processor, clip.frames)
        lengths.append(len(session.answer(DESCRIBE_PROMPTS[0], cfg.max_description_tokens)))
    long_rows, long_lengths = [], []
    for i in bar(range(cfg.long_clips), "long clips"):
        clip = eval_clip(i, cfg.long_frames, processor, cfg.events)
        session = VideoSession(model, processor, clip.frames)
        for q in clip.qa:
            said = normalise(processor.decode(session.answer(q.question, cfg.max_answer_tokens)))
            long_rows.append((q.kind, said == q.answer, said))
        long_lengths.append(len(session.answer(DESCRIBE_PROMPTS[0], cfg.max_description_tokens)))
    if cfg.long_clips:
        tokens = processor.num_video_tokens(cfg.long_frames)
        result["long"] = {"visual_tokens": tokens, "clips": cfg.long_clips, "questions": len(long_rows),
                          "accuracy": round(_accuracy(long_rows), 4), "per_kind": _per_kind(long_rows)}
        log(f"long videos ({tokens} visual tokens): accuracy {_accuracy(long_rows):.3f} on {len(long_rows)} questions")
    result["description_tokens"] = _length_summary(lengths, long_lengths)
    log(f"description answer lengths (tokens): {result['description_tokens']}")
    result["eval_time_s"] = round(time.time() - started, 1)
    return result


def _length_summary(short: Sequence[int], long: Sequence[int]) -> dict:
    out = {}
    for name, values in (("short", short), ("long", long)):
        if values:
            out[name] = {"min": min(values), "median": statistics.median(values), "max": max(values),
                         "n": len(values)}
    return out
