"""``sparrow demo``: the testbed with the committed Sparrow draft, or (``--tiny``) the engine on a tiny random model.

The demos themselves are :mod:`sparrow_sd.commands.demos`; their defaults (frames, new
tokens, model family) are those functions' own, so the help states them and
an unset flag leaves them alone.
"""

from __future__ import annotations

import argparse
import inspect

from .flags import POSITIVE


def _defaults(function) -> dict:
    return {name: p.default for name, p in inspect.signature(function).parameters.items()}


def add_parser(sub, name: str, help: str) -> None:
    from .demos import run_demo, run_testbed_demo
    from ..testbed.config import TestbedConfig
    from ..testing import ARCHS

    testbed, tiny = _defaults(run_testbed_demo), _defaults(run_demo)
    tokens = TestbedConfig().num_video_tokens(testbed["frames"])
    demo = sub.add_parser(
        name, help=help,
        description=(
            "Writes a held-out SynthVideo clip to an mp4, streams the testbed's description of it decoded "
            "with the committed Sparrow draft, decodes it again without the draft, and reports tau, the "
            "decode speedup and whether the outputs are identical. --tiny (or missing committed assets) "
            "runs the engine on a tiny random Video LLM instead: plain, random-draft and oracle decoding "
            "checked against generate()."
        ),
    )
    demo.add_argument("--tiny", action="store_true", help="the engine on a tiny random Video LLM instead")
    demo.add_argument("--arch", default=tiny["arch"], choices=list(ARCHS), help="--tiny: the model family")
    demo.add_argument("--frames", type=POSITIVE, default=None,
                      help=f"video frames (default {testbed['frames']}, {tokens:,} visual tokens; "
                           f"--tiny: {tiny['frames']})")
    demo.add_argument("--max-new-tokens", type=POSITIVE, default=None,
                      help=f"default {testbed['max_new_tokens']} (--tiny: {tiny['max_new_tokens']})")
    demo.add_argument("--draft", default=None, help="draft folder (default: the committed Sparrow draft)")
    demo.add_argument("--weights", default=None, help="testbed LoRA file (default: the committed one)")
    demo.add_argument("--threads", type=POSITIVE, default=testbed["threads"], help="torch CPU threads")
    demo.add_argument("--seed", type=int, default=testbed["seed"], help="clip and sampling seed")
    demo.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from .demos import missing_demo_assets, run_demo, run_testbed_demo

    missing = None if (args.draft and args.weights) else missing_demo_assets()
    if missing and not args.tiny:
        print(f"{missing}: running the tiny random demo instead (sparrow demo --tiny)\n")
    given = {k: v for k, v in (("frames", args.frames), ("max_new_tokens", args.max_new_tokens)) if v is not None}
    if args.tiny or missing:
        return run_demo(arch=args.arch, seed=args.seed, **given)
    return run_testbed_demo(seed=args.seed, threads=args.threads, draft=args.draft, weights=args.weights, **given)
