"""The testbed's instruction tuning: a LoRA that teaches detailed SynthVideo descriptions.

LLaVA's stage 2 on our scene reader: each step takes one SynthVideo clip,
generated on the fly from a seed (training seeds start at 1,000,000,
evaluation seeds at 100,000, so nothing held out is trained on), reads it
through the real path (pixels -> scene reader -> the language model's
embeddings, exactly as ``generate()`` does), and minimises the cross-entropy
of the clip's reference description after the describe prompt.

What keeps a step cheap on a 2-core CPU:

- the LoRA sits on the upper decoder layers only (``first_layer``), so the lower
  layers run without autograd and keep no activations;
- the 151,936-way LM head runs on the answer positions only, not on the
  thousands of visual positions;
- bf16 autocast where the CPU computes bf16 natively (:mod:`sparrow_sd.precision`).

Clip lengths are drawn from ``frames`` (196 visual tokens per frame); long
clips have their events capped at ``max_events`` so a description stays
within 60-300 tokens at any length. A small share of steps shows a blank
video, answered with a description that names no object.

Training resumes exactly: the checkpoint (LoRA, optimizer, step) is small
enough to commit, and step ``k`` always draws the same clip.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InvalidInputError
from ..kv_cache import cache_argument
from ..precision import fast_autocast
from ..synth import BACKGROUND, bounded_num_events, make_clip
from .config import TestbedConfig
from .lora import LoRA
from .processor import TestbedProcessor

TRAIN_SEED_BASE = 1_000_000
EVENT_COUNTS = ("by-length", "up-to-max")
EVAL_SEED_BASE = 100_000
BLANK_DESCRIPTIONS = (
    "The video shows only a plain dark background. No object appears at any point, and nothing changes.",
    "The screen stays empty and dark for the whole clip: there are no objects and no events.",
    "Nothing is shown in this video: the frames are a uniform dark background from start to end.",
)


@dataclass(frozen=True)
class TrainConfig:
    """The recipe. ``frames``/``frame_weights``: clip lengths and how often each is drawn.

    ``events``: how many events a clip holds. ``"by-length"`` gives every clip its
    length's count (:func:`~sparrow_sd.synth.bounded_num_events`: 2 events up to 19
    frames, 8 from 120), so a short clip never shows more than 4. ``"up-to-max"``
    draws the count uniformly from that up to ``max_events`` (at most one event per
    two frames), so the many-event descriptions of long videos are learnt on short,
    cheap clips.

    ``video_gradient``: False runs the prompt, video included, without autograd into a
    cache and trains on the answer's positions only (:func:`answer_loss`): a long
    video then costs about one forward a step instead of a forward, a recomputation
    and a backward, so more steps at 25k fit in a session."""

    steps: int = 120
    lr: float = 4e-4
    warmup: int = 10
    rank: int = 16
    alpha: float = 32.0
    first_layer: int = 12
    targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    frames: tuple[int, ...] = (5, 8, 12, 16, 24, 32, 40)
    frame_weights: tuple[float, ...] = (4, 3, 2, 2, 1, 1, 1)
    max_events: int = 8
    events: str = "by-length"
    blank_prob: float = 0.04
    height: int = 112
    seed: int = 0
    checkpoint_activations: bool = False
    video_gradient: bool = True

    def __post_init__(self) -> None:
        if len(self.frames) != len(self.frame_weights) or not self.frames:
            raise InvalidInputError("frames and frame_weights must be non-empty and of one length")
        if self.steps < 1 or self.rank < 1 or min(self.frames) < 1:
            raise InvalidInputError("steps, rank and frame counts must be positive")
        if self.events not in EVENT_COUNTS:
            raise InvalidInputError(f"events must be one of {', '.join(EVENT_COUNTS)}, got {self.events!r}")
        if self.checkpoint_activations and not self.video_gradient:
            raise InvalidInputError("checkpoint_activations recomputes the video's activations, which "
                                    "video_gradient=False keeps none of: set one or the other")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: dict) -> TrainConfig:
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()})


LONG_STAGE = TrainConfig(
    steps=6, lr=2e-4, warmup=1, frames=(48, 72, 96), frame_weights=(1, 1, 1),
    blank_prob=0.2, seed=7, checkpoint_activations=True,
)
"""The second stage: the base LoRA continued on 9k-19k-token clips (and long blank videos).

The base recipe stops at 40 frames (8k visual tokens); at 13k-25k its
descriptions drop events and a blank video makes it loop. A step at 96 frames
costs minutes on the 2-core CPU, so this stage is short and starts from the
base LoRA; activations are recomputed in the backward pass so 19k tokens fit
in memory."""


EVENTS_STAGE = TrainConfig(
    steps=48, lr=3e-4, warmup=3, frames=(16, 20), frame_weights=(1, 1), events="up-to-max", seed=13,
)
"""The events stage: the long-stage LoRA continued on 3.1k-3.9k-token clips holding up to 8 events.

The base and long recipes give a clip its length's event count, so no clip under
20 frames held more than 2 events and none under 120 frames held 8; v2.3 wrote 3-4
events and stopped, at every length. Measured on v2.3 at 16 frames (3,137 visual
tokens), 4 held-out clips: event recall 1.00 with 2 events and 0.38 with 8, so the
count was the first suspect for its 25k recall of 0.25 (8 events there). Short clips
teach the many-event descriptions cheaply (16 frames is the shortest clip that holds 8;
a step costs 65-100 s on a 2-core AVX2 CPU in fp32); the long stage before it
taught the distance. 48 steps moved that probe's recall from 0.38 to 0.50 (v2.5 in
docs/testbed.md) but lowered 25k's to 0.17, so it is off by default (not adopted)."""


LONGEST_STAGE = TrainConfig(
    steps=6, lr=1e-4, warmup=0, frames=(112, 128), frame_weights=(1, 2), blank_prob=0.2, seed=11,
    checkpoint_activations=True,
)
"""An optional last stage (``sparrow testbed build --longest-steps 6``): the LoRA of the stages
before continued at 22k-25k tokens, the benchmark's longest length. Off by default: it was tried
(v2.4 in docs/testbed.md) and not adopted.

After the long stage (v2.3) descriptions held at 13k and came apart at 25k (invented
objects, a 36-token answer ending in stray characters), beyond the 19k the LoRA had seen.
Six steps here (about 70 minutes on the 2-core CPU) moved 25k event recall from 0.25 to
0.33 on the same 3 clips, still under the 0.5 bar, with the other clips' grounding up
from 0.24 to 0.29: within the noise of 3 clips, so the shipped weights stayed v2.3."""


@dataclass
class Example:
    """One training sequence: prompt (video placeholders included), answer ids, the video's pixels."""

    prompt_ids: list[int]
    answer_ids: list[int]
    pixel_values_videos: torch.Tensor
    num_frames: int
    seed: int
    num_events: int = 0  # 0 for a blank video


def blank_frames(num_frames: int, height: int, width: int) -> np.ndarray:
    """A video of the background colour only (the blank-video control)."""
    frames = np.empty((num_frames, height, width, 3), np.uint8)
    frames[:] = BACKGROUND
    return frames


def event_count_range(num_frames: int, config: TrainConfig) -> tuple[int, int]:
    """The fewest and most events a training clip of ``num_frames`` frames holds under ``config``."""
    fewest = bounded_num_events(num_frames, config.max_events)
    if config.events == "by-length":
        return fewest, fewest
    return fewest, max(fewest, min(config.max_events, num_frames // 2))


def make_example(seed: int, num_frames: int, processor: TestbedProcessor, config: TrainConfig,
                 blank: bool = False, num_events: int | None = None) -> Example:
    """The description example of clip ``seed`` (or a blank video) at ``num_frames`` frames.

    ``num_events``: None gives the length's own count (:func:`bounded_num_events`)."""
    size = config.height
    if blank:
        num_events = 0
        frames = blank_frames(num_frames, size, size)
        rng = np.random.default_rng(seed)
        description = BLANK_DESCRIPTIONS[int(rng.integers(len(BLANK_DESCRIPTIONS)))]
    else:
        if num_events is None:
            num_events = bounded_num_events(num_frames, config.max_events)
        clip = make_clip(seed, num_frames=num_frames, height=size, width=size, num_events=num_events)
        frames, description = clip.frames, clip.description
    prompt = processor.prompt_ids(processor.config.describe_prompt, processor.num_video_tokens(num_frames))
    answer = processor.encode(description) + [processor.eos_token_id]
    return Example(prompt, answer, processor.frames_to_tensor(frames)[None], num_frames, seed, num_events)


def step_example(step: int, processor: TestbedProcessor, config: TrainConfig) -> Example:
    """The example of training step ``step``: the same for a given (config, step), so resumes are exact."""
    rng = np.random.default_rng([config.seed, step])
    weights = np.asarray(config.frame_weights, dtype=float)
    frames = int(rng.choice(config.frames, p=weights / weights.sum()))
    blank = bool(rng.random() < config.blank_prob)
    fewest, most = event_count_range(frames, config)
    # drawn only when there is a choice, so a "by-length" recipe draws the same clips as before the option
    events = int(rng.integers(fewest, most + 1)) if most > fewest else fewest
    return make_example(TRAIN_SEED_BASE + config.seed * 100_000 + step, frames, processor, config, blank, events)


def answer_loss(model, example: Example, video_gradient: bool = True) -> torch.Tensor:
    """Mean cross-entropy of the answer tokens; the LM head runs on those positions only.

    ``video_gradient=False``: the prompt but its last token (the whole video) runs first
    without autograd into a cache; the last prompt token and the answer then run on it with
    autograd. The loss is the same; the gradient reaches the LoRA through the text's own
    positions only, the video's keys and values held at this step's values (they read the
    video with the LoRA as it is, but are not themselves trained by this step)."""
    pixels = example.pixel_values_videos.to(model.dtype)
    answer = example.answer_ids
    if video_gradient:
        ids = torch.tensor([example.prompt_ids + answer])
        hidden = model.model(input_ids=ids, pixel_values_videos=pixels, use_cache=False).last_hidden_state
        start = len(example.prompt_ids) - 1
        hidden = hidden[0, start : start + len(answer)]
    else:
        name = cache_argument(model.model)
        with torch.no_grad():
            prefix = model.model(input_ids=torch.tensor([example.prompt_ids[:-1]]), pixel_values_videos=pixels,
                                 use_cache=True)
        rest = torch.tensor([example.prompt_ids[-1:] + answer[:-1]])
        hidden = model.model(input_ids=rest, **{name: getattr(prefix, name)}, use_cache=True).last_hidden_state[0]
    logits = model.lm_head(hidden)
    return F.cross_entropy(logits.float(), torch.tensor(answer))


def learning_rate(step: int, config: TrainConfig) -> float:
    """Linear warm-up, then cosine decay to a tenth."""
    if step < config.warmup:
        return config.lr * (step + 1) / config.warmup
    progress = (step - config.warmup) / max(1, config.steps - config.warmup)
    return config.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


@dataclass
class Checkpoint:
    """What a resumed run needs: the LoRA and optimizer state, the next step, the recipe."""

    step: int
    lora: dict[str, torch.Tensor]
    optimizer: dict
    config: dict
    losses: list[float]
    testbed: str = ""  # the TestbedConfig's JSON; empty in checkpoints written before it was recorded
    lineage: str = ""  # the JSON of the stages this one continued; empty in checkpoints written before it was

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        torch.save(dataclasses.asdict(self), tmp)
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> Checkpoint:
        try:
            raw = torch.load(path, map_location="cpu", weights_only=True)
            return cls(**raw)
        except Exception as exc:
            raise InvalidInputError(f"{path} is not a readable testbed training checkpoint ({exc})") from exc


def train_lora(model, processor: TestbedProcessor, config: TrainConfig, checkpoint_path: Path | None = None,
               checkpoint_every: int = 10, log: Callable[[str], None] = print,
               stop: Callable[[], bool] = lambda: False, lora: LoRA | None = None,
               lineage: str = "") -> LoRA:
    """Train (or resume) the description LoRA on ``model`` in place; returns it attached.

    ``lora``: an attached LoRA to continue from (a later stage), instead of a
    fresh one. A checkpoint at ``checkpoint_path`` is resumed when its recipe
    equals ``config`` and it continued the same stages (``lineage``, a JSON of the
    earlier recipes; a different recipe or lineage is refused). ``stop()`` is polled
    after each step; when it says so, a checkpoint is written and training
    returns early.
    """
    for param in model.parameters():
        param.requires_grad_(False)
    if lora is None:
        lora = LoRA(model, rank=config.rank, alpha=config.alpha, targets=config.targets, seed=config.seed,
                    first_layer=config.first_layer).attach()
    elif not lora.matches(model, config.rank, config.alpha, config.targets, config.first_layer):
        raise InvalidInputError("the LoRA to continue from has another rank, first layer or targets than the recipe")
    for param in lora.parameters():
        param.requires_grad_(True)
    optimizer = torch.optim.AdamW(lora.parameters(), lr=config.lr, weight_decay=0.0)
    testbed_json = processor.config.to_json()
    start, losses = 0, []
    if checkpoint_path is not None and checkpoint_path.is_file():
        saved = Checkpoint.load(checkpoint_path)
        if TrainConfig.from_dict(saved.config) != config:
            raise InvalidInputError(f"{checkpoint_path} was made with another recipe; use a new --work folder")
        if _testbed_of(saved) != _testbed_of(testbed_json):
            raise InvalidInputError(f"{checkpoint_path} was made for another testbed config; use a new --work folder")
        if saved.lineage and saved.lineage != lineage:
            raise InvalidInputError(f"{checkpoint_path} continued other training stages than this build's; "
                                    "use a new --work folder")
        lora.load_state_dict(saved.lora)
        optimizer.load_state_dict(saved.optimizer)
        start, losses = saved.step, list(saved.losses)
        log(f"resumed at step {start} of {config.steps}")

    def save(step: int) -> None:
        if checkpoint_path is not None:
            Checkpoint(step, {k: v.detach().clone() for k, v in lora.state_dict().items()},
                       optimizer.state_dict(), config.to_dict(), losses, testbed_json, lineage).save(checkpoint_path)

    model.train()
    if config.checkpoint_activations:
        recompute_activations(model, True)
    for step in range(start, config.steps):
        began = time.perf_counter()
        example = step_example(step, processor, config)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, config)
        with fast_autocast("cpu"):
            loss = answer_loss(model, example, config.video_gradient)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(lora.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
        tokens = len(example.prompt_ids) + len(example.answer_ids)
        log(f"step {step + 1}/{config.steps} frames {example.num_frames:3d} tokens {tokens:6d} "
            f"loss {losses[-1]:.3f} ({time.perf_counter() - began:.1f} s)")
        if (step + 1) % checkpoint_every == 0 or step + 1 == config.steps:
            save(step + 1)
        if stop():
            save(step + 1)
            log(f"stopped at step {step + 1}; rerun the same command to resume")
            break
    if config.checkpoint_activations:
        recompute_activations(model, False)
    model.eval()
    return lora


def _testbed_of(saved: Checkpoint | str) -> TestbedConfig:
    """The testbed config a checkpoint (or a config JSON) was made for; empty JSON: an older checkpoint."""
    text = saved.testbed if isinstance(saved, Checkpoint) else saved
    return TestbedConfig.from_json(text or "{}")


def recompute_activations(model, on: bool) -> None:
    """Transformers' activation checkpointing (renamed from "gradient checkpointing" in 5.x; both spellings)."""
    kwargs = {"use_reentrant": False}
    if on and hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    elif on:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    else:
        (getattr(model, "activation_checkpointing_disable", None) or model.gradient_checkpointing_disable)()


def thread_count() -> int:
    """Threads for training: all cores unless ``OMP_NUM_THREADS`` says otherwise."""
    return int(os.environ.get("OMP_NUM_THREADS", os.cpu_count() or 1))
