"""``sparrow train``: a draft (Sparrow or a peer) trained on ``sparrow datagen`` output.

Settings are :class:`~sparrow_sd.training.trainer.DraftTrainConfig`'s fields:
``--config`` (JSON) first, then every flag given. The flags default to unset so
that a config file's value wins; their help states the dataclass's default.
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex

from ..errors import InvalidInputError, RunInterrupted
from . import flags
from .flags import NON_NEGATIVE, POSITIVE, POSITIVE_FLOAT


def _stated(help: str, value) -> str:
    """``help`` with the default the dataclass gives it: ``(default: 3)``, ``(default: on)``."""
    shown = {True: "on", False: "off"}.get(value, value) if isinstance(value, bool) else value
    return f"{help} (default: {shown})"


def add_parser(sub, name: str, help: str) -> None:
    from ..draft.config import ARCHITECTURES, VISUAL_MODES
    from ..training.trainer import DraftTrainConfig

    default = DraftTrainConfig()
    train = sub.add_parser(
        name, help=help,
        description="Trains a draft in any visual mode with multi-token prediction and IVSB; settings come from "
                    "--config (JSON with DraftTrainConfig fields) and are overridden by flags (unset flags: the "
                    "config's value, else DraftTrainConfig's default). Ctrl-C or SIGTERM saves a checkpoint and "
                    "says how to resume. Multi-GPU: `accelerate launch -m sparrow_sd.cli train ...`.",
    )
    flags.add_common_flags(train)
    flags.add_target_flags(train)
    train.add_argument("--data", required=True, help="a `sparrow datagen` output folder")
    train.add_argument("--out", required=True, help="draft folder to write")
    train.add_argument("--config", default=None, help="JSON file of training settings")
    train.add_argument("--visual-mode", dest="visual_mode", choices=list(VISUAL_MODES),
                       help=_stated("what the draft reads of the video",
                                    f"{default.visual_mode}; none with --architecture eagle3"))
    train.add_argument("--architecture", choices=list(ARCHITECTURES),
                       help=_stated("the draft layer's form; eagle3 exports to vLLM/SGLang (needs --aux-layers data)",
                                    default.architecture))
    train.add_argument("--ivsb", dest="ivsb", action=argparse.BooleanOptionalAction, default=None,
                       help=_stated("visual items carry the intermediate layer's states", default.ivsb))
    train.add_argument("--mtp-steps", dest="mtp_steps", type=POSITIVE,
                       help=_stated("multi-token prediction levels", default.mtp_steps))
    train.add_argument("--epochs", type=POSITIVE, help=_stated("passes over the data", default.epochs))
    train.add_argument("--lr", type=POSITIVE_FLOAT, help=_stated("peak learning rate", default.lr))
    train.add_argument("--draft-vocab-size", dest="draft_vocab_size", type=POSITIVE,
                       help=_stated("reduced draft vocabulary", default.draft_vocab_size))
    train.add_argument("--mixed-precision", dest="mixed_precision", choices=["no", "bf16", "fp16"],
                       help=_stated("accelerate's mixed precision", default.mixed_precision))
    train.add_argument("--checkpoint-every", dest="checkpoint_every", type=NON_NEGATIVE,
                       help=_stated("write a resumable checkpoint every this many steps; 0: only when interrupted",
                                    default.checkpoint_every))
    train.add_argument("--seed", type=int, help=_stated("training seed", default.seed))
    train.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint")
    train.set_defaults(func=run)


def train_settings(config: dict) -> dict:
    """Refuse unknown settings and values of the wrong type (a string for a number, ...)."""
    from ..training.trainer import DraftTrainConfig

    fields = {f.name: f for f in dataclasses.fields(DraftTrainConfig)}
    if unknown := set(config) - set(fields):
        raise InvalidInputError(f"unknown training settings {sorted(unknown)}; known: {sorted(fields)}")
    defaults = DraftTrainConfig()
    for name, value in config.items():
        default = getattr(defaults, name)
        kind = type(default)
        ok = (value is None and fields[name].type.endswith("None")) or isinstance(value, kind) or (
            kind is float and isinstance(value, int) and not isinstance(value, bool)) or (
            default is None and isinstance(value, int))
        if kind is int and isinstance(value, bool):
            ok = False
        if not ok:
            raise InvalidInputError(f"training setting {name} must be a {kind.__name__ if default is not None else 'number'}"
                                    f", got {value!r}")
    return config


def run(args: argparse.Namespace) -> int:
    import signal

    from ..training.datagen import check_data_shards, data_info
    from ..training.trainer import DraftTrainConfig, TrainingInterrupted, checkpoint_path, has_checkpoint

    settings = flags.read_json_config(args.config) if args.config else {}
    for field in dataclasses.fields(DraftTrainConfig):
        value = getattr(args, field.name, None)
        if value is not None:
            settings[field.name] = value
    cfg = DraftTrainConfig(**train_settings(settings))
    data_info(args.data)
    check_data_shards(args.data)
    flags.writable(args.out)
    if args.resume and not has_checkpoint(args.out):
        raise InvalidInputError(f"--resume: no checkpoint in {checkpoint_path(args.out)} (one is written every "
                                "--checkpoint-every steps and when training is interrupted); run without --resume "
                                "to start at step 0")
    flags.check_device(args)

    from ..training.trainer import train_draft

    flags.set_threads(args.threads)
    model, _ = flags.load_target(args)
    try:
        train_draft(model, args.data, args.out, cfg, resume=args.resume)
    except TrainingInterrupted as stop:
        again = list(args.argv) + ([] if "--resume" in args.argv else ["--resume"])
        raise RunInterrupted(f"training interrupted ({signal.Signals(stop.signum).name}): {stop.where}; resume with: "
                             f"sparrow {shlex.join(again)}", exit_code=stop.exit_code) from None
    return 0
