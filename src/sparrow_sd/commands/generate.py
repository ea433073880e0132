"""``sparrow generate``: one video file, one question, streamed, with the decoding statistics.

Every input problem becomes a :class:`~sparrow_sd.errors.SparrowError` with
one line saying what is wrong and what to do: a missing, empty, corrupt or
non-video file and a video with no decodable frame (from
:func:`~sparrow_sd.video.read_video`), a video too long for the model's
positions at the chosen sampling (with how many frames would fit), a draft
trained for another target, an unknown model type. A video that decodes
short of what its container announces, or sampling that asks for more frames
than the video has, is a warning on stderr and in the report's ``warnings``;
the report also says how many frames decoded, how many were sampled and how
long the video is. With ``progress``, bars on stderr follow the decoding of
the video and the target's prefill (vision blocks, then decoder layers).
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import torch

from ..errors import ContextLengthError, InvalidInputError
from ..generate import GenerationResult, SpeculativeGenerator
from ..models import load_target
from ..proposers import DraftProposer, TreeConfig
from ..video import read_video
from ..targets import wrap_target
from .drafts import read_draft


@dataclass
class GenerateOptions:
    model: str
    video: str
    prompt: str
    draft: str | None = None
    num_frames: int | None = 16
    fps: float | None = None
    max_new_tokens: int = 256
    # next-token settings; None: the model's generation config's, as its own generate() reads them
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    repetition_penalty: float | None = None
    seed: int = 0
    dtype: str = "fp32"
    device: str = "cpu"
    tree: TreeConfig = TreeConfig()
    compare: bool = False  # also decode without the draft: speedup and identity in the same run
    json: bool = False
    language: str | None = None
    progress: bool = False  # bars on stderr for the video's decoding and the target's prefill


def positions_needed(model, inputs, max_new_tokens: int, tree_nodes: int) -> int:
    """Highest position id the prompt plus the new tokens (and one tree) will use, plus one.
    ``model``: the target or its adapter."""
    positions, _ = wrap_target(model).prompt_positions(inputs)
    return int(positions.max()) + 1 + max_new_tokens + tree_nodes


def check_context(model, make_inputs: Callable, question: str, frames: np.ndarray, inputs,
                  max_new_tokens: int, tree_nodes: int) -> None:
    """Refuse a prompt that runs past the model's positions, saying how many frames would fit.
    ``model``: the target or its adapter."""
    target = wrap_target(model)
    limit = getattr(target.text_config, "max_position_embeddings", None)
    if not limit:
        return
    need = positions_needed(target, inputs, max_new_tokens, tree_nodes)
    if need <= limit:
        return
    count = len(frames)
    half = max(1, count // 2)
    need_half = positions_needed(target, make_inputs(question, frames[:half]), max_new_tokens, tree_nodes)
    per_frame = (need - need_half) / max(1, count - half)
    fit = count - math.ceil((need - limit) / per_frame) if per_frame > 0 else 0
    advice = (f"sample at most {fit} frames (--num-frames {fit})" if fit >= 1 else
              "even one frame does not fit; shorten the prompt or --max-new-tokens")
    raise ContextLengthError(f"the video at {count} frames needs {need:,} positions with {max_new_tokens} new "
                             f"tokens, but the model has {limit:,}; {advice}")


def run_generate(opts: GenerateOptions, out=None, err=None) -> dict:
    """Decode and stream to ``out`` (default: standard output); returns the report (also printed as
    JSON with ``opts.json``). Warnings and progress go to ``err`` (default: standard error)."""
    out = out if out is not None else sys.stdout
    err = err if err is not None else sys.stderr
    if opts.compare and not opts.draft:
        raise InvalidInputError("--compare decodes with the draft and again without it: give --draft")
    with _bar(opts.progress, err, "decoding video", "frame") as bar:
        video = read_video(opts.video, num_frames=opts.num_frames, fps=opts.fps, progress=bar.follow)
    for warning in video.warnings:
        err.write(f"sparrow: warning: {warning}\n")
    err.flush()
    loaded = load_target(opts.model, dtype=opts.dtype, device=opts.device, language=opts.language)
    target = wrap_target(loaded.model)
    proposer = None
    if opts.draft:
        draft = read_draft(opts.draft, device=opts.device, dtype=loaded.model.dtype)
        draft.check_target(target)
        proposer = DraftProposer(draft, opts.tree)
    inputs = loaded.make_inputs(opts.prompt, video.frames)
    check_context(target, loaded.make_inputs, opts.prompt, video.frames, inputs, opts.max_new_tokens,
                  opts.tree.total_tokens if proposer else 0)

    emitted: list[int] = []
    shown = [""]
    prefill = _PrefillProgress(target, inputs, err) if opts.progress else None

    def stream(new_tokens: list[int]) -> None:
        if prefill is not None:
            prefill.close()
        emitted.extend(new_tokens)
        text = loaded.decode(emitted)
        if not opts.json:
            out.write(text[len(shown[0]):])
            out.flush()
        shown[0] = text

    settings = dict(temperature=opts.temperature, top_p=opts.top_p, top_k=opts.top_k, min_p=opts.min_p,
                    repetition_penalty=opts.repetition_penalty)
    generator = SpeculativeGenerator(target, proposer)
    sampling = generator.sampling(inputs["input_ids"].shape[-1], **settings)  # a bad setting fails before the prefill
    try:
        with generator.prefill(inputs, opts.max_new_tokens) as session:  # --compare's plain decode reuses it
            result = generator.decode(session, opts.max_new_tokens, sampling=sampling, seed=opts.seed,
                                      on_tokens=stream)
            plain = None
            if opts.compare and proposer is not None:
                plain = SpeculativeGenerator(target).decode(session, opts.max_new_tokens, sampling=sampling,
                                                            seed=opts.seed)
    finally:
        if prefill is not None:
            prefill.close()
    report = _report(opts, video, result, loaded.decode(result.tokens))
    if plain is not None:
        report["autoregressive_decode_s"] = plain.stats.decode_s
        report["decode_speedup"] = plain.stats.decode_s / result.stats.decode_s if result.stats.decode_s else None
        report["identical_to_autoregressive"] = plain.tokens == result.tokens if result.sampling.greedy else None
    if opts.json:
        out.write(json.dumps(report, indent=2) + "\n")
    else:
        out.write("\n\n" + _summary(report) + "\n")
    return report


class _NoBar:
    def follow(self, done: int, total: int | None) -> None:
        pass


class _Bar:
    """A tqdm bar on ``err`` that follows a (done, total) callback; a restarted count restarts the bar."""

    def __init__(self, err, desc: str, unit: str):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=None, desc=desc, unit=unit, file=err, mininterval=0.2)

    def follow(self, done: int, total: int | None) -> None:
        if done < self.bar.n or (total and self.bar.total != total):
            self.bar.reset(total=total)
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        self.bar.close()


@contextlib.contextmanager
def _bar(enabled: bool, err, desc: str, unit: str):
    if not enabled:
        yield _NoBar()
        return
    bar = _Bar(err, desc, unit)
    try:
        yield bar
    finally:
        bar.close()


def _largest_module_list(module) -> list:
    lists = [m for m in module.modules() if isinstance(m, torch.nn.ModuleList)] if module is not None else []
    return list(max(lists, key=len)) if lists else []


class _PrefillProgress:
    """A bar over the target's prefill: one tick per vision block, then per decoder layer (forward hooks,
    removed as soon as the first token arrives)."""

    def __init__(self, model, inputs, err):
        from tqdm.auto import tqdm

        target = wrap_target(model)  # the model or its adapter
        vision = getattr(target.base, "visual", None) or getattr(target.base, "vision_tower", None)
        blocks = _largest_module_list(vision) + list(getattr(target.language_model, "layers", []))
        tokens = int(inputs["input_ids"].shape[-1])
        self.bar = tqdm(total=len(blocks) or None, desc=f"prefill of {tokens:,} tokens", unit="layer", file=err,
                        mininterval=0.2)
        self.hooks = [block.register_forward_hook(self._tick) for block in blocks]
        self.closed = False

    def _tick(self, *_):
        if self.bar.total is None or self.bar.n < self.bar.total:
            self.bar.update(1)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for hook in self.hooks:
            hook.remove()
        self.bar.close()


def _report(opts: GenerateOptions, video, result: GenerationResult, text: str) -> dict:
    s = result.stats
    return {
        "text": text, "tokens": result.tokens, "new_tokens": len(result.tokens),
        "frames": int(len(video.frames)), **video.summary(),
        "visual_tokens": s.visual_tokens, "prompt_tokens": s.prompt_tokens,
        "draft": opts.draft, "tau": s.tau, "target_prefill_s": s.target_prefill_s,
        "draft_prefill_s": s.draft_prefill_s, "decode_s": s.decode_s, "total_s": s.total_s,
        "decode_tokens_per_s": s.decode_tokens_per_s, "temperature": result.sampling.temperature,
        "sampling": asdict(result.sampling),
    }


def _summary(r: dict) -> str:
    length = f", {r['video_duration_s']:.1f} s" if r.get("video_duration_s") is not None else ""
    parts = [f"{r['new_tokens']} tokens",
             f"{r['frames']} of {r['decoded_frames']} decoded frames{length} / {r['visual_tokens']:,} visual tokens",
             f"prefill {r['target_prefill_s']:.2f}s", f"decode {r['decode_tokens_per_s']:.1f} tok/s"]
    if r["draft"]:
        parts.append(f"tau {r['tau']:.2f}")
    if r.get("warnings"):
        parts.append(f"{len(r['warnings'])} warning(s) about the video: see stderr")
    if "decode_speedup" in r:
        parts.append(f"decode speedup {r['decode_speedup']:.2f}x vs autoregressive")
        if r["identical_to_autoregressive"] is not None:
            parts.append("output identical" if r["identical_to_autoregressive"] else "OUTPUT DIFFERS")
    return " | ".join(parts)


# --- the command line ---------------------------------------------------------------------------


def add_parser(sub, name: str, help: str) -> None:
    """``sparrow generate``: its flags, defaulting to :class:`GenerateOptions`'s."""
    import argparse

    from . import flags
    from .flags import NON_NEGATIVE, NON_NEGATIVE_FLOAT, POSITIVE, POSITIVE_FLOAT, PROBABILITY

    generate = sub.add_parser(
        name, help=help,
        description="Decodes a video file with PyAV (frames sampled by count or fps, never a frame twice), asks "
                    "the target the question and streams the answer; with --draft, speculative decoding "
                    "(lossless), with --compare also plain decoding in the same run for the speedup and an "
                    "identity check. --draft takes a `sparrow train` folder or an EAGLE-3 folder "
                    "(`sparrow export`, vLLM / SGLang format).",
    )
    flags.add_common_flags(generate)
    flags.add_target_flags(generate)
    flags.add_tree_flags(generate)
    generate.add_argument("--draft", default=None, help="draft folder (from `sparrow train`); none: plain decoding")
    generate.add_argument("--video", required=True, help="video file (mp4, mkv, webm, ...)")
    generate.add_argument("--prompt", required=True, help="the question or instruction")
    generate.add_argument("--num-frames", type=POSITIVE, default=GenerateOptions.num_frames,
                          help="frames sampled evenly over the video (at most the frames it has)")
    generate.add_argument("--fps", type=POSITIVE_FLOAT, default=None,
                          help="sample frames at this rate instead (at most each frame once)")
    generate.add_argument("--max-new-tokens", type=POSITIVE, default=GenerateOptions.max_new_tokens,
                          help="longest answer")
    generate.add_argument("--temperature", type=NON_NEGATIVE_FLOAT, default=None,
                          help="0: greedy, above 0: sample; unset, this and the next four come from the model's "
                               "generation config, as in its own generate()")
    generate.add_argument("--top-p", type=PROBABILITY, default=None, help="nucleus sampling mass")
    generate.add_argument("--top-k", type=NON_NEGATIVE, default=None, help="0: off")
    generate.add_argument("--min-p", type=PROBABILITY, default=None, help="drop tokens below this share of the top one")
    generate.add_argument("--repetition-penalty", type=POSITIVE_FLOAT, default=None, help="1: off")
    generate.add_argument("--seed", type=int, default=GenerateOptions.seed, help="sampling seed")
    generate.add_argument("--compare", action="store_true",
                          help="with --draft: also decode without the draft, report the speedup and check the "
                               "outputs are identical")
    generate.add_argument("--json", action="store_true", help="print one JSON report instead of text")
    generate.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                          help="progress bars on stderr for decoding the video and the target's prefill "
                               "(default: when stderr is a terminal)")
    generate.set_defaults(func=run)


def run(args) -> int:
    """``sparrow generate``: the flags checked (no model loaded yet), then :func:`run_generate`."""
    from . import flags

    if args.compare and not args.draft:
        raise InvalidInputError("--compare decodes with the draft and again without it, to measure the speedup "
                                "and check the outputs match: give --draft")
    if args.draft:
        from .drafts import draft_format

        draft_format(args.draft)
    flags.check_device(args)
    flags.set_threads(args.threads)
    run_generate(GenerateOptions(
        model=args.model, video=args.video, prompt=args.prompt, draft=args.draft,
        num_frames=None if args.fps is not None else args.num_frames, fps=args.fps,
        max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p, top_k=args.top_k,
        min_p=args.min_p, repetition_penalty=args.repetition_penalty, seed=args.seed, dtype=args.dtype,
        device=args.device, tree=flags.tree_config(args), compare=args.compare, json=args.json,
        language=args.language, progress=sys.stderr.isatty() if args.progress is None else args.progress))
    return 0
