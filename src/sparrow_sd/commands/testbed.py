"""``sparrow testbed build`` and ``sparrow testbed eval``: the testbed target's LoRA, trained and measured.

The recipe is :mod:`sparrow_sd.testbed.training` (``TrainConfig``, the base
stage, then ``LONG_STAGE``, the long-clip stage after it, ``EVENTS_STAGE`` and the optional
``LONGEST_STAGE``), the run is
:func:`sparrow_sd.testbed.build.build_testbed` and the evaluation
:mod:`sparrow_sd.testbed.evaluate`; every default here is theirs.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from ..errors import InvalidInputError
from . import flags
from .flags import NON_NEGATIVE, POSITIVE, POSITIVE_FLOAT, RESUMABLE

# --- the parsers --------------------------------------------------------------------------------


def add_parser(sub, name: str, help: str) -> None:
    testbed = sub.add_parser(name, help=help,
                             description="The testbed Video LLM that drafts are trained and benchmarked on.")
    testbed_sub = testbed.add_subparsers(dest="testbed_command", required=True)
    _add_build(testbed_sub)
    _add_eval(testbed_sub)


def _frames_and_tokens(recipe) -> tuple[str, str]:
    """``("5-40", "1k-8k")``: a training stage's clip lengths in frames and in visual tokens."""
    from ..testbed.config import TestbedConfig

    low, high = min(recipe.frames), max(recipe.frames)
    count = TestbedConfig().num_video_tokens
    return f"{low}-{high}", f"{round(count(low) / 1000)}k-{round(count(high) / 1000)}k"


def _add_build(testbed_sub) -> None:
    from ..testbed.training import EVENTS_STAGE, LONG_STAGE, LONGEST_STAGE, TrainConfig

    recipe = TrainConfig()
    base_frames, base_tokens = _frames_and_tokens(recipe)
    long_frames, long_tokens = _frames_and_tokens(LONG_STAGE)
    events_frames, events_tokens = _frames_and_tokens(EVENTS_STAGE)
    longest_frames, longest_tokens = _frames_and_tokens(LONGEST_STAGE)
    build = testbed_sub.add_parser(
        "build",
        help="train the description LoRA from a fixed seed, then evaluate",
        description="Reproduces the committed testbed weights: a LoRA on the upper layers of the language model "
                    f"trained to describe SynthVideo clips read through the scene reader, in stages, each "
                    f"continuing the one before: {base_frames} frames ({base_tokens} visual tokens), then "
                    f"--long-steps on {long_frames} frames ({long_tokens} tokens, and long blank videos), then "
                    f"--events-steps on {events_frames} frames ({events_tokens}) holding up to 8 events, then "
                    f"optionally --longest-steps on {longest_frames} frames ({longest_tokens}; off by default: tried in "
                    "v2.4 and not adopted, see docs/testbed.md). "
                    "Resumable: the checkpoints and log live in --work (default assets/testbed-build/, "
                    "meant to be committed while a build spans sessions); Ctrl-C saves and stops.",
    )
    flags.add_common_flags(build)
    build.add_argument("--out", default="runs/testbed/testbed_lora.safetensors",
                       help="LoRA file to write (a .json manifest is written beside it)")
    build.add_argument("--work", default=None, help="folder for the log and the resumable checkpoint")
    build.add_argument("--seed", type=int, default=recipe.seed, help="training seed")
    build.add_argument("--steps", type=POSITIVE, default=recipe.steps, help="training steps (one clip each)")
    build.add_argument("--long-steps", type=NON_NEGATIVE, default=LONG_STAGE.steps,
                       help=f"steps of the long-clip stage ({long_frames} frames); 0 skips it")
    build.add_argument("--events-steps", type=NON_NEGATIVE, default=0,
                       help=f"steps of the events stage ({events_frames} frames, up to 8 events a clip; the "
                            f"recipe is {EVENTS_STAGE.steps}); 0 skips it")
    build.add_argument("--longest-steps", type=NON_NEGATIVE, default=0,
                       help=f"steps of the optional longest-clip stage ({longest_frames} frames; the recipe "
                            f"tried is {LONGEST_STAGE.steps}); 0 skips it")
    build.add_argument("--longest-frozen-video", action="store_true",
                       help="train the longest-clip stage on the answer only: the video runs once without "
                            "gradient into a cache (one forward a step instead of a forward, a recomputation "
                            "and a backward), so more steps at 22k-25k fit in a session")
    build.add_argument("--lora-rank", type=POSITIVE, default=recipe.rank, help="rank of the language model's LoRA")
    build.add_argument("--lr", type=POSITIVE_FLOAT, default=recipe.lr, help="peak learning rate")
    build.add_argument("--no-eval", action="store_true", help="skip the evaluation after training")
    _add_eval_flags(build)
    build.set_defaults(func=run_build, on_interrupt=RESUMABLE)


def _add_eval(testbed_sub) -> None:
    evaluate = testbed_sub.add_parser(
        "eval",
        help="description length, repetition, grounding and event recall at 1k-25k visual tokens",
        description="Evaluates testbed weights on held-out SynthVideo clips at each length and prints a table "
                    "with the testbed's bars (--json for every description).",
    )
    flags.add_common_flags(evaluate)
    evaluate.add_argument("--weights", default="committed", help="LoRA file, or 'committed' (the shipped one)")
    evaluate.add_argument("--update-manifest", action="store_true", help="store the report in the weights' manifest")
    evaluate.add_argument("--repetition-penalty", type=POSITIVE_FLOAT, default=None,
                          help="decode with this repetition penalty instead of the testbed's generation config's "
                               "(a probe; 1 turns it off)")
    _add_eval_flags(evaluate)
    evaluate.set_defaults(func=run_eval)


def _add_eval_flags(parser: argparse.ArgumentParser) -> None:
    from ..testbed.evaluate import EvalConfig

    default = EvalConfig()
    parser.add_argument("--lengths", type=POSITIVE, nargs="+", default=list(default.lengths),
                        help="visual-token lengths to evaluate at (196 tokens per frame)")
    parser.add_argument("--clips", type=POSITIVE, nargs="+", default=list(default.clips),
                        help="held-out clips per length (one number for all, or one per length; at least 2)")
    parser.add_argument("--max-new-tokens", type=POSITIVE, default=default.max_new_tokens, help="longest description")
    parser.add_argument("--events", type=POSITIVE, default=None,
                        help="give every clip this many events (a probe: does recall fall with the count at a "
                             "short length?); default: the length's own count, 2 below 20 frames up to 8 at 128")
    flags.add_dtype_flag(parser, "evaluation dtype; auto: bf16 where the CPU has bf16 units (AMX, AVX512-BF16), "
                                 "else fp32", default="auto", only=("auto", "bf16", "fp32"))
    parser.add_argument("--json", default=None, help="also write the full report (every description) to this file")
    parser.add_argument("--verbose", action="store_true", help="print every description as it is written")


# --- the commands -------------------------------------------------------------------------------


def _eval_config(args: argparse.Namespace, repetition_penalty: float | None = None):
    from ..testbed.evaluate import EvalConfig

    try:
        return EvalConfig(lengths=tuple(args.lengths), clips=tuple(args.clips), max_new_tokens=args.max_new_tokens,
                          events=args.events, repetition_penalty=repetition_penalty)
    except ValueError as err:  # --clips: not one per length, or below 2
        raise InvalidInputError(f"--clips {' '.join(map(str, args.clips))}: {err}") from None


def run_build(args: argparse.Namespace) -> int:
    from ..testbed.build import build_testbed
    from ..testbed.training import EVENTS_STAGE, LONG_STAGE, LONGEST_STAGE, TrainConfig

    evaluation = None if args.no_eval else _eval_config(args)
    flags.writable(args.out, "--out", kind="file")
    if args.work:
        flags.writable(args.work, "--work")
    flags.set_threads(args.threads)
    cfg = TrainConfig(seed=args.seed, steps=args.steps, rank=args.lora_rank, lr=args.lr)
    longest = (dataclasses.replace(LONGEST_STAGE, video_gradient=False, checkpoint_activations=False)
               if args.longest_frozen_video else LONGEST_STAGE)
    if args.longest_frozen_video and not args.longest_steps:
        raise InvalidInputError("--longest-frozen-video changes the longest-clip stage, which --longest-steps 0 "
                                "leaves out: give it steps")
    later = [dataclasses.replace(stage, steps=steps) if steps else None
             for stage, steps in ((LONG_STAGE, args.long_steps), (EVENTS_STAGE, args.events_steps),
                                  (longest, args.longest_steps))]
    if not build_testbed(args.out, cfg, work=args.work, language=args.language, command=flags.command_line(args),
                         later=later):
        print("build stopped; rerun the same command to resume from its checkpoint", file=sys.stderr)
        return 130
    if evaluation is None:
        return 0
    return _run_eval(args.out, args, evaluation, update_manifest=True)


def run_eval(args: argparse.Namespace) -> int:
    evaluation = _eval_config(args, args.repetition_penalty)  # a probe flag of eval only, not of build
    if args.update_manifest and args.repetition_penalty is not None:
        raise InvalidInputError("--update-manifest stores the weights' evaluation under their own generation "
                                "config; drop --repetition-penalty (a probe) or --update-manifest")
    if args.json:
        flags.writable(args.json, "--json", kind="file")
    flags.set_threads(args.threads)
    return _run_eval(args.weights, args, evaluation, update_manifest=args.update_manifest)


def _run_eval(weights, args: argparse.Namespace, evaluation, update_manifest: bool) -> int:
    import json
    import time

    from ..precision import cpu_description
    from ..testbed import load_testbed
    from ..testbed.build import write_manifest
    from ..testbed.evaluate import bar_checks, evaluate_testbed, format_table
    from ..testbed.loader import COMMITTED, COMMITTED_WEIGHTS

    dtype_name, dtype = flags.resolved_dtype(args.dtype, "cpu")
    model, processor = load_testbed(weights, language=args.language, dtype=dtype)
    log = (lambda line: print(line, file=sys.stderr)) if args.verbose else (lambda line: None)
    reports = evaluate_testbed(model, processor, evaluation, log=log)
    met = all(check[3] for report in reports for check in bar_checks(report))
    result = {
        "weights": str(COMMITTED_WEIGHTS if weights == COMMITTED else weights),
        "dtype": dtype_name,
        "generation": {"do_sample": False, "repetition_penalty": evaluation.repetition_penalty
                       or model.generation_config.repetition_penalty},
        "machine": f"{cpu_description()}, {args.threads} threads",
        "date": time.strftime("%Y-%m-%d"),
        "all_bars_met": met,
        "lengths": [dataclasses.asdict(r) for r in reports],
    }
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(result, handle, indent=2)
    print(format_table(reports))
    print(f"all bars met: {'yes' if met else 'no'}")
    if update_manifest:
        write_manifest(Path(result["weights"]),
                       evaluation={k: v for k, v in result.items() if k != "lengths"}
                       | {"lengths": [{k: v for k, v in r.items() if k != "samples"} for r in result["lengths"]]})
    return 0
