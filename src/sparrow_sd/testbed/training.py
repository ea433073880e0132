"""Training the testbed's vision tower on SynthVideo (LLaVA stage 1, plus a small LoRA).

Two stages, both on freshly generated clips (a clip costs milliseconds, so
the data never repeats and nothing is stored):

1. **Grounding** (cheap, no language model): the vision tower and merger
   learn to say, for every visual token, which colour, shape and size covers
   its 8x8-pixel cell over the frame pair (soft labels: pixel fractions read
   from the scene's ground truth), through a linear probe on the merger
   output. A forward of the vision tower alone costs a fraction of the
   language model's, so thousands of steps fit in minutes and the features
   the language model later reads are already about objects.
2. **Language** (the LLaVA step): clip and conversation through the frozen
   SmolLM2 (bf16 autocast where the device has bf16 units, fp32 elsewhere:
   see :mod:`sparrow_sd.precision`), cross-entropy on the answer tokens only. A
   conversation holds every question the clip answers plus, half the time,
   the detailed description, in shuffled order, so one costly video forward
   teaches many answers. The vision tower, the merger and a rank-8 LoRA on
   the attention projections train; the probe loss stays on at a small
   weight. Clip lengths vary (and a few long clips are mixed in) so that the
   answers do not depend on the video's length.

Held-out clip seeds (evaluation) are below ``TRAIN_SEED_BASE``; training
seeds start there, so the two never meet.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InvalidInputError
from ..precision import fast_autocast
from ..synth import make_clip
from ..synth.render import object_pixels
from ..synth.vocab import COLOURS, SHAPES, SIZES, with_article
from ..training.schedule import warmup_cosine
from .lora import LoRA
from .processor import TestbedProcessor

TRAIN_SEED_BASE = 1_000_000
INVENTORY_PROMPT = "List the objects in each pair of frames, with where they are."
_ROWS = ("top", "middle", "bottom")
_COLS = ("left", "centre", "right")
DESCRIBE_PROMPTS = (
    "Describe the video in detail.",
    "Give a detailed description of what happens in the video.",
    "What happens in this video? Describe it in detail.",
)
_SIZE_NAMES = tuple(SIZES)
PROBE_CLASSES = (len(COLOURS) + 1, len(SHAPES) + 1, len(_SIZE_NAMES) + 1)  # + background


@dataclass(frozen=True)
class TrainConfig:
    """Settings of one testbed training run (recorded in the manifest)."""

    seed: int = 0
    grounding_steps: int = 600
    grounding_lr: float = 1e-3
    grounding_frames: tuple[int, ...] = (2, 4, 6)
    steps: int = 800
    vision_lr: float = 4e-4
    lora_lr: float = 1e-3
    lora_rank: int = 8
    warmup: int = 50
    probe_weight: float = 0.2
    frames: tuple[int, ...] = (4, 6, 6, 8, 8, 10, 12)
    long_frames: tuple[int, ...] = (16, 24, 32)
    long_every: int = 25
    max_events: int = 4
    description_prob: float = 0.5
    eval_every: int = 200
    checkpoint_every: int = 25
    eval_clips: int = 6
    threads: int = 2
    answer_weighting: str = "turn"  # "turn": every answer counts once; "token": every answer token counts once
    lora_mlp: bool = False  # also adapt the MLP projections (gate/up/down)
    align_weight: float = 1.0  # pull merger outputs towards the word embeddings of what each cell shows
    inventory_prob: float = 1.0  # chance a conversation ends with the frame-by-frame object inventory
    turn_order: str = "qa_first"  # "qa_first": questions, then description, then inventory; "shuffled";
    # "description_first": the description, then the questions


# -- data ----------------------------------------------------------------------


def probe_targets(clip, processor: TestbedProcessor) -> tuple[torch.Tensor, ...]:
    """Soft labels per visual token: fractions of colour, shape and size classes in its cell.

    A token covers a (merge*patch)^2 pixel cell over one temporal patch of
    frames; the last class of each head is background.
    """
    cfg = processor.config
    scene, (T, H, W) = clip.scene, clip.frames.shape[:3]
    tps, cell = cfg.temporal_patch_size, cfg.patch_size * cfg.spatial_merge_size
    maps = np.full((3, T, H, W), -1, np.int64)
    for t in range(T):
        for i in scene.visible_ids(t):
            rows, cols, mask = object_pixels(scene, i, t, H, W)
            obj = scene.objects[i]
            for k, value in enumerate((scene.colour[t, i], SHAPES.index(obj.shape), _SIZE_NAMES.index(obj.size))):
                maps[k, t, rows, cols][mask] = value
    grid_t = math.ceil(T / tps)
    if grid_t * tps > T:
        maps = np.concatenate([maps, np.repeat(maps[:, -1:], grid_t * tps - T, axis=1)], axis=1)
    out = []
    for k, classes in enumerate(PROBE_CLASSES):
        m = np.where(maps[k] < 0, classes - 1, maps[k])
        onehot = np.eye(classes, dtype=np.float32)[m]  # (T, H, W, C)
        onehot = onehot.reshape(grid_t, tps, H // cell, cell, W // cell, cell, classes)
        out.append(torch.from_numpy(onehot.mean(axis=(1, 3, 5)).reshape(-1, classes)))
    return tuple(out)


def where(scene, obj: int, t: int) -> str:
    """Coarse place of an object on frame t: "at the top left", "in the centre", ..."""
    width, height = scene.world_size
    x, y = scene.centre[t, obj]
    row, col = _ROWS[min(2, int(3 * y / height))], _COLS[min(2, int(3 * x / width))]
    if row == "middle":
        return "in the centre" if col == "centre" else f"on the {col}"
    return f"at the {row}" if col == "centre" else f"at the {row} {col}"


def reading_order(scene, t: int) -> list[int]:
    """The objects visible on frame t, top to bottom, then left to right."""
    return sorted(scene.visible_ids(t), key=lambda i: (round(scene.centre[t, i, 1], 2), scene.centre[t, i, 0]))


def inventory(scene, frames_per_token: int) -> str:
    """What every visual token group shows, in words: the densest grounded training target.

    One line per temporal patch (the frames one visual token covers), listing
    the objects on its first frame top to bottom, left to right, with colour,
    size, shape and coarse place. Every word of it can only come from the
    video, so it teaches the language model to read each frame's tokens.
    """
    lines = []
    for start in range(0, scene.num_frames, frames_per_token):
        end = min(scene.num_frames, start + frames_per_token)
        ids = reading_order(scene, start)
        things = [f"{with_article(f'{scene.objects[i].size} {COLOURS[scene.colour[start, i]]} {scene.objects[i].shape}')} "
                  f"{where(scene, i, start)}" for i in ids]
        label = f"Frames {start + 1}-{end}" if end - start > 1 else f"Frame {start + 1}"
        lines.append(f"{label}: {', '.join(things) if things else 'nothing'}.")
    return "\n".join(lines)


TURN_ORDERS = ("qa_first", "shuffled", "description_first")


def conversation(processor: TestbedProcessor, clip, num_video_tokens: int, rng: np.random.Generator,
                 description_prob: float, inventory_prob: float = 0.0,
                 turn_order: str = "shuffled") -> tuple[list[int], list[int]]:
    """Prompt ids and labels (-100 outside answers) for a multi-turn chat about ``clip``.

    The first user turn carries the video, exactly as the processor lays out a
    single question; later turns are text only. Each answer is followed by
    ``<|im_end|>``, which is supervised too so the model learns to stop.
    ``turn_order="qa_first"`` asks the questions (shuffled) before the
    description and the inventory: both state the answers in words, and a
    question asked after them could be answered from that text instead of
    from the video. ``"description_first"`` opens with the description, as a
    user's single "describe the video" prompt does: a model trained only on
    descriptions that follow questions answers a first-turn description
    prompt in its old chat style (measured: 28-85 tokens of repeated lines).
    """
    if turn_order not in TURN_ORDERS:
        raise InvalidInputError(f"turn_order must be one of {TURN_ORDERS}, got {turn_order!r}")
    turns = [(q.question, q.answer) for q in clip.qa]
    if rng.random() < description_prob:
        turns.append((DESCRIBE_PROMPTS[int(rng.integers(len(DESCRIBE_PROMPTS)))], clip.description))
    if turn_order == "qa_first":
        order = np.concatenate([rng.permutation(len(clip.qa)), np.arange(len(clip.qa), len(turns))])
    elif turn_order == "description_first":
        order = np.concatenate([np.arange(len(clip.qa), len(turns)), rng.permutation(len(clip.qa))])
    else:
        order = rng.permutation(len(turns))
    if inventory_prob and rng.random() < inventory_prob:
        turns.append((INVENTORY_PROMPT, inventory(clip.scene, processor.config.temporal_patch_size)))
        order = np.append(order, len(turns) - 1)
    encode = processor._encode
    ids: list[int] = []
    labels: list[int] = []
    for n, index in enumerate(order):
        question, answer = turns[index]
        prompt = processor.prompt_ids(question, num_video_tokens) if n == 0 else encode(
            f"<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n")
        reply = encode(f"{answer}<|im_end|>")
        newline = encode("\n")
        ids += prompt + reply + newline
        labels += [-100] * len(prompt) + reply + [-100] * len(newline)
    return ids, labels


def sample_clip(seed: int, num_frames: int, max_events: int, processor: TestbedProcessor, rng: np.random.Generator):
    """A training clip at the testbed's frame size with 1..max_events events."""
    height, width = processor.config.frame_size
    events = int(rng.integers(1, max_events + 1))
    return make_clip(seed, num_frames=num_frames, height=height, width=width,
                     num_events=min(events, max(1, num_frames - 1)))


# -- the two stages ----------------------------------------------------------------


class _VisualCapture:
    """Keeps the merger output of the last vision forward (for the probe loss)."""

    def __init__(self, visual: nn.Module):
        self.output = None
        self.handle = visual.register_forward_hook(self._keep)

    def _keep(self, module, args, output):
        self.output = output.pooler_output

    def close(self):
        self.handle.remove()


ALIGN_BACKGROUND_WORD = "background"


def word_tables(model, processor: TestbedProcessor) -> tuple[torch.Tensor, ...]:
    """Per probe head, the language model's own embedding of each class's word (last row: background).

    A multi-token word is the mean of its token embeddings. These are the
    targets of the alignment loss: a visual token over a large red square is
    pulled towards ``e(red) + e(square) + e(large)``, so the frozen language
    model reads the video in words it already knows.
    """
    embed = model.get_input_embeddings().weight.detach().float()
    tables = []
    for words in (COLOURS, SHAPES, _SIZE_NAMES):
        rows = [embed[processor._encode(" " + w)].mean(0) for w in (*words, ALIGN_BACKGROUND_WORD)]
        tables.append(torch.stack(rows))
    return tuple(tables)


def align_targets(targets: tuple[torch.Tensor, ...], tables: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """(tokens, hidden) word-embedding mixture for each token's soft labels."""
    return sum(t @ table for t, table in zip(targets, tables))


def _align_loss(features: torch.Tensor, targets: tuple[torch.Tensor, ...], tables) -> torch.Tensor:
    """Mean squared distance to the word mixture, relative to the mixture's own mean square."""
    goal = align_targets(targets, tables)
    return (features.float() - goal).pow(2).mean() / goal.pow(2).mean()


def _grounding_loss(probe, features, targets, tables, align_weight: float) -> torch.Tensor:
    targets = tuple(t.to(features.device) for t in targets)
    loss = _probe_loss(probe, features, targets)
    if align_weight:
        loss = loss + align_weight * _align_loss(features, targets, tables)
    return loss


def _probe_loss(probe: nn.Linear, features: torch.Tensor, targets: tuple[torch.Tensor, ...]) -> torch.Tensor:
    logits = probe(features.float()).split(PROBE_CLASSES, dim=-1)
    return sum(-(t * F.log_softmax(z, -1)).sum(-1).mean() for z, t in zip(logits, targets)) / len(targets)


class RunState:
    """Checkpoints that let an interrupted build continue bit for bit.

    Every ``every`` steps (and at the end of each stage) it writes the trained
    modules, the optimizer, the data RNG and torch's RNG to ``path``; a new
    run with the same settings resumes from there, so an interrupted build
    gives the same weights as an uninterrupted one. ``path=None`` disables it.
    """

    STAGES = ("grounding", "language", "done")

    def __init__(self, path, cfg: TrainConfig, log: Callable[[str], None] = print):
        self.path, self.cfg, self.every, self.log = path, cfg, cfg.checkpoint_every, log
        self.saved = None
        self.started = time.time()
        if path is not None and Path(path).is_file():
            self.saved = torch.load(path, weights_only=False, map_location="cpu")
            if not same_run(self.saved["config"], cfg):
                raise InvalidInputError(f"{path} holds a run with other settings; delete it or use another work folder")

    def elapsed_s(self) -> float:
        """Training time so far, over every run that contributed to this state."""
        before = self.saved.get("elapsed_s", 0.0) if self.saved else 0.0
        return before + time.time() - self.started

    def stage_done(self, stage: str) -> bool:
        return self.saved is not None and self.STAGES.index(self.saved["stage"]) > self.STAGES.index(stage)

    def restore(self, stage: str, modules: dict[str, nn.Module], opt, rng: np.random.Generator) -> int:
        """Load the saved state of ``stage`` if there is one; the step to continue from."""
        if self.saved is None or self.saved["stage"] != stage:
            return 0
        self.load_modules(modules)
        if "optimizer" not in self.saved:  # the previous stage had just finished
            return 0
        opt.load_state_dict(self.saved["optimizer"])
        rng.bit_generator.state = self.saved["rng"]
        torch.set_rng_state(self.saved["torch_rng"])
        self.log(f"resuming {stage} at step {self.saved['step']} from {self.path}")
        return self.saved["step"]

    def load_modules(self, modules: dict[str, nn.Module]) -> None:
        """The saved weights of every module the checkpoint holds."""
        for name, module in modules.items():
            if name in self.saved["modules"]:
                module.load_state_dict(self.saved["modules"][name])

    def maybe_save(self, stage: str, step: int, total: int, modules: dict[str, nn.Module], opt,
                   rng: np.random.Generator) -> None:
        if self.path is None or (step % self.every and step != total):
            return
        state = {"stage": stage if step < total else self.STAGES[self.STAGES.index(stage) + 1],
                 "step": step if step < total else 0, "config": config_dict(self.cfg),
                 "elapsed_s": self.elapsed_s()}
        if step < total:
            state.update(modules={n: m.state_dict() for n, m in modules.items()}, optimizer=opt.state_dict(),
                         rng=rng.bit_generator.state, torch_rng=torch.get_rng_state())
        else:  # a finished stage: the next one starts from these module weights
            state.update(modules={n: m.state_dict() for n, m in modules.items()}, finished=stage)
        partial = Path(str(self.path) + ".partial")
        torch.save(state, partial)
        os.replace(partial, self.path)


def train_grounding(model, processor: TestbedProcessor, probe: nn.Linear, cfg: TrainConfig,
                    log: Callable[[str], None] = print, state: RunState | None = None) -> None:
    """Stage 1: vision tower + merger + probe on per-token object labels."""
    visual = model.model.visual
    params = list(visual.parameters()) + list(probe.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.grounding_lr, weight_decay=0.01)
    rng = np.random.default_rng(cfg.seed)
    modules = {"visual": visual, "probe": probe}
    state = state or RunState(None, cfg)
    tables = word_tables(model, processor) if cfg.align_weight else None
    first = state.restore("grounding", modules, opt, rng)
    start, running = time.time(), None
    for step in range(first, cfg.grounding_steps):
        for group in opt.param_groups:
            group["lr"] = cfg.grounding_lr * warmup_cosine(step, cfg.grounding_steps, cfg.warmup)
        frames = int(rng.choice(cfg.grounding_frames))
        clip = sample_clip(TRAIN_SEED_BASE + 7_000_000 + cfg.seed * 100_003 + step, frames, cfg.max_events,
                           processor, rng)
        pixels, grid = processor.preprocess_video(clip.frames)
        device = probe.weight.device
        with fast_autocast(device):
            features = visual(pixels.to(device), grid_thw=grid.to(device)).pooler_output
        loss = _grounding_loss(probe, features, probe_targets(clip, processor), tables, cfg.align_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        running = loss.item() if running is None else 0.95 * running + 0.05 * loss.item()
        state.maybe_save("grounding", step + 1, cfg.grounding_steps, modules, opt, rng)
        if (step + 1) % 50 == 0 or step + 1 == cfg.grounding_steps:
            rate = (time.time() - start) / (step + 1 - first)
            log(f"grounding {step + 1}/{cfg.grounding_steps} probe_loss {running:.4f} "
                f"{rate:.2f}s/step eta {rate * (cfg.grounding_steps - step - 1) / 60:.1f}min")


def _answer_forward(model, processor, clip, rng, description_prob, inventory_prob=0.0, turn_order="shuffled"):
    """Logits at the supervised positions and their targets for one clip's conversation."""
    pixels, grid = processor.preprocess_video(clip.frames)
    count = int(grid.prod()) // processor.config.spatial_merge_size**2
    ids, labels = conversation(processor, clip, count, rng, description_prob, inventory_prob, turn_order)
    device = model.lm_head.weight.device
    input_ids = torch.tensor([ids], device=device)
    targets = torch.tensor(labels[1:], device=device)
    where = torch.nonzero(targets != -100).squeeze(-1)
    with fast_autocast(device):
        hidden = model.model(
            input_ids=input_ids,
            attention_mask=torch.ones_like(input_ids),
            mm_token_type_ids=(input_ids == processor.video_token_id).long() * 2,
            pixel_values_videos=pixels.to(device),
            video_grid_thw=grid.to(device),
        ).last_hidden_state[0, where]
        logits = model.lm_head(hidden).float()
    return logits, targets[where], ids, labels


def answer_loss(logits: torch.Tensor, targets: torch.Tensor, labels: list[int], weighting: str) -> torch.Tensor:
    """Cross-entropy over the supervised tokens: per token, or averaged per answer first
    (``"turn"``), so a one-word answer weighs as much as a 150-token description."""
    per_token = F.cross_entropy(logits, targets, reduction="none")
    if weighting == "token":
        return per_token.mean()
    if weighting != "turn":
        raise InvalidInputError(f"answer_weighting must be 'token' or 'turn', got {weighting!r}")
    lengths = [end - start for start, end in answer_spans(labels[1:])]
    return torch.stack([chunk.mean() for chunk in per_token.split(lengths)]).mean()


# Settings added after checkpoints were first written, with the behaviour those checkpoints had.
_ADDED_SETTINGS = {"answer_weighting": "token", "align_weight": 0.0, "lora_mlp": False, "inventory_prob": 0.0,
                   "turn_order": "shuffled"}


def same_run(saved: dict, cfg: TrainConfig) -> bool:
    """Whether a checkpoint's settings are ``cfg``'s (a setting it predates counts as its old behaviour)."""
    return all(saved.get(k, _ADDED_SETTINGS.get(k)) == v for k, v in config_dict(cfg).items())


def answer_spans(labels: list[int]) -> list[tuple[int, int]]:
    """(start, end) of each supervised run in ``labels`` (one per answer)."""
    spans, start = [], None
    for i, label in enumerate(labels + [-100]):
        if label != -100 and start is None:
            start = i
        elif label == -100 and start is not None:
            spans.append((start, i))
            start = None
    return spans


@torch.no_grad()
def held_out_accuracy(model, processor, cfg: TrainConfig, num_frames: int = 6) -> float:
    """Teacher-forced exact-match answer accuracy on held-out clips (QA only, no description)."""
    rng = np.random.default_rng(12345)
    right = total = 0
    for n in range(cfg.eval_clips):
        clip = make_clip(500_000 + n, num_frames=num_frames, height=processor.config.frame_size[0],
                         width=processor.config.frame_size[1], num_events=3)
        logits, targets, _, labels = _answer_forward(model, processor, clip, rng, description_prob=0.0)
        correct = (logits.argmax(-1) == targets).tolist()
        offset = 0
        for start, end in answer_spans(labels[1:]):
            length = end - start
            right += all(correct[offset : offset + length])
            total += 1
            offset += length
    return right / max(1, total)


def train_language(model, processor: TestbedProcessor, probe: nn.Linear, lora: LoRA, cfg: TrainConfig,
                   log: Callable[[str], None] = print, state: RunState | None = None) -> None:
    """Stage 2: the LLaVA step, answers through the frozen language model (+ LoRA)."""
    visual = model.model.visual
    capture = _VisualCapture(visual)
    groups = [
        {"params": list(visual.parameters()) + list(probe.parameters()), "lr": cfg.vision_lr, "base": cfg.vision_lr},
        {"params": list(lora.parameters()), "lr": cfg.lora_lr, "base": cfg.lora_lr, "weight_decay": 0.0},
    ]
    opt = torch.optim.AdamW(groups, weight_decay=0.01)
    params = [p for g in groups for p in g["params"]]
    rng = np.random.default_rng(cfg.seed + 1)
    modules = {"visual": visual, "probe": probe, "lora": lora}
    state = state or RunState(None, cfg)
    tables = word_tables(model, processor) if cfg.align_weight else None
    first = state.restore("language", modules, opt, rng)
    start, loss_avg, acc_avg = time.time(), None, None
    try:
        for step in range(first, cfg.steps):
            for group in opt.param_groups:
                group["lr"] = group["base"] * warmup_cosine(step, cfg.steps, cfg.warmup)
            long = cfg.long_every and (step + 1) % cfg.long_every == 0
            frames = int(rng.choice(cfg.long_frames if long else cfg.frames))
            clip = sample_clip(TRAIN_SEED_BASE + cfg.seed * 100_003 + step, frames, cfg.max_events, processor, rng)
            logits, targets, _, labels = _answer_forward(model, processor, clip, rng, cfg.description_prob,
                                                         inventory_prob=cfg.inventory_prob, turn_order=cfg.turn_order)
            loss = answer_loss(logits, targets, labels, cfg.answer_weighting)
            if cfg.probe_weight:
                loss = loss + cfg.probe_weight * _grounding_loss(probe, capture.output, probe_targets(clip, processor),
                                                                 tables, cfg.align_weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            acc = (logits.argmax(-1) == targets).float().mean().item()
            loss_avg = loss.item() if loss_avg is None else 0.95 * loss_avg + 0.05 * loss.item()
            acc_avg = acc if acc_avg is None else 0.95 * acc_avg + 0.05 * acc
            state.maybe_save("language", step + 1, cfg.steps, modules, opt, rng)
            if (step + 1) % 10 == 0:
                rate = (time.time() - start) / (step + 1 - first)
                log(f"language {step + 1}/{cfg.steps} loss {loss_avg:.4f} token_acc {acc_avg:.3f} "
                    f"frames {frames} {rate:.2f}s/step eta {rate * (cfg.steps - step - 1) / 60:.1f}min")
            if cfg.eval_every and ((step + 1) % cfg.eval_every == 0 or step + 1 == cfg.steps):
                log(f"held-out answer accuracy (6 frames, teacher forced) at step {step + 1}: "
                    f"{held_out_accuracy(model, processor, cfg):.3f}")
    finally:
        capture.close()


def config_dict(cfg: TrainConfig) -> dict:
    """JSON-ready settings (tuples as lists)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(cfg).items()}
