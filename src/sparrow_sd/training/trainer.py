"""``sparrow train``: a draft of any visual mode, trained on self-distilled data.

Per sample: rebuild the target's prefill from the record, build the draft's
items with the same :func:`~sparrow_sd.draft.context.build_draft_context` as
inference, unroll the draft ``mtp_steps`` levels on its own states
(:mod:`.unroll`) and take, at every level ``k`` and every response position,
the cross-entropy against the target's distribution over the draft vocabulary
(soft labels: the target's logits at that position, from its stored state),
weighted ``step_decay ** k``; optionally plus a regression of the level-0
output onto the target's state. Peers and ablations use the same code with
another ``visual_mode`` / ``ivsb`` / ``mtp_steps``, so they differ only where
they are meant to.

The reduced draft vocabulary (``d2t`` / ``t2d``) is the ``draft_vocab_size``
most frequent tokens of the generated responses (plus the stop tokens).
Training runs through ``accelerate`` (DDP across processes, mixed precision,
gradient accumulation); checkpoints hold the draft, the optimizer and the
step, and ``resume`` continues from the last one. SIGINT (Ctrl-C) or SIGTERM
during training finishes the current step, writes a checkpoint and raises
:class:`TrainingInterrupted`, which says how to resume (:mod:`.checkpoints`).
"""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from ..draft import DraftConfig, DraftContext, Draft, build_draft_context, load_draft, save_draft
from ..errors import InvalidInputError
from ..progress import progress as progress_bar
from ..sampling import default_eos_ids
from ..targets import TargetAdapter, wrap_target
from .checkpoints import (
    StopRequested,
    TrainingInterrupted,
    checkpoint_path,
    has_checkpoint,
    save_checkpoint,
    should_stop,
    stop_on_signals,
)
from .records import missing_for_mode, prefill_from_record, record_glimpse
from .schedule import warmup_cosine
from .shards import DataShards, data_info
from .unroll import unroll


@dataclass(frozen=True)
class DraftTrainConfig:
    """A draft-training run (written next to the trained draft)."""

    # None: the recipe's own. Sparrow's shipped draft reads the 16-item glimpse (measured against "none"
    # on testbed v2: docs/benchmarks.md); an eagle3 draft is text-only ("none").
    visual_mode: str | None = None
    architecture: str = "sparrow"  # or "eagle3" (text-only; needs data made with aux layers)
    ivsb: bool = True  # visual items carry the IVSB-layer states (the data's layer)
    mtp_steps: int = 3  # unroll levels (1 = no multi-token prediction)
    step_decay: float = 0.8
    hidden_weight: float = 0.0  # regression of the level-0 output onto the target state
    draft_vocab_size: int | None = 2048  # None: the target's whole vocabulary
    intermediate_size: int | None = None  # None: the target's
    window: int | None = 1024
    epochs: int = 2
    lr: float = 5e-4
    warmup: int = 50
    # 1: an update per sample. Measured on testbed v2's 160-clip suite data (4 epochs, 608 samples seen), the
    # Sparrow draft's held-out agreement per MTP level was 0.774/0.675/0.675 with 1 against 0.731/0.634/0.632
    # with 4, for the same compute: on data this small the number of updates is what limits.
    grad_accum: int = 1
    mixed_precision: str = "no"  # accelerate's: no, bf16, fp16
    eval_fraction: float = 0.05
    eval_every: int = 200
    checkpoint_every: int = 500
    seed: int = 0

    def __post_init__(self):
        if self.visual_mode is None:
            object.__setattr__(self, "visual_mode", "none" if self.architecture == "eagle3" else "glimpse")


def build_draft_vocab(records, size: int, vocab_size: int, always: set[int] = frozenset()) -> torch.Tensor:
    """The ``size`` most frequent response tokens (plus ``always``), as sorted target ids."""
    counts: Counter = Counter()
    for record in records:
        ids = record["input_ids"].long()
        counts.update(ids[record["loss_mask"].bool()].tolist())
    chosen = set(always)
    for token, _ in counts.most_common():
        if len(chosen) >= size:
            break
        chosen.add(token)
    for token in range(vocab_size):  # pad with the lowest ids so the size is what was asked
        if len(chosen) >= min(size, vocab_size):
            break
        chosen.add(token)
    return torch.tensor(sorted(chosen), dtype=torch.long)


def draft_config_for(target, cfg: DraftTrainConfig, ivsb_layer: int,
                     aux_layers: tuple[int, ...] | None = None) -> DraftConfig:
    text = target.text_config
    eagle3 = cfg.architecture == "eagle3"
    if eagle3 and not aux_layers:
        raise InvalidInputError("an eagle3 draft trains on aux-layer states: make the data with "
                                "`sparrow datagen --aux-layers default`")
    return DraftConfig(
        hidden_size=target.hidden_size,
        intermediate_size=cfg.intermediate_size or text.intermediate_size,
        num_attention_heads=text.num_attention_heads,
        num_key_value_heads=text.num_key_value_heads,
        vocab_size=target.vocab_size,
        head_dim=getattr(text, "head_dim", None),
        rms_norm_eps=getattr(text, "rms_norm_eps", 1e-6),
        rope_theta=getattr(text, "rope_theta", None) or 10000.0,
        visual_mode=cfg.visual_mode,
        window=None if cfg.visual_mode in ("full", "pruned") else cfg.window,
        ivsb_layer=ivsb_layer if (cfg.ivsb or cfg.visual_mode == "glimpse") and not eagle3 else None,
        target_model_type=target.model.config.model_type,
        architecture=cfg.architecture,
        aux_layers=tuple(aux_layers) if eagle3 else None,
        target_max_position_embeddings=getattr(text, "max_position_embeddings", None),
    )


def prompt_items(context: DraftContext, record: dict[str, torch.Tensor]) -> int:
    """How many of the draft's items (glimpse items included) come from the prompt: the items
    inference builds from the prompt alone, and pins in the draft's window."""
    response = record["loss_mask"].bool().nonzero()
    prompt_length = int(response[0]) if response.numel() else record["loss_mask"].numel()
    return int((context.source < prompt_length).sum())


def sample_loss(draft: Draft, record: dict[str, torch.Tensor], embed_weight: torch.Tensor,
                cfg: DraftTrainConfig) -> tuple[torch.Tensor, list[float], int]:
    """(loss, per-level greedy agreement, supervised positions) for one record."""
    dcfg = draft.config
    dtype = draft.fc.weight.dtype
    prefill = prefill_from_record(record, embed_weight, dcfg.ivsb_layer, dtype, dcfg.aux_layers)
    context = build_draft_context(prefill, dcfg, glimpse=record_glimpse(record, dtype))
    ids = prefill.input_ids
    source = context.source
    nxt = source + 1
    has_label = (source >= 0) & (nxt < ids.shape[0])
    labelled = has_label.clone()
    labelled[has_label] = record["loss_mask"].bool().to(ids.device)[nxt[has_label]]
    if not labelled.any():
        return torch.zeros((), requires_grad=True, device=ids.device), [0.0] * cfg.mtp_steps, 0
    where = labelled.nonzero().squeeze(-1)
    with torch.no_grad():
        target_state = prefill.hidden[source[where]]
        target_logp = F.log_softmax(draft.lm_head(target_state).float(), dim=-1)
        truth = ids[nxt[where]]
    levels = unroll(draft, context.embeds, context.hidden, cfg.mtp_steps, prompt_items=prompt_items(context, record),
                    first_item=int(where[0]))
    loss = torch.zeros((), dtype=torch.float32, device=ids.device)
    agree = []
    norm = sum(cfg.step_decay**k for k in range(cfg.mtp_steps))
    for k, level in enumerate(levels):
        rows = level.rows(where)
        valid = level.valid[rows]
        if not valid.any():
            agree.append(0.0)
            continue
        logp = F.log_softmax(level.logits[rows].float(), dim=-1)
        ce = -(target_logp.exp() * logp).sum(-1)
        loss = loss + (cfg.step_decay**k / norm) * ce[valid].mean()
        guess = draft.to_target_ids(level.logits[rows].argmax(-1))
        agree.append(float((guess == truth)[valid].float().mean()))
    if cfg.hidden_weight and dcfg.architecture == "sparrow":  # eagle3 feeds back a pre-norm state
        loss = loss + cfg.hidden_weight * F.smooth_l1_loss(levels[0].hidden[levels[0].rows(where)].float(),
                                                           target_state.float())
    return loss, agree, int(where.numel())


def evaluate_agreement(draft, records, embed_weight, cfg) -> list[float]:
    """Mean per-level greedy agreement with the target on held-out records."""
    totals = [0.0] * cfg.mtp_steps
    weight = 0
    with torch.no_grad():
        for record in records:
            _, agree, n = sample_loss(draft, record, embed_weight, cfg)
            totals = [t + a * n for t, a in zip(totals, agree)]
            weight += n
    return [t / max(1, weight) for t in totals]


def check_data_target(info: dict, target: TargetAdapter, data_dir: str | Path) -> None:
    """Refuse data that another target generated."""
    if info["target_model_type"] != target.model.config.model_type or info["hidden_size"] != target.hidden_size:
        raise InvalidInputError(f"{data_dir} was generated by a {info['target_model_type']} target of width "
                                f"{info['hidden_size']}, not this {target.model.config.model_type}")


def split_held_out(count: int, cfg: DraftTrainConfig) -> tuple[list[int], list[int]]:
    """(held-out, training) sample indices: a seeded shuffle, ``eval_fraction`` held out (at least one
    when there are two samples or more)."""
    order = list(range(count))
    random.Random(cfg.seed).shuffle(order)
    n_eval = max(1, int(count * cfg.eval_fraction)) if count > 1 else 0
    return order[:n_eval], order[n_eval:]


def fresh_draft(target: TargetAdapter, data: DataShards, train_ids: list[int], info: dict,
                cfg: DraftTrainConfig) -> Draft:
    """A new draft for ``target``: its vocabulary from the training responses, its weights from ``cfg.seed``."""
    draft_vocab = None
    if cfg.draft_vocab_size and cfg.draft_vocab_size < target.vocab_size:
        stops = default_eos_ids(target.model)
        draft_vocab = build_draft_vocab((data[i] for i in train_ids), cfg.draft_vocab_size, target.vocab_size, stops)
    torch.manual_seed(cfg.seed)
    dcfg = draft_config_for(target, cfg, info["settings"]["ivsb_layer"], info["settings"].get("aux_layers"))
    return Draft.from_target(target, dcfg, draft_vocab, seed=cfg.seed).float().cpu()


def draft_and_optimizer(target: TargetAdapter, data: DataShards, train_ids: list[int], info: dict,
                        cfg: DraftTrainConfig, out_dir: Path, resume: bool, log: Callable[[str], None]):
    """(draft in training mode, its optimizer, the step to start from): fresh, or with ``resume``
    the checkpoint's (when there is one)."""
    resuming = resume and has_checkpoint(out_dir)
    if resume and not resuming:
        log(f"no checkpoint in {checkpoint_path(out_dir)}: starting from step 0")
    if resuming:
        draft = load_draft(checkpoint_path(out_dir)).float()
        draft.check_target(target)
    else:
        draft = fresh_draft(target, data, train_ids, info, cfg)
    draft.train()
    optimizer = torch.optim.AdamW([p for p in draft.parameters() if p.requires_grad], lr=cfg.lr, weight_decay=0.0)
    start_step = 0
    if resuming:
        state = torch.load(checkpoint_path(out_dir) / "state.pt")
        optimizer.load_state_dict(state["optimizer"])
        start_step = state["step"]
        log(f"resuming from step {start_step}")
    return draft, optimizer, start_step


class TrainingRun:
    """A training run once ``accelerate`` has prepared the draft and its optimizer: the loop over
    epochs and steps, held-out evaluation, checkpoints, and the stop on a signal."""

    def __init__(self, accelerator, draft, optimizer, data: DataShards, embed_weight: torch.Tensor,
                 cfg: DraftTrainConfig, out_dir: Path, log: Callable[[str], None]):
        self.accelerator, self.draft, self.optimizer = accelerator, draft, optimizer
        self.core: Draft = accelerator.unwrap_model(draft)
        self.params = [p for p in self.core.parameters() if p.requires_grad]
        self.data, self.embed_weight, self.cfg, self.out_dir, self.log = data, embed_weight, cfg, out_dir, log
        self.running: float | None = None
        self.agree: list[float] | None = None
        self.started = time.time()

    def train(self, train_ids: list[int], eval_ids: list[int], start_step: int, progress: bool) -> int:
        """Every epoch over this process's share of ``train_ids``; returns the steps taken (resumed ones
        included). On SIGINT / SIGTERM: a checkpoint, then :class:`TrainingInterrupted`."""
        acc = self.accelerator
        mine = train_ids[acc.process_index :: acc.num_processes]
        total = self.cfg.epochs * len(mine)
        bar = progress_bar(total, "train draft", "step", initial=start_step,
                           enabled=progress and acc.is_main_process)
        if start_step and hasattr(acc, "step"):
            acc.step = start_step  # gradient accumulation keeps its boundaries across a resume
        self.started = time.time()
        with stop_on_signals() as caught:
            try:
                step = self._epochs(mine, eval_ids, start_step, total, bar, caught)
            except StopRequested as stop:
                bar.close()
                raise TrainingInterrupted(stop.step, total, self._checkpoint_at_stop(stop.step, start_step),
                                          caught[0]) from None
        bar.close()
        return step

    def _epochs(self, mine, eval_ids, start_step, total, bar, caught) -> int:
        step = 0
        for epoch in range(self.cfg.epochs):
            epoch_order = mine[:]
            random.Random(self.cfg.seed + epoch).shuffle(epoch_order)
            for index in epoch_order:
                if should_stop(caught, self.accelerator):
                    raise StopRequested(step)
                if step >= start_step:
                    self._step(index, step, total, bar)
                    self._after_step(step + 1, eval_ids)
                step += 1
        if should_stop(caught, self.accelerator):  # a signal during the last step
            raise StopRequested(step)
        return step

    def _step(self, index: int, step: int, total: int, bar) -> None:
        """One sample: the learning rate for ``step``, forward, backward, and (at accumulation
        boundaries) the clipped update; the running loss and agreement on the bar."""
        acc, cfg = self.accelerator, self.cfg
        for group in self.optimizer.param_groups:
            group["lr"] = cfg.lr * warmup_cosine(step, total, cfg.warmup)
        with acc.accumulate(self.draft):
            with acc.autocast():
                loss, agree, _ = sample_loss(self.core, self.data[index], self.embed_weight, cfg)
            acc.backward(loss)
            if acc.sync_gradients:
                acc.clip_grad_norm_(self.params, 1.0)
            self.optimizer.step()
            self.optimizer.zero_grad()
        self.running = loss.item() if self.running is None else 0.98 * self.running + 0.02 * loss.item()
        self.agree = agree if self.agree is None else [0.98 * a + 0.02 * b for a, b in zip(self.agree, agree)]
        bar.update(1)
        bar.set_postfix(loss=f"{self.running:.3f}", agree="/".join(f"{a:.2f}" for a in self.agree))

    def _after_step(self, step: int, eval_ids: list[int]) -> None:
        """Held-out agreement every ``eval_every`` steps, a checkpoint every ``checkpoint_every`` (main process)."""
        cfg = self.cfg
        if not self.accelerator.is_main_process:
            return
        if cfg.eval_every and step % cfg.eval_every == 0 and eval_ids:
            held = evaluate_agreement(self.core, [self.data[i] for i in eval_ids], self.embed_weight, cfg)
            self.log(f"step {step}: held-out agreement per level {[round(a, 3) for a in held]}")
        if cfg.checkpoint_every and step % cfg.checkpoint_every == 0:
            save_checkpoint(self.core, self.optimizer, step, self.out_dir)

    def _checkpoint_at_stop(self, step: int, start_step: int) -> Path | None:
        if self.accelerator.is_main_process and step > start_step:
            return save_checkpoint(self.core, self.optimizer, step, self.out_dir)
        return checkpoint_path(self.out_dir) if has_checkpoint(self.out_dir) else None

    def save(self, data_dir, info: dict, train_ids: list[int], eval_ids: list[int], steps: int) -> None:
        """The trained draft and ``training.json`` (its settings, data and held-out agreement) into ``out_dir``."""
        held = evaluate_agreement(self.core, [self.data[i] for i in eval_ids], self.embed_weight,
                                  self.cfg) if eval_ids else []
        save_draft(self.core, self.out_dir)
        (self.out_dir / "training.json").write_text(json.dumps({
            "settings": asdict(self.cfg), "data": str(data_dir), "data_settings": info["settings"],
            "samples": len(train_ids), "held_out": len(eval_ids), "steps": steps,
            "held_out_agreement": held, "train_time_s": round(time.time() - self.started, 1),
        }, indent=2) + "\n")
        self.log(f"saved draft to {self.out_dir}; held-out agreement per level {[round(a, 3) for a in held]}")


def train_draft(model, data_dir: str | Path, out_dir: str | Path, cfg: DraftTrainConfig | None = None,
                resume: bool = False, progress: bool = True, log: Callable[[str], None] = print) -> Draft:
    """Train a draft for ``model`` (the target) on ``data_dir``; save it to ``out_dir``."""
    from accelerate import Accelerator

    cfg = cfg or DraftTrainConfig()
    out_dir = Path(out_dir)
    info = data_info(data_dir)
    target = wrap_target(model)
    check_data_target(info, target, data_dir)
    data = DataShards(data_dir)
    eval_ids, train_ids = split_held_out(len(data), cfg)
    missing = missing_for_mode(data[train_ids[0]], cfg.visual_mode, cfg.ivsb)
    if missing:
        raise InvalidInputError(f"the data lacks {missing} needed by a {cfg.visual_mode} draft; "
                                "regenerate it with `sparrow datagen --visual full`")
    accelerator = Accelerator(mixed_precision=cfg.mixed_precision, gradient_accumulation_steps=cfg.grad_accum,
                              cpu=not torch.cuda.is_available())
    draft, optimizer, start_step = draft_and_optimizer(target, data, train_ids, info, cfg, out_dir, resume, log)
    draft, optimizer = accelerator.prepare(draft, optimizer)
    embed_weight = target.model.get_input_embeddings().weight.detach().float().to(accelerator.device)
    run = TrainingRun(accelerator, draft, optimizer, data, embed_weight, cfg, out_dir, log)
    steps = run.train(train_ids, eval_ids, start_step, progress)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        run.save(data_dir, info, train_ids, eval_ids, steps)
    return run.core.eval()
