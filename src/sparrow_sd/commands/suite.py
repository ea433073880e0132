"""``sparrow drafts build|tau|pack``: the draft suite the benchmark compares, its acceptance table, shipping a draft.

(``drafts.py`` beside this module reads draft folders for every command.)
``build`` is :func:`sparrow_sd.training.suite.build_suite` (its data defaults
are :class:`~sparrow_sd.training.suite.SuiteConfig`'s), ``tau`` is
:func:`sparrow_sd.commands.bench.run_acceptance`, ``pack`` is
:func:`sparrow_sd.draft.pack_draft`.
"""

from __future__ import annotations

import argparse
import json
import signal

from ..errors import InvalidInputError, RunInterrupted
from . import flags
from .flags import POSITIVE, RESUMABLE

# --- the parsers --------------------------------------------------------------------------------


def add_parser(sub, name: str, help: str) -> None:
    drafts = sub.add_parser(name, help=help, description="Builds the drafts the benchmark compares.")
    drafts_sub = drafts.add_subparsers(dest="drafts_command", required=True)
    _add_build(drafts_sub)
    _add_tau(drafts_sub)
    _add_pack(drafts_sub)


def _add_build(drafts_sub) -> None:
    from ..training.suite import SUITE, SuiteConfig

    default = SuiteConfig()
    suite = drafts_sub.add_parser(
        "build",
        help="distil data once, then train Sparrow, full-visual, pruned and text-only drafts on it",
        description="Runs `sparrow datagen` (SynthVideo, --visual full --aux-layers default) into OUT/data, then "
                    "trains each draft of the suite into OUT/<name> with the same recipe, and writes OUT/suite.json. "
                    "Rerun the same command to resume: finished drafts are skipped, an interrupted one continues.",
    )
    flags.add_common_flags(suite)
    flags.add_target_flags(suite)
    suite.add_argument("--out", default="runs/drafts", help="folder for the data and the drafts")
    suite.add_argument("--count", type=POSITIVE, default=default.count, help="SynthVideo clips to distil")
    suite.add_argument("--frames", default=flags.comma_list(default.frames),
                       help="clip lengths to draw from (comma list)")
    suite.add_argument("--max-new-tokens", type=POSITIVE, default=default.max_new_tokens,
                       help="longest response the target writes")
    suite.add_argument("--only", default=None, help=f"comma list of drafts ({','.join(SUITE)})")
    suite.add_argument("--config", default=None, help="JSON file of base training settings (DraftTrainConfig)")
    suite.add_argument("--epochs", type=POSITIVE, default=None, help="passes over the data (default: the config's)")
    suite.add_argument("--seed", type=int, default=default.seed, help="data seed")
    suite.set_defaults(func=run_build, on_interrupt=RESUMABLE)


def _add_tau(drafts_sub) -> None:
    tau = drafts_sub.add_parser(
        "tau",
        help="the acceptance table: tau of each draft at each visual-token length, lossless-checked",
        description="Greedy tau (mean accepted length) of every --draft on held-out SynthVideo clips with the "
                    "detailed-description prompt, one row per draft, one column per length. Each clip is "
                    "prefilled once and shared by plain decoding and every draft (tau needs no timing; "
                    "`sparrow bench` measures speed), and every draft's output is checked against plain decoding.")
    flags.add_common_flags(tau)
    flags.add_target_flags(tau)
    flags.add_tree_flags(tau)
    tau.add_argument("--draft", action="append", default=[], required=True, metavar="NAME=FOLDER",
                     help="a draft to measure (repeatable)")
    tau.add_argument("--visual-tokens", type=POSITIVE, nargs="+", default=[1000, 25000],
                     help="visual-token lengths measured")
    tau.add_argument("--clips", type=POSITIVE, default=4, help="clips per length")
    tau.add_argument("--max-new-tokens", type=POSITIVE, default=200, help="tokens decoded per clip")
    tau.add_argument("--out", default=None, help="JSON report to write")
    tau.set_defaults(func=run_tau)


def _add_pack(drafts_sub) -> None:
    pack = drafts_sub.add_parser(
        "pack", help="copy a trained draft for shipping: bf16 weights, its training record and a manifest",
        description="Writes DRAFT as OUT with its floating-point weights cast to --dtype (bf16 halves the size), "
                    "its training.json, and a manifest.json recording where it came from (the suite's data and "
                    "command when DRAFT sits in a `sparrow drafts build` folder).")
    pack.add_argument("--draft", required=True, help="a trained draft folder")
    pack.add_argument("--out", required=True, help="folder to write")
    flags.add_dtype_flag(pack, "dtype of the written weights", default="bf16", only=("bf16", "fp32"))
    pack.set_defaults(func=run_pack)


# --- the commands -------------------------------------------------------------------------------


def run_build(args: argparse.Namespace) -> int:
    import dataclasses

    from ..training.checkpoints import TrainingInterrupted
    from ..training.trainer import DraftTrainConfig
    from .train import train_settings

    base = DraftTrainConfig(**train_settings(flags.read_json_config(args.config))) if args.config else DraftTrainConfig()
    if args.epochs is not None:
        base = dataclasses.replace(base, epochs=args.epochs)
    frames = flags.int_list(args.frames, "--frames")
    flags.writable(args.out)
    flags.check_device(args)

    from ..training.suite import SuiteConfig, build_suite, suite_configs

    names = args.only.split(",") if args.only else None
    suite_configs(base, names)  # unknown names: refused before the model loads
    flags.set_threads(args.threads)
    model, make_inputs = flags.load_target(args)
    suite = SuiteConfig(count=args.count, frames=frames, max_new_tokens=args.max_new_tokens, seed=args.seed)
    try:
        build_suite(model, make_inputs, args.out, suite, base, names, command=flags.command_line(args))
    except TrainingInterrupted as stop:  # its own hint ("plus --resume") is `sparrow train`'s
        raise RunInterrupted(f"training interrupted ({signal.Signals(stop.signum).name}): {stop.where}; rerun the same "
                             "command to resume: finished drafts are kept and this one continues",
                             exit_code=stop.exit_code) from None
    return 0


def run_tau(args: argparse.Namespace) -> int:
    from .bench import parse_drafts

    drafts = parse_drafts(args.draft)
    flags.check_draft_folders(drafts)
    if args.out:
        flags.writable(args.out, "--out", kind="file")
    flags.check_device(args)

    from .bench import run_acceptance

    flags.set_threads(args.threads)
    run_acceptance(args.model, drafts, args.visual_tokens, args.clips, flags.tree_config(args),
                   args.max_new_tokens, args.out, dtype=args.dtype, device=args.device, language=args.language,
                   argv=args.argv)
    return 0


def run_pack(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..draft import pack_draft
    from .drafts import draft_format

    if draft_format(args.draft) != "sparrow":
        raise InvalidInputError(f"--draft {args.draft} is an EAGLE-3 folder; pack takes a `sparrow train` folder")
    flags.writable(args.out)
    source = Path(args.draft)
    about = {}
    suite = source.parent / "suite.json"
    if suite.is_file():  # a suite draft: keep how its data and it were made, and its siblings' figures
        record = json.loads(suite.read_text())
        about = {"suite": {k: v for k, v in record.items() if k != "drafts"},
                 "this_draft": record.get("drafts", {}).get(source.name, {})}
    out = pack_draft(source, args.out, dtype=flags.resolved_dtype(args.dtype)[1], about=about)
    size = sum(f.stat().st_size for f in out.iterdir()) / 2**20
    print(f"packed {source} into {out} ({args.dtype}, {size:.1f} MB)")
    return 0
