"""``sparrow datagen``: self-distilled draft-training data, written by the target itself.

What is stored and how runs resume is :mod:`sparrow_sd.training.datagen`
(every default here is :class:`~sparrow_sd.training.datagen.DatagenConfig`'s);
the prompts come from :mod:`sparrow_sd.training.sources`. SynthVideo runs
default to the draft suite's data (:class:`~sparrow_sd.training.suite.SuiteConfig`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import InvalidInputError
from . import flags
from .flags import NON_NEGATIVE, NON_NEGATIVE_FLOAT, POSITIVE, RESUMABLE


def add_parser(sub, name: str, help: str) -> None:
    from ..training.datagen import DatagenConfig
    from ..training.records import VISUAL_STORAGE
    from ..training.suite import SuiteConfig

    default, suite = DatagenConfig(), SuiteConfig()
    datagen = sub.add_parser(
        name, help=help,
        description="Runs the target over video prompts (SynthVideo clips or a JSONL of real videos), lets it "
                    "write its own responses and stores, in resumable bf16 safetensors shards, the token ids, the "
                    "loss mask and the target states a draft learns from. Rerun the same command to resume: every "
                    "shard is checked, a damaged or missing one is named and its samples written again. Under "
                    "`accelerate launch` each process takes its share of the samples.",
    )
    flags.add_common_flags(datagen)
    flags.add_target_flags(datagen)
    datagen.add_argument("--source", default="synth", help="'synth' (SynthVideo clips) or a JSONL file")
    datagen.add_argument("--out", required=True, help="output folder (shards, info.json, the run's record)")
    datagen.add_argument("--count", type=POSITIVE, default=suite.count, help="synth: number of clips")
    datagen.add_argument("--frames", default=flags.comma_list(suite.frames),
                         help="synth: clip lengths to draw from (comma list)")
    datagen.add_argument("--num-frames", type=POSITIVE, default=16, help="JSONL: frames sampled per video")
    datagen.add_argument("--skip-bad-videos", action="store_true",
                         help="JSONL: leave out videos that cannot be read (listed in OUT/datagen-rank*.json) "
                              "instead of stopping at the first")
    datagen.add_argument("--max-new-tokens", type=POSITIVE, default=default.max_new_tokens,
                         help="longest response the target writes")
    datagen.add_argument("--temperature", type=NON_NEGATIVE_FLOAT, default=default.temperature,
                         help="0: greedy responses")
    datagen.add_argument("--ivsb-layer", type=NON_NEGATIVE, default=default.ivsb_layer,
                         help="intermediate layer kept (default: middle)")
    datagen.add_argument("--glimpse-tokens", type=POSITIVE, default=default.glimpse_tokens,
                         help="pooled spans of the visual block stored")
    datagen.add_argument("--visual", choices=list(VISUAL_STORAGE), default=default.visual,
                         help="'full' keeps per-position visual states (the full-visual and pruned baselines need them)")
    datagen.add_argument("--aux-layers", default=None,
                         help="also store these decoder layers' outputs, for eagle3 drafts: 'default' or 'a,b,c'")
    datagen.add_argument("--shard-size", type=POSITIVE, default=default.shard_size, help="samples per shard file")
    datagen.add_argument("--seed", type=int, default=default.seed, help="clip and sampling seed")
    datagen.add_argument("--rank", type=NON_NEGATIVE, default=0, help="this process's share (with --world)")
    datagen.add_argument("--world", type=POSITIVE, default=None,
                         help="processes sharing the work, this one being --rank (default: from accelerate)")
    datagen.set_defaults(func=run, on_interrupt=RESUMABLE)


def run(args: argparse.Namespace) -> int:
    frames = flags.int_list(args.frames, "--frames") if args.source == "synth" else None
    if args.aux_layers not in (None, "default"):
        flags.int_list(args.aux_layers, "--aux-layers", low=0)
    if args.source != "synth" and not Path(args.source).is_file():
        raise InvalidInputError(f"--source {args.source}: not 'synth' and no such JSONL file")
    if args.world is not None and args.rank >= args.world:
        raise InvalidInputError(f"--rank {args.rank} must be below --world {args.world}")
    flags.writable(args.out)
    flags.check_device(args)

    from ..training.datagen import DatagenConfig, run_datagen
    from ..training.sources import jsonl_samples, synth_samples

    flags.set_threads(args.threads)
    model, make_inputs = flags.load_target(args)
    cfg = DatagenConfig(max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                        ivsb_layer=args.ivsb_layer, glimpse_tokens=args.glimpse_tokens, visual=args.visual,
                        shard_size=args.shard_size, seed=args.seed,
                        aux_layers=_aux_layers(args.aux_layers, model))
    notes: dict = {}
    if args.source == "synth":
        samples, total = synth_samples(make_inputs, args.count, frames=frames, seed=args.seed), args.count
    else:
        samples, total = jsonl_samples(args.source, make_inputs, num_frames=args.num_frames,
                                       skip_bad=args.skip_bad_videos, notes=notes, log=print), None
    rank, world = args.rank, args.world
    if world is None:  # under `accelerate launch`, one process per device
        from accelerate import PartialState

        state = PartialState()
        rank, world = state.process_index, state.num_processes
    run_datagen(model, samples, args.out, cfg, rank=rank, world=world, total=total, log=print, notes=notes)
    return 0


def _aux_layers(text: str | None, model) -> tuple[int, ...] | None:
    """``--aux-layers``: None, "default" (EAGLE-3's three layers for this target) or "a,b,c"."""
    from ..draft.config import default_aux_layers

    if text is None:
        return None
    if text == "default":
        return default_aux_layers(model.config.get_text_config().num_hidden_layers)
    try:
        return tuple(int(a) for a in text.split(","))
    except ValueError:
        raise InvalidInputError(f"--aux-layers takes 'default' or comma-separated layer indices, got {text!r}") from None
