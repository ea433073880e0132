"""The ``sparrow`` command line.

Flags are parsed in :func:`main` only (never at import), and every error that
sparrow-sd raises on purpose becomes a one-line message and exit code 2.
"""

from __future__ import annotations

import argparse
import sys

from .errors import SparrowError


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(arch=args.arch, frames=args.frames, max_new_tokens=args.max_new_tokens, seed=args.seed)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sparrow",
        description="Lossless speculative decoding for Hugging Face Video LLMs (the Sparrow method).",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser(
        "demo",
        help="generate from a tiny random Video LLM with and without speculation, and compare",
        description=(
            "Builds a tiny random Video LLM (no download), generates from a random video with plain "
            "decoding, with a random Sparrow draft and with an oracle proposer, checks that all outputs "
            "are identical and prints tau and timings."
        ),
    )
    demo.add_argument("--arch", default="qwen2_5_vl", choices=["qwen2_vl", "qwen2_5_vl", "llava_onevision"])
    demo.add_argument("--frames", type=int, default=64, help="video frames (more frames, more visual tokens)")
    demo.add_argument("--max-new-tokens", type=int, default=64)
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(func=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except SparrowError as err:
        print(f"sparrow: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
