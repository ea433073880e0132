"""Does the testbed's language model read the video? The probes behind the testbed recipe.

``check CKPT``: a training checkpoint (``resume.pt`` of ``sparrow testbed build``) is
scored teacher-forced on held-out 6-frame clips, per question kind, with the real
video, a blank video and another clip's video. Equal figures mean the answers
come from the language prior, not from the video.

``ideal``: the vision tower is replaced by the ideal one (every visual token is
exactly the word-embedding mixture of what its cell shows: colour + shape + size,
the alignment target) and only the LoRA trains, on QA, for ``--steps`` steps. This
separates "the vision features are poor" from "the language model does not learn
to read visual tokens in this many steps". ``--positions sequential`` replaces
M-RoPE's (t, h, w) positions with plain 1-D ones (all three rows equal), to see
whether SmolLM2, trained with 1-D RoPE, reads 1-D-positioned visual tokens sooner.

``text``: no video at all; the first turn carries the clip's frame-by-frame object
inventory in words (every object of every frame, with colour, size, shape and
place; or, with ``--context description``, its event-by-event description), and the LoRA (or, with ``--full``, every decoder layer) trains on QA. The
ceiling of any vision tower: how fast the language model learns these questions
when the video is handed to it as text.

``captions``: like ``ideal``, but every visual token is the word embedding of its
temporal patch's event caption (objects, then the events that show in the patch), laid
out in raster order with filler after it: can the LM read *stated* events from video
positions?

``writer``: vision only (the LM never runs): can the vision tower learn to write each
patch's caption into its tokens (clips made with ``change_patch`` so every change shows
inside one patch)?

    .venv/bin/python benchmarks/testbed_reading.py check runs/testbed/testbed-work/resume.pt
    .venv/bin/python benchmarks/testbed_reading.py ideal --steps 150 --lr 2e-3 --positions sequential
    .venv/bin/python benchmarks/testbed_reading.py --clips 30 text --steps 400 --lr 2e-3 [--context description]
    .venv/bin/python benchmarks/testbed_reading.py --clips 15 captions --steps 300 --frames 4
    .venv/bin/python benchmarks/testbed_reading.py --clips 10 writer --steps 1200
"""

import argparse
import time
from collections import defaultdict

import numpy as np
import torch
import torch.nn.functional as F

from sparrow_sd.precision import fast_autocast
from sparrow_sd.synth import make_clip
from sparrow_sd.synth.describe import _Narrator
from sparrow_sd.testbed import load_testbed
from sparrow_sd.testbed.lora import DEFAULT_TARGETS, MLP_TARGETS, LoRA
from sparrow_sd.testbed.training import (
    _answer_forward,
    align_targets,
    answer_loss,
    answer_spans,
    inventory,
    probe_targets,
    reading_order,
    sample_clip,
    where,
    word_tables,
)

BLANK = np.array([28, 28, 32], np.uint8)  # SynthVideo's background colour


class _Swapped:
    """A clip whose frames are replaced (the questions stay): the blank and other-clip controls."""

    def __init__(self, clip, frames):
        self.frames, self.qa, self.description, self.scene = frames, clip.qa, clip.description, clip.scene


def held_out(n: int):
    return [make_clip(500_000 + i, num_frames=6, height=144, width=144, num_events=3) for i in range(n + 1)]


def score(model, processor, clips, condition: str, before_forward=lambda source: None) -> dict[str, list[bool]]:
    """Exact-match correctness of every answer, by question kind, under one video condition."""
    out = defaultdict(list)
    with torch.no_grad():
        for i, clip in enumerate(clips[:-1]):
            source = clip if condition == "real" else clips[i + 1]
            frames = source.frames if condition != "blank" else np.zeros_like(clip.frames) + BLANK
            before_forward(source if condition != "blank" else None)
            rng = np.random.default_rng(0)
            logits, targets, _, labels = _answer_forward(model, processor, _Swapped(clip, frames), rng, 0.0)
            order = np.random.default_rng(0).permutation(len(clip.qa))  # the order conversation() drew
            correct = (logits.argmax(-1) == targets).tolist()
            offset = 0
            for (start, end), k in zip(answer_spans(labels[1:]), order):
                ok = all(correct[offset : offset + end - start])
                out[clip.qa[k].kind].append(ok)
                out["ALL"].append(ok)
                offset += end - start
    return out


def check(args) -> None:
    model, processor = load_testbed(None)
    state = torch.load(args.checkpoint, weights_only=False)
    print(f"checkpoint: stage {state['stage']}, step {state['step']}")
    model.model.visual.load_state_dict(state["modules"]["visual"])
    if "lora" in state["modules"]:
        lora = LoRA(model, rank=state["config"].get("lora_rank", 8), seed=0)
        lora.load_state_dict(state["modules"]["lora"])
        lora.attach()
    clips = held_out(args.clips)
    results = {c: score(model, processor, clips, c) for c in ("real", "blank", "other")}
    for kind in sorted(results["real"]):
        cells = " | ".join(f"{c} {np.mean(results[c][kind]):.2f}" for c in results)
        print(f"{kind:22s} {cells}  (n={len(results['real'][kind])})")


def ideal(args) -> None:
    model, processor = load_testbed(None)
    model.requires_grad_(False)
    tables = word_tables(model, processor)
    current = {}

    def ideal_features(module, inputs, output):
        targets = current["targets"]
        output.pooler_output = align_targets(targets, tables).to(output.pooler_output.dtype)
        return output

    model.model.visual.register_forward_hook(ideal_features)
    if args.positions == "sequential":
        forward = model.model.forward

        def sequential(*a, **kw):
            length = kw["input_ids"].shape[1]
            kw["position_ids"] = torch.arange(length)[None, None].expand(3, 1, length)
            return forward(*a, **kw)

        model.model.forward = sequential

    def use(source):
        targets = probe_targets(source if source is not None else blank_source, processor)
        if source is None:  # every cell background
            targets = tuple(torch.nn.functional.one_hot(torch.full((t.shape[0],), t.shape[1] - 1), t.shape[1]).float()
                            for t in targets)
        current["targets"] = targets

    clips = held_out(args.clips)
    blank_source = clips[0]
    _train_lora_on_swapped_features(model, processor, clips, use, args)


def _train_lora_on_swapped_features(model, processor, clips, use, args) -> None:
    """Train only a LoRA on QA while ``use(clip)`` decides what the visual tokens are."""
    targets = DEFAULT_TARGETS + (MLP_TARGETS if args.mlp else ())
    lora = LoRA(model, rank=args.rank, targets=targets, seed=0).attach()
    opt = torch.optim.AdamW(lora.parameters(), lr=args.lr, weight_decay=0.0)
    rng = np.random.default_rng(1)
    started = time.time()
    for step in range(args.steps + 1):
        if step % args.eval_every == 0:
            real = np.mean(score(model, processor, clips, "real", use)["ALL"])
            other = np.mean(score(model, processor, clips, "other", use)["ALL"])
            print(f"step {step}: held-out accuracy real {real:.3f} other-clip {other:.3f}", flush=True)
        if step == args.steps:
            break
        clip = sample_clip(3_000_000 + step, args.frames, 4, processor, rng)
        use(clip)
        logits, targets, _, labels = _answer_forward(model, processor, clip, rng, 0.0)
        loss = answer_loss(logits, targets, labels, "turn")
        opt.zero_grad()
        loss.backward()
        opt.step()
    print(f"{(time.time() - started) / max(1, args.steps):.2f} s/step")


def pair_captions(scene, frames_per_token: int) -> list[str]:
    """What an event-aware video encoder could say about each temporal patch, in words:
    the opening objects on the first, each event on the patch where it shows, and the
    closing objects on the last."""
    narrator = _Narrator(scene, np.random.default_rng(scene.seed))
    count = -(-scene.num_frames // frames_per_token)
    lines = [[] for _ in range(count)]
    lines[0].append("At the start: " + narrator.listing(0, where_p=1.0)[0] + ".")
    for event in scene.events:
        lines[min(count - 1, event.frame // frames_per_token)].append(narrator.event_clause(event))
    lines[-1].append("At the end: " + narrator.listing(scene.num_frames - 1, where_p=1.0)[0] + ".")
    return [" ".join(parts) for parts in lines]


def _patch_layout(processor) -> tuple[int, int]:
    """Visual tokens per temporal patch, and the token that fills a patch after its caption."""
    tps = processor.config.temporal_patch_size
    return processor.num_video_tokens(tps), processor._encode(" ")[-1]


def captions(args) -> None:
    """Visual tokens that are the word embeddings of per-patch event captions (filler elsewhere)."""
    model, processor = load_testbed(None)
    model.requires_grad_(False)
    embed = model.get_input_embeddings().weight.detach()
    cfg = processor.config
    per_patch, filler = _patch_layout(processor)
    current = {}

    def caption_features(module, inputs, output):
        output.pooler_output = current["features"].to(output.pooler_output.dtype)
        return output

    model.model.visual.register_forward_hook(caption_features)

    def use(source):
        scene = (source or clips[0]).scene
        rows = []
        for text in pair_captions(scene, cfg.temporal_patch_size):
            ids = processor._encode(text)[:per_patch] if source is not None else []
            rows.append(ids + [filler] * (per_patch - len(ids)))
        current["features"] = embed[torch.tensor(rows).flatten()]

    clips = held_out(args.clips)
    _train_lora_on_swapped_features(model, processor, clips, use, args)


_INSTANT = ("appear", "disappear", "colour_change")


def patch_caption(scene, start: int, end: int) -> str:
    """What frames [start, end) show, in fixed words that an encoder seeing only those frames
    can write: the objects on the first frame (top to bottom, left to right), then every
    change that happens between two of its frames."""
    def name(i, t, colour=None):
        o = scene.objects[i]
        return f"{o.size} {colour or scene.colour_name(i, t)} {o.shape}"

    parts = [", ".join(f"{name(i, start)} {where(scene, i, start)}" for i in reading_order(scene, start)) or "nothing"]
    for e in scene.events:
        if e.kind in _INSTANT and start < e.frame < end:
            i = e.objects[0]
            if e.kind == "appear":
                parts.append(f"{name(i, 0, e.colour_to)} appears")
            elif e.kind == "disappear":
                parts.append(f"{name(i, 0, e.colour_from)} disappears")
            else:
                parts.append(f"{name(i, 0, e.colour_from)} turns {e.colour_to}")
        elif e.kind not in _INSTANT and max(e.frame, start + 1) <= min(e.end_frame, end - 1):
            t = max(e.frame, start + 1) - 1  # the motion's first frame in this patch
            if e.kind == "move":
                parts.append(f"{name(e.objects[0], t)} moves {e.direction}")
            else:
                a, b = e.objects
                parts.append(f"{name(a, t)} and {name(b, t)} move together")
    return ". ".join(parts) + "."


def writer(args) -> None:
    """Can the vision tower write each temporal patch's caption into its tokens?

    Vision-only training (the language model never runs): the merger output of
    every visual token is scored against the language model's embeddings of the
    caption vocabulary, and must name, in raster order, the tokens of its patch's
    caption (filler after it). Clips use ``change_patch`` so that every change
    shows inside one patch.
    """
    model, processor = load_testbed(None)
    model.requires_grad_(False)
    visual = model.model.visual
    visual.requires_grad_(True)
    cfg = processor.config
    tps = cfg.temporal_patch_size
    per_patch, filler = _patch_layout(processor)
    height, width = cfg.frame_size

    def clip_of(seed, frames):
        return make_clip(seed, num_frames=frames, height=height, width=width,
                         num_events=min(3, frames - 1), change_patch=tps)

    def caption_ids(clip):
        rows = []
        for start in range(0, clip.scene.num_frames, tps):
            ids = processor._encode(patch_caption(clip.scene, start, min(start + tps, clip.scene.num_frames)))
            rows.append(ids[:per_patch] + [filler] * (per_patch - min(len(ids), per_patch)))
        return torch.tensor(rows).flatten()

    vocab = sorted({filler} | {int(i) for seed in range(400) for i in caption_ids(clip_of(9_000_000 + seed, 6))})
    index = torch.full((model.get_input_embeddings().weight.shape[0],), -1, dtype=torch.long)
    index[torch.tensor(vocab)] = torch.arange(len(vocab))
    table = model.get_input_embeddings().weight.detach()[vocab]
    print(f"caption vocabulary: {len(vocab)} tokens; {per_patch} visual tokens per patch", flush=True)
    opt = torch.optim.AdamW(visual.parameters(), lr=args.lr, weight_decay=0.01)
    held = [clip_of(500_000 + i, 6) for i in range(args.clips)]

    def scores(out):
        return out @ table.t() * args.sharpness

    def evaluate(step):
        patches = captions_right = content = content_right = 0
        with torch.no_grad():
            for clip in held:
                pixels, grid = processor.preprocess_video(clip.frames)
                target = index[caption_ids(clip)]
                guess = scores(visual(pixels, grid_thw=grid).pooler_output).argmax(-1)
                right = guess == target
                words = target != index[filler]
                content += words.sum().item()
                content_right += (right & words).sum().item()
                captions_right += right.view(-1, per_patch).all(-1).sum().item()
                patches += len(target) // per_patch
        print(f"step {step}: caption tokens right {content_right / content:.3f}, whole patch captions right "
              f"{captions_right / patches:.3f} ({patches} patches)", flush=True)

    rng = np.random.default_rng(1)
    started = time.time()
    for step in range(args.steps + 1):
        if step % args.eval_every == 0:
            evaluate(step)
        if step == args.steps:
            break
        for group in opt.param_groups:
            group["lr"] = args.lr * min(1.0, (step + 1) / 50)
        clip = clip_of(4_000_000 + step, int(rng.choice((2, 4, 6))))
        pixels, grid = processor.preprocess_video(clip.frames)
        target = index[caption_ids(clip)]
        per_token = F.cross_entropy(scores(visual(pixels, grid_thw=grid).pooler_output), target,
                                    reduction="none")
        words = target != index[filler]
        loss = per_token[words].mean() + per_token[~words].mean()  # the caption counts as much as the filler
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(visual.parameters(), 1.0)
        opt.step()
        if (step + 1) % 50 == 0:
            print(f"step {step + 1}: loss {loss.item():.3f} {(time.time() - started) / (step + 1):.2f} s/step",
                  flush=True)


def _text_context(clip, context: str) -> str:
    """The clip in words: its frame-by-frame object inventory, or its event-by-event description."""
    if context == "description":
        return "What happens in the video:\n" + clip.description
    return "The video, frame by frame:\n" + inventory(clip.scene, 1)


def _text_forward(model, processor, clip, rng, context="inventory"):
    """Logits and targets of a QA conversation whose first turn holds the clip as text."""
    encode = processor._encode
    context = _text_context(clip, context)
    ids, labels = [], []
    order = rng.permutation(len(clip.qa))
    for n, k in enumerate(order):
        question = f"{context}\n{clip.qa[k].question}" if n == 0 else clip.qa[k].question
        prompt = encode(f"<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n")
        reply, newline = encode(f"{clip.qa[k].answer}<|im_end|>"), encode("\n")
        ids += prompt + reply + newline
        labels += [-100] * len(prompt) + reply + [-100] * len(newline)
    input_ids, targets = torch.tensor([ids]), torch.tensor(labels[1:])
    where = torch.nonzero(targets != -100).squeeze(-1)
    with fast_autocast("cpu"):
        hidden = model.model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids)).last_hidden_state
        logits = model.lm_head(hidden[0, where]).float()
    return logits, targets[where], labels, order


def text(args) -> None:
    model, processor = load_testbed(None)
    model.requires_grad_(False)
    if args.full:
        params = list(model.model.language_model.layers.parameters())
        for p in params:
            p.requires_grad_(True)
    else:
        params = list(LoRA(model, rank=args.rank, seed=0).attach().parameters())
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0)
    clips = held_out(args.clips)[:-1]

    def evaluate(step):
        out = defaultdict(list)
        with torch.no_grad():
            for clip in clips:
                logits, targets, labels, order = _text_forward(model, processor, clip, np.random.default_rng(0),
                                                               args.context)
                correct, offset = (logits.argmax(-1) == targets).tolist(), 0
                for (start, end), k in zip(answer_spans(labels[1:]), order):
                    ok = all(correct[offset : offset + end - start])
                    offset += end - start
                    out[clip.qa[k].kind].append(ok)
                    out["ALL"].append(ok)
        print(f"step {step}: held-out accuracy {np.mean(out['ALL']):.3f} (n={len(out['ALL'])})", flush=True)
        return out

    rng, started = np.random.default_rng(1), time.time()
    for step in range(args.steps):
        if step % args.eval_every == 0:
            evaluate(step)
        clip = sample_clip(3_000_000 + step, args.frames, 4, processor, rng)
        logits, targets, labels, _ = _text_forward(model, processor, clip, rng, args.context)
        loss = answer_loss(logits, targets, labels, "turn")
        opt.zero_grad()
        loss.backward()
        opt.step()
    print(f"{(time.time() - started) / max(1, args.steps):.2f} s/step (evaluations included)")
    final = evaluate(args.steps)
    for kind in sorted(final):
        print(f"  {kind:22s} {np.mean(final[kind]):.2f} (n={len(final[kind])})")


def _training_flags(parser, steps: int, frames: int, eval_every: int) -> None:
    """The flags every training probe shares, with its own defaults."""
    parser.add_argument("--steps", type=int, default=steps)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--rank", type=int, default=8, help="LoRA rank")
    parser.add_argument("--frames", type=int, default=frames, help="frames of each training clip")
    parser.add_argument("--eval-every", type=int, default=eval_every)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--clips", type=int, default=6, help="held-out 6-frame clips scored")
    sub = parser.add_subparsers(dest="probe", required=True)
    c = sub.add_parser("check", help="real vs blank vs other-clip accuracy of a training checkpoint")
    c.add_argument("checkpoint")
    c.set_defaults(func=check)
    i = sub.add_parser("ideal", help="train only a LoRA on ideal (word-mixture) visual tokens")
    _training_flags(i, steps=150, frames=4, eval_every=75)
    i.add_argument("--mlp", action="store_true", help="adapt the MLP projections too")
    i.add_argument("--positions", choices=["mrope", "sequential"], default="mrope")
    i.set_defaults(func=ideal)
    cap = sub.add_parser("captions", help="train only a LoRA on visual tokens that are per-patch event captions")
    _training_flags(cap, steps=400, frames=6, eval_every=100)
    cap.add_argument("--mlp", action="store_true", help="adapt the MLP projections too")
    cap.set_defaults(func=captions)
    w = sub.add_parser("writer", help="vision only: can the vision tower write each patch's caption into its tokens")
    _training_flags(w, steps=1500, frames=6, eval_every=250)
    w.set_defaults(lr=1e-3)
    w.add_argument("--sharpness", type=float, default=4.0, help="scale of the embedding dot products")
    w.set_defaults(func=writer)
    t = sub.add_parser("text", help="no video: the clip's inventory as text; train LoRA (or --full) on QA")
    _training_flags(t, steps=400, frames=6, eval_every=100)
    t.add_argument("--full", action="store_true", help="train every decoder layer instead of a LoRA")
    t.add_argument("--context", choices=["inventory", "description"], default="inventory",
                   help="the clip as a frame-by-frame object inventory, or as its event-by-event description")
    t.set_defaults(func=text)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.func(args)


if __name__ == "__main__":
    main()
