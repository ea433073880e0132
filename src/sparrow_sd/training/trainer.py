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
:class:`TrainingInterrupted`, which says how to resume.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import safe_open

from ..draft import DraftConfig, SparrowDraft, build_draft_context, load_draft, save_draft
from ..errors import InvalidInputError, RunInterrupted
from ..targets import wrap_target
from .datagen import check_data_shards, data_info, shard_ids
from .schedule import warmup_cosine
from .records import missing_for_mode, prefill_from_record, record_glimpse
from .unroll import unroll


@dataclass(frozen=True)
class DraftTrainConfig:
    """A draft-training run (written next to the trained draft)."""

    visual_mode: str = "none"
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
    grad_accum: int = 4
    mixed_precision: str = "no"  # accelerate's: no, bf16, fp16
    eval_fraction: float = 0.05
    eval_every: int = 200
    checkpoint_every: int = 500
    seed: int = 0


class TrainingInterrupted(RunInterrupted):
    """Training stopped on a signal after writing a checkpoint at ``step`` into ``checkpoint``."""

    def __init__(self, step: int, total: int, checkpoint: Path | None, signum: int):
        where = f"checkpoint saved to {checkpoint}" if checkpoint else "no checkpoint written"
        super().__init__(f"training interrupted ({signal.Signals(signum).name}) at step {step} of {total}; {where}; "
                         "resume with the same command plus --resume", exit_code=128 + signum)
        self.step, self.total, self.checkpoint, self.signum = step, total, checkpoint, signum


@contextlib.contextmanager
def _stop_on_signals():
    """While training: SIGINT and SIGTERM set a flag (read between steps) instead of killing the run.

    A second Ctrl-C while the checkpoint is written is honoured the usual way
    (KeyboardInterrupt). Only the main thread can install handlers; elsewhere
    the signals keep their handlers.
    """
    caught: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield caught
        return

    def handler(signum, frame):
        if caught and signum == signal.SIGINT:
            raise KeyboardInterrupt
        caught.append(signum)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield caught
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def checkpoint_path(out_dir: str | Path) -> Path:
    """Where ``train_draft`` keeps the resumable checkpoint of ``out_dir``."""
    return Path(out_dir) / "checkpoint"


def has_checkpoint(out_dir: str | Path) -> bool:
    return (checkpoint_path(out_dir) / "state.pt").is_file()


class ShardIndex:
    """Lazy access to the records of a datagen folder (states stay on disk until used)."""

    def __init__(self, data_dir: str | Path):
        self.entries: list[tuple[Path, str]] = []
        for path in check_data_shards(data_dir):  # names a damaged shard instead of failing mid-training
            self.entries += [(path, i) for i in shard_ids(path)]

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        path, sample_id = self.entries[index]
        prefix = f"{sample_id}/"
        with safe_open(str(path), framework="pt") as handle:
            return {n[len(prefix):]: handle.get_tensor(n) for n in handle.keys() if n.startswith(prefix)}


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


def sample_loss(draft: SparrowDraft, record: dict[str, torch.Tensor], embed_weight: torch.Tensor,
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
    levels = unroll(draft, context.embeds, context.hidden, cfg.mtp_steps)
    loss = torch.zeros((), dtype=torch.float32, device=ids.device)
    agree = []
    norm = sum(cfg.step_decay**k for k in range(cfg.mtp_steps))
    for k, level in enumerate(levels):
        valid = level.valid[where]
        if not valid.any():
            agree.append(0.0)
            continue
        logp = F.log_softmax(level.logits[where].float(), dim=-1)
        ce = -(target_logp.exp() * logp).sum(-1)
        loss = loss + (cfg.step_decay**k / norm) * ce[valid].mean()
        guess = draft.to_target_ids(level.logits[where].argmax(-1))
        agree.append(float((guess == truth)[valid].float().mean()))
    if cfg.hidden_weight and dcfg.architecture == "sparrow":  # eagle3 feeds back a pre-norm state
        loss = loss + cfg.hidden_weight * F.smooth_l1_loss(levels[0].hidden[where].float(), target_state.float())
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


def train_draft(model, data_dir: str | Path, out_dir: str | Path, cfg: DraftTrainConfig | None = None,
                resume: bool = False, progress: bool = True, log: Callable[[str], None] = print) -> SparrowDraft:
    """Train a draft for ``model`` (the target) on ``data_dir``; save it to ``out_dir``."""
    from accelerate import Accelerator
    from tqdm.auto import tqdm

    cfg = cfg or DraftTrainConfig()
    out_dir = Path(out_dir)
    info = data_info(data_dir)
    target = wrap_target(model)
    if info["target_model_type"] != target.model.config.model_type or info["hidden_size"] != target.hidden_size:
        raise InvalidInputError(f"{data_dir} was generated by a {info['target_model_type']} target of width "
                                f"{info['hidden_size']}, not this {target.model.config.model_type}")
    ivsb_layer = info["settings"]["ivsb_layer"]
    data = ShardIndex(data_dir)
    order = list(range(len(data)))
    random.Random(cfg.seed).shuffle(order)
    n_eval = max(1, int(len(order) * cfg.eval_fraction)) if len(order) > 1 else 0
    eval_ids, train_ids = order[:n_eval], order[n_eval:]
    first = data[train_ids[0]]
    missing = missing_for_mode(first, cfg.visual_mode, cfg.ivsb)
    if missing:
        raise InvalidInputError(f"the data lacks {missing} needed by a {cfg.visual_mode} draft; "
                                "regenerate it with `sparrow datagen --visual full`")

    accelerator = Accelerator(mixed_precision=cfg.mixed_precision, gradient_accumulation_steps=cfg.grad_accum,
                              cpu=not torch.cuda.is_available())
    embed_weight = target.model.get_input_embeddings().weight.detach().float().cpu()
    if resume and not has_checkpoint(out_dir):
        log(f"no checkpoint in {checkpoint_path(out_dir)}: starting from step 0")
    if resume and has_checkpoint(out_dir):
        draft = load_draft(checkpoint_path(out_dir)).float()
        draft.check_target(target)
    else:
        draft_vocab = None
        if cfg.draft_vocab_size and cfg.draft_vocab_size < target.vocab_size:
            stops = {int(t) for t in _stop_ids(model)}
            draft_vocab = build_draft_vocab((data[i] for i in train_ids), cfg.draft_vocab_size,
                                            target.vocab_size, stops)
        torch.manual_seed(cfg.seed)
        dcfg = draft_config_for(target, cfg, ivsb_layer, info["settings"].get("aux_layers"))
        draft = SparrowDraft.from_target(target, dcfg, draft_vocab, seed=cfg.seed).float().cpu()
    draft.train()
    params = [p for p in draft.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    start_step = 0
    if resume and has_checkpoint(out_dir):
        state = torch.load(checkpoint_path(out_dir) / "state.pt")
        optimizer.load_state_dict(state["optimizer"])
        start_step = state["step"]
        log(f"resuming from step {start_step}")
    draft, optimizer = accelerator.prepare(draft, optimizer)
    core = accelerator.unwrap_model(draft)
    embed_weight = embed_weight.to(accelerator.device)
    mine = train_ids[accelerator.process_index :: accelerator.num_processes]
    total = cfg.epochs * len(mine)
    bar = tqdm(total=total, initial=start_step, desc="train draft",  # disable=None: shown on a terminal only
               disable=None if progress and accelerator.is_main_process else True)
    if start_step and hasattr(accelerator, "step"):
        accelerator.step = start_step  # gradient accumulation keeps its boundaries across a resume
    running, agree_avg, started = None, None, time.time()
    step = 0
    with _stop_on_signals() as caught:
        try:
            for epoch in range(cfg.epochs):
                epoch_order = mine[:]
                random.Random(cfg.seed + epoch).shuffle(epoch_order)
                for index in epoch_order:
                    if _should_stop(caught, accelerator):
                        raise _Stop
                    if step < start_step:
                        step += 1
                        continue
                    for group in optimizer.param_groups:
                        group["lr"] = cfg.lr * warmup_cosine(step, total, cfg.warmup)
                    with accelerator.accumulate(draft):
                        with accelerator.autocast():
                            loss, agree, _ = sample_loss(core, data[index], embed_weight, cfg)
                        accelerator.backward(loss)
                        if accelerator.sync_gradients:
                            accelerator.clip_grad_norm_(params, 1.0)
                        optimizer.step()
                        optimizer.zero_grad()
                    running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
                    agree_avg = agree if agree_avg is None else [0.98 * a + 0.02 * b for a, b in zip(agree_avg, agree)]
                    step += 1
                    bar.update(1)
                    bar.set_postfix(loss=f"{running:.3f}", agree="/".join(f"{a:.2f}" for a in agree_avg))
                    if cfg.eval_every and step % cfg.eval_every == 0 and eval_ids and accelerator.is_main_process:
                        held = evaluate_agreement(core, [data[i] for i in eval_ids], embed_weight, cfg)
                        log(f"step {step}: held-out agreement per level {[round(a, 3) for a in held]}")
                    if cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and accelerator.is_main_process:
                        _checkpoint(core, optimizer, step, out_dir)
            if _should_stop(caught, accelerator):  # a signal during the last step
                raise _Stop
        except _Stop:
            bar.close()
            saved = None
            if accelerator.is_main_process and step > start_step:
                saved = _checkpoint(core, optimizer, step, out_dir)
            elif has_checkpoint(out_dir):
                saved = checkpoint_path(out_dir)
            raise TrainingInterrupted(step, total, saved, caught[0]) from None
    bar.close()
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        held = evaluate_agreement(core, [data[i] for i in eval_ids], embed_weight, cfg) if eval_ids else []
        save_draft(core, out_dir)
        (out_dir / "training.json").write_text(json.dumps({
            "settings": asdict(cfg), "data": str(data_dir), "data_settings": info["settings"],
            "samples": len(train_ids), "held_out": len(eval_ids), "steps": step,
            "held_out_agreement": held, "train_time_s": round(time.time() - started, 1),
        }, indent=2) + "\n")
        log(f"saved draft to {out_dir}; held-out agreement per level {[round(a, 3) for a in held]}")
    return core.eval()


def _should_stop(caught: list[int], accelerator) -> bool:
    """Whether a signal arrived; under DDP every process must agree, or one would wait forever in
    an all-reduce the others never join (one small collective per step, only with several processes)."""
    if accelerator.num_processes == 1:
        return bool(caught)
    flag = torch.tensor([len(caught)], device=accelerator.device)
    stop = bool(accelerator.reduce(flag, reduction="max").item())
    if stop and not caught:
        caught.append(signal.SIGTERM)  # stopped by another process's signal
    return stop


class _Stop(Exception):
    """Raised inside the training loop when a signal asked it to stop."""


def _checkpoint(draft, optimizer, step: int, out_dir: Path) -> Path:
    """Write the checkpoint beside the old one, then swap it in: an interrupted write never
    destroys the previous checkpoint."""
    path = checkpoint_path(out_dir)
    fresh = path.with_name(path.name + ".writing")
    shutil.rmtree(fresh, ignore_errors=True)
    save_draft(draft, fresh)
    torch.save({"optimizer": optimizer.state_dict(), "step": step}, fresh / "state.pt")
    old = path.with_name(path.name + ".old")
    if path.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(path, old)
    os.replace(fresh, path)
    shutil.rmtree(old, ignore_errors=True)
    return path


def _stop_ids(model) -> list[int]:
    from ..generate import eos_ids

    return sorted(eos_ids(model))
