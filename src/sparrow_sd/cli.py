"""The ``sparrow`` command line.

Flags are parsed in :func:`main` only (never at import). Every error a user can
meet ends the same way: one line on stderr, ``sparrow: error: ...``, and exit
code 2 (docs/errors.md lists them): a bad flag value, a bad input file, an
output path that cannot be written, a missing device, any error sparrow-sd
raises on purpose. Each command checks its flags, its output paths (a real
write, :func:`~sparrow_sd.paths.check_writable`) and its device before it loads
a model. Ctrl-C or SIGTERM ends a command with one line too (exit code 130 or
143); ``sparrow train`` saves a resumable checkpoint first and says how to
resume. An unexpected failure (a bug) is one line and exit code 1;
``SPARROW_DEBUG=1`` shows its traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import signal
import sys
import threading
from pathlib import Path

from .errors import InvalidInputError, RunInterrupted, SparrowError

# --- flag values --------------------------------------------------------------------------------


def _int_at_least(low: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value

    parse.__name__ = "integer"
    return parse


def _float_in(low: float, high: float | None = None, low_open: bool = False):
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        too_low = value <= low if low_open else value < low
        if too_low or (high is not None and value > high) or value != value:
            bound = f"({low:g}, {high:g}]" if high is not None else (f"above {low:g}" if low_open else f"at least {low:g}")
            raise argparse.ArgumentTypeError(f"must be {'in ' if high is not None else ''}{bound}, got {text}")
        return value

    parse.__name__ = "number"
    return parse


POSITIVE = _int_at_least(1)
NON_NEGATIVE = _int_at_least(0)
POSITIVE_FLOAT = _float_in(0.0, low_open=True)
NON_NEGATIVE_FLOAT = _float_in(0.0)
PROBABILITY = _float_in(0.0, 1.0, low_open=True)


def _int_list(text: str, flag: str, low: int = 1) -> tuple[int, ...]:
    """``"6,8,12"`` -> (6, 8, 12), each at least ``low``; one line naming the flag otherwise."""
    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise InvalidInputError(f"{flag} takes comma-separated whole numbers (e.g. 6,8,12), got {text!r}") from None
    if any(v < low for v in values):
        raise InvalidInputError(f"{flag}: every value must be at least {low}, got {text!r}")
    return values


def _read_json_config(path: str, flag: str = "--config") -> dict:
    try:
        with open(path) as handle:
            data = json.load(handle)
    except FileNotFoundError:
        raise InvalidInputError(f"{flag} {path}: file not found") from None
    except (OSError, UnicodeDecodeError) as err:
        raise InvalidInputError(f"{flag} {path}: cannot be read ({err})") from None
    except json.JSONDecodeError as err:
        raise InvalidInputError(f"{flag} {path} is not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise InvalidInputError(f"{flag} {path} must hold a JSON object of settings, not {type(data).__name__}")
    return data


def _train_settings(config: dict) -> dict:
    """Refuse unknown settings and values of the wrong type (a string for a number, ...)."""
    import dataclasses

    from .training.trainer import DraftTrainConfig

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


def _check_device(args: argparse.Namespace) -> None:
    from .paths import check_device

    if getattr(args, "device", None) is not None:
        check_device(args.device)


def _writable(path, flag: str = "--out", kind: str = "folder") -> None:
    from .paths import check_writable

    check_writable(path, flag, kind)


# --- commands -----------------------------------------------------------------------------------


def _demo(args: argparse.Namespace) -> int:
    from .demo import missing_demo_assets, run_demo, run_testbed_demo

    missing = None if (args.draft and args.weights) else missing_demo_assets()
    if missing and not args.tiny:
        print(f"{missing}: running the tiny random demo instead (sparrow demo --tiny)\n")
    if args.tiny or missing:
        return run_demo(arch=args.arch, frames=args.frames or 64, max_new_tokens=args.max_new_tokens or 64,
                        seed=args.seed)
    return run_testbed_demo(frames=args.frames or 16, max_new_tokens=args.max_new_tokens or 200, seed=args.seed,
                            threads=args.threads, draft=args.draft, weights=args.weights)


def _testbed_eval_config(args: argparse.Namespace):
    from .testbed.evaluate import EvalConfig

    return EvalConfig(lengths=tuple(args.lengths), clips=tuple(args.clips), max_new_tokens=args.max_new_tokens)


def _testbed_build(args: argparse.Namespace) -> int:
    from .testbed.build import build_testbed
    from .testbed.training import TrainConfig

    _writable(args.out, "--out", kind="file")
    if args.work:
        _writable(args.work, "--work")
    torch_threads(args.threads)
    cfg = TrainConfig(seed=args.seed, steps=args.steps, rank=args.lora_rank, lr=args.lr)
    command = "sparrow " + " ".join(shlex.quote(a) for a in args.argv) if args.argv else None
    if not build_testbed(args.out, cfg, work=args.work, language=args.language, command=command):
        print("build stopped; rerun the same command to resume from its checkpoint", file=sys.stderr)
        return 130
    if args.no_eval:
        return 0
    return _run_eval(args.out, args, update_manifest=True)


def _testbed_eval(args: argparse.Namespace) -> int:
    if args.json:
        _writable(args.json, "--json", kind="file")
    torch_threads(args.threads)
    return _run_eval(args.weights, args, update_manifest=args.update_manifest)


def torch_threads(count: int) -> None:
    import torch

    torch.set_num_threads(count)


def _run_eval(weights, args: argparse.Namespace, update_manifest: bool) -> int:
    import dataclasses
    import json
    import platform
    import time

    from .models import DTYPES
    from .precision import resolve_dtype_name
    from .testbed import load_testbed
    from .testbed.build import write_manifest
    from .testbed.evaluate import bar_checks, evaluate_testbed, format_table
    from .testbed.loader import COMMITTED, COMMITTED_WEIGHTS

    dtype_name = resolve_dtype_name(args.dtype, "cpu")
    model, processor = load_testbed(weights, language=args.language, dtype=DTYPES[dtype_name])
    log = (lambda line: print(line, file=sys.stderr)) if args.verbose else (lambda line: None)
    reports = evaluate_testbed(model, processor, _testbed_eval_config(args), log=log)
    met = all(check[3] for report in reports for check in bar_checks(report))
    result = {
        "weights": str(COMMITTED_WEIGHTS if weights == COMMITTED else weights),
        "dtype": dtype_name,
        "machine": f"{platform.processor() or platform.machine()}, {args.threads} threads",
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


def _add_eval_flags(parser: argparse.ArgumentParser) -> None:
    from .testbed.evaluate import EvalConfig

    default = EvalConfig()
    parser.add_argument("--lengths", type=POSITIVE, nargs="+", default=list(default.lengths),
                        help="visual-token lengths to evaluate at (196 tokens per frame)")
    parser.add_argument("--clips", type=POSITIVE, nargs="+", default=list(default.clips),
                        help="held-out clips per length (one number for all, or one per length; at least 2)")
    parser.add_argument("--max-new-tokens", type=POSITIVE, default=default.max_new_tokens, help="longest description")
    parser.add_argument("--dtype", choices=["auto", "bf16", "fp32"], default="auto",
                        help="evaluation dtype; auto: bf16 where the CPU has bf16 units (AMX, AVX512-BF16), else fp32")
    parser.add_argument("--json", default=None, help="also write the full report (every description) to this file")
    parser.add_argument("--verbose", action="store_true", help="print every description as it is written")


def _load_target(args: argparse.Namespace):
    """The target model and a ``make_inputs(question, frames)`` for it, from the target flags."""
    from .models import load_target

    loaded = load_target(args.model, dtype=args.dtype, device=args.device, language=args.language)
    return loaded.model, loaded.make_inputs


def _datagen(args: argparse.Namespace) -> int:
    from pathlib import Path

    frames = _int_list(args.frames, "--frames") if args.source == "synth" else None
    if args.aux_layers not in (None, "default"):
        _int_list(args.aux_layers, "--aux-layers", low=0)
    if args.source != "synth" and not Path(args.source).is_file():
        raise InvalidInputError(f"--source {args.source}: not 'synth' and no such JSONL file")
    if args.world is not None and args.rank >= args.world:
        raise InvalidInputError(f"--rank {args.rank} must be below --world {args.world}")
    _writable(args.out)
    _check_device(args)

    import torch

    from .training.datagen import DatagenConfig, run_datagen
    from .training.sources import jsonl_samples, synth_samples

    torch.set_num_threads(args.threads)
    model, make_inputs = _load_target(args)
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
    from .draft.config import default_aux_layers

    if text is None:
        return None
    if text == "default":
        return default_aux_layers(model.config.get_text_config().num_hidden_layers)
    try:
        return tuple(int(a) for a in text.split(","))
    except ValueError:
        raise InvalidInputError(f"--aux-layers takes 'default' or comma-separated layer indices, got {text!r}") from None


def _export(args: argparse.Namespace) -> int:
    from .commands.drafts import draft_format
    from .draft.export import EAGLE3_ARCHITECTURE, export_eagle3

    if draft_format(args.draft) == "eagle3":
        raise InvalidInputError(f"--draft {args.draft} is already an EAGLE-3 folder ({EAGLE3_ARCHITECTURE}): "
                                "vLLM and SGLang load it as it is; export takes a `sparrow train --architecture "
                                "eagle3` folder")
    _writable(args.out)
    import torch

    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}.get(args.dtype)
    out = export_eagle3(args.draft, args.out, dtype=dtype, max_position_embeddings=args.max_position_embeddings)
    print(f"wrote an EAGLE-3 draft to {out} (config.json, model.safetensors)")
    return 0


def _train(args: argparse.Namespace) -> int:
    import dataclasses

    from .training.datagen import check_data_shards, data_info
    from .training.trainer import DraftTrainConfig, TrainingInterrupted, checkpoint_path, has_checkpoint

    settings = _read_json_config(args.config) if args.config else {}
    for field in dataclasses.fields(DraftTrainConfig):
        value = getattr(args, field.name, None)
        if value is not None:
            settings[field.name] = value
    cfg = DraftTrainConfig(**_train_settings(settings))
    data_info(args.data)
    check_data_shards(args.data)
    _writable(args.out)
    if args.resume and not has_checkpoint(args.out):
        raise InvalidInputError(f"--resume: no checkpoint in {checkpoint_path(args.out)} (one is written every "
                                "--checkpoint-every steps and when training is interrupted); run without --resume "
                                "to start at step 0")
    _check_device(args)

    import torch

    from .training.trainer import train_draft

    torch.set_num_threads(args.threads)
    model, _ = _load_target(args)
    try:
        train_draft(model, args.data, args.out, cfg, resume=args.resume)
    except TrainingInterrupted as stop:
        again = list(args.argv) + ([] if "--resume" in args.argv else ["--resume"])
        where = f"checkpoint at step {stop.step} of {stop.total} saved to {stop.checkpoint}" if stop.checkpoint else \
            f"stopped at step {stop.step} of {stop.total}, no checkpoint written"
        raise RunInterrupted(f"training interrupted ({signal.Signals(stop.signum).name}): {where}; resume with: "
                             f"sparrow {shlex.join(again)}", exit_code=stop.exit_code) from None
    return 0


def _drafts_build(args: argparse.Namespace) -> int:
    import dataclasses

    from .training.trainer import DraftTrainConfig

    base = DraftTrainConfig(**_train_settings(_read_json_config(args.config))) if args.config else DraftTrainConfig()
    if args.epochs is not None:
        base = dataclasses.replace(base, epochs=args.epochs)
    frames = _int_list(args.frames, "--frames")
    _writable(args.out)
    _check_device(args)

    import torch

    from .training.suite import SuiteConfig, build_suite, suite_configs

    names = args.only.split(",") if args.only else None
    suite_configs(base, names)  # unknown names: refused before the model loads
    torch.set_num_threads(args.threads)
    model, make_inputs = _load_target(args)
    suite = SuiteConfig(count=args.count, frames=frames, max_new_tokens=args.max_new_tokens, seed=args.seed)
    build_suite(model, make_inputs, args.out, suite, base, names, command="sparrow " + shlex.join(args.argv))
    return 0


def _check_draft_folders(drafts: dict[str, str]) -> None:
    from .commands.drafts import draft_format

    for folder in drafts.values():
        draft_format(folder)


def _drafts_tau(args: argparse.Namespace) -> int:
    from .commands.bench import parse_drafts

    drafts = parse_drafts(args.draft)
    _check_draft_folders(drafts)
    if args.out:
        _writable(args.out, "--out", kind="file")
    _check_device(args)

    import torch

    from .commands.bench import run_acceptance
    from .proposers import TreeConfig

    torch.set_num_threads(args.threads)
    run_acceptance(args.model, drafts, args.visual_tokens, args.clips,
                   TreeConfig(depth=args.tree_depth, top_k=args.tree_top_k, total_tokens=args.tree_tokens),
                   args.max_new_tokens, args.out, dtype=args.dtype, device=args.device, language=args.language,
                   argv=args.argv)
    return 0


def _drafts_pack(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .commands.drafts import draft_format

    if draft_format(args.draft) != "sparrow":
        raise InvalidInputError(f"--draft {args.draft} is an EAGLE-3 folder; pack takes a `sparrow train` folder")
    _writable(args.out)

    import torch

    from .draft import pack_draft

    source = Path(args.draft)
    about = {}
    suite = source.parent / "suite.json"
    if suite.is_file():  # a suite draft: keep how its data and it were made, and its siblings' figures
        record = json.loads(suite.read_text())
        about = {"suite": {k: v for k, v in record.items() if k != "drafts"},
                 "this_draft": record.get("drafts", {}).get(source.name, {})}
    out = pack_draft(source, args.out, dtype={"bf16": torch.bfloat16, "fp32": torch.float32}[args.dtype], about=about)
    size = sum(f.stat().st_size for f in out.iterdir()) / 2**20
    print(f"packed {source} into {out} ({args.dtype}, {size:.1f} MB)")
    return 0


def _generate(args: argparse.Namespace) -> int:
    if args.compare and not args.draft:
        raise InvalidInputError("--compare decodes with the draft and again without it, to measure the speedup "
                                "and check the outputs match: give --draft")
    if args.draft:
        from .commands.drafts import draft_format

        draft_format(args.draft)
    _check_device(args)

    import torch

    from .commands.generate import GenerateOptions, run_generate
    from .proposers import TreeConfig

    torch.set_num_threads(args.threads)
    if args.fps is not None:
        args.num_frames = None
    progress = sys.stderr.isatty() if args.progress is None else args.progress
    run_generate(GenerateOptions(
        model=args.model, video=args.video, prompt=args.prompt, draft=args.draft, num_frames=args.num_frames,
        fps=args.fps, max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p,
        top_k=args.top_k, min_p=args.min_p, repetition_penalty=args.repetition_penalty,
        seed=args.seed, dtype=args.dtype, device=args.device,
        tree=TreeConfig(depth=args.tree_depth, top_k=args.tree_top_k, total_tokens=args.tree_tokens),
        compare=args.compare, json=args.json, language=args.language, progress=progress))
    return 0


def _bench(args: argparse.Namespace) -> int:
    from .bench import SweepConfig
    from .commands.bench import QUICK, BenchOptions, check_sweep, parse_drafts
    from .paths import require_extra

    sweep = QUICK if args.quick else SweepConfig(
        visual_tokens=tuple(args.visual_tokens), clips=args.clips, max_new_tokens=args.max_new_tokens,
        temperatures=tuple(args.temperatures))
    check_sweep(sweep)
    drafts = parse_drafts(args.draft)
    _check_draft_folders(drafts)
    require_extra("matplotlib", "sparrow bench (it draws bench.png)")
    _writable(args.out)
    _check_device(args)

    import torch

    from .commands.bench import run_bench
    from .proposers import TreeConfig

    torch.set_num_threads(args.threads)
    run_bench(BenchOptions(model=args.model, drafts=drafts, sweep=sweep,
                           tree=TreeConfig(depth=args.tree_depth, top_k=args.tree_top_k, total_tokens=args.tree_tokens),
                           prompt_lookup=not args.no_prompt_lookup, tune_tree=args.tune_tree, out=args.out,
                           dtype=args.dtype, device=args.device, language=args.language), argv=args.argv)
    return 0


# --- the parser ---------------------------------------------------------------------------------


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every option's default after its help, except where there is nothing to show (off, none)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "%(default)" in text or not action.option_strings:
            return text
        if action.default is None or action.default is False or action.default is argparse.SUPPRESS:
            return text
        return f"{text} (default: %(default)s)"


class _Parser(argparse.ArgumentParser):
    """Help with defaults; a bad flag is one line on stderr and exit code 2, like every other error."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        command = self.prog.removeprefix("sparrow").strip()
        where = f"{command}: " if command else ""
        self.exit(2, f"sparrow: error: {where}{message} (see `{self.prog} --help`)\n")


RESUMABLE = "rerun the same command to resume: finished work is kept"


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="sparrow",
        description="Lossless speculative decoding for Hugging Face Video LLMs (the Sparrow method). "
                    "Every error is one line on stderr and exit code 2 (docs/errors.md).",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser(
        "demo",
        help="describe a video with the testbed and the Sparrow draft, then without it, and compare",
        description=(
            "Writes a held-out SynthVideo clip to an mp4, streams the testbed's description of it decoded "
            "with the committed Sparrow draft, decodes it again without the draft, and reports tau, the "
            "decode speedup and whether the outputs are identical. --tiny (or missing committed assets) "
            "runs the engine on a tiny random Video LLM instead: plain, random-draft and oracle decoding "
            "checked against generate()."
        ),
    )
    demo.add_argument("--tiny", action="store_true", help="the engine on a tiny random Video LLM instead")
    demo.add_argument("--arch", default="qwen2_5_vl", choices=["qwen2_vl", "qwen2_5_vl", "llava_onevision"],
                      help="--tiny: the model family")
    demo.add_argument("--frames", type=POSITIVE, default=None,
                      help="video frames (default 16, 3,137 visual tokens; --tiny: 64)")
    demo.add_argument("--max-new-tokens", type=POSITIVE, default=None, help="default 200 (--tiny: 64)")
    demo.add_argument("--draft", default=None, help="draft folder (default: the committed Sparrow draft)")
    demo.add_argument("--weights", default=None, help="testbed LoRA file (default: the committed one)")
    demo.add_argument("--threads", type=POSITIVE, default=2, help="torch CPU threads")
    demo.add_argument("--seed", type=int, default=0, help="clip and sampling seed")
    demo.set_defaults(func=_demo)

    testbed = sub.add_parser("testbed", help="build or evaluate the testbed target (Qwen2.5-Coder-0.5B inside "
                             "LLaVA-OneVision, with a scene reader)",
                             description="The testbed Video LLM that drafts are trained and benchmarked on.")
    testbed_sub = testbed.add_subparsers(dest="testbed_command", required=True)
    common = _Parser(add_help=False)
    common.add_argument("--language", default=None,
                        help="the converted Qwen2.5-Coder folder (default: $SPARROW_QWEN_DIR, then assets/cache "
                             "from `make assets`)")
    common.add_argument("--threads", type=POSITIVE, default=2, help="torch CPU threads")
    target_flags = _Parser(add_help=False)
    target_flags.add_argument("--model", default="testbed",
                              help="'testbed', a local Hugging Face model folder, or tiny:<arch> (a tiny random "
                                   "model for smoke tests)")
    target_flags.add_argument("--dtype", choices=["bf16", "fp16", "fp32"], default="fp32", help="target dtype")
    target_flags.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    tree_flags = _Parser(add_help=False)
    tree_flags.add_argument("--tree-depth", type=POSITIVE, default=5, help="draft tree depth")
    tree_flags.add_argument("--tree-top-k", type=POSITIVE, default=4, help="children expanded per node")
    tree_flags.add_argument("--tree-tokens", type=POSITIVE, default=16, help="tree nodes verified per step")
    from .testbed.training import TrainConfig

    recipe = TrainConfig()
    build = testbed_sub.add_parser(
        "build", parents=[common],
        help="train the description LoRA from a fixed seed, then evaluate",
        description="Reproduces the committed testbed weights: a LoRA on the upper layers of the language model "
                    "trained to describe SynthVideo clips (5-40 frames, 1k-8k visual tokens) read through the scene "
                    "reader. Resumable: the checkpoint and log live in --work (default assets/testbed-build/, "
                    "meant to be committed while a build spans sessions); Ctrl-C saves and stops.",
    )
    build.add_argument("--out", default="runs/testbed/testbed_lora.safetensors",
                       help="LoRA file to write (a .json manifest is written beside it)")
    build.add_argument("--work", default=None, help="folder for the log and the resumable checkpoint")
    build.add_argument("--seed", type=int, default=recipe.seed, help="training seed")
    build.add_argument("--steps", type=POSITIVE, default=recipe.steps, help="training steps (one clip each)")
    build.add_argument("--lora-rank", type=POSITIVE, default=recipe.rank, help="rank of the language model's LoRA")
    build.add_argument("--lr", type=POSITIVE_FLOAT, default=recipe.lr, help="peak learning rate")
    build.add_argument("--no-eval", action="store_true", help="skip the evaluation after training")
    _add_eval_flags(build)
    build.set_defaults(func=_testbed_build, on_interrupt=RESUMABLE)

    evaluate = testbed_sub.add_parser(
        "eval", parents=[common],
        help="description length, repetition, grounding and event recall at 1k-25k visual tokens",
        description="Evaluates testbed weights on held-out SynthVideo clips at each length and prints a table "
                    "with the testbed's bars (--json for every description).",
    )
    evaluate.add_argument("--weights", default="committed", help="LoRA file, or 'committed' (the shipped one)")
    evaluate.add_argument("--update-manifest", action="store_true", help="store the report in the weights' manifest")
    _add_eval_flags(evaluate)
    evaluate.set_defaults(func=_testbed_eval)

    datagen = sub.add_parser(
        "datagen", parents=[common, target_flags],
        help="self-distilled draft-training data: the target writes the responses",
        description="Runs the target over video prompts (SynthVideo clips or a JSONL of real videos), lets it "
                    "write its own responses and stores, in resumable bf16 safetensors shards, the token ids, the "
                    "loss mask and the target states a draft learns from. Rerun the same command to resume: every "
                    "shard is checked, a damaged or missing one is named and its samples written again. Under "
                    "`accelerate launch` each process takes its share of the samples.",
    )
    datagen.add_argument("--source", default="synth", help="'synth' (SynthVideo clips) or a JSONL file")
    datagen.add_argument("--out", required=True, help="output folder (shards, info.json, the run's record)")
    datagen.add_argument("--count", type=POSITIVE, default=400, help="synth: number of clips")
    datagen.add_argument("--frames", default="6,8,12,16", help="synth: clip lengths to draw from (comma list)")
    datagen.add_argument("--num-frames", type=POSITIVE, default=16, help="JSONL: frames sampled per video")
    datagen.add_argument("--skip-bad-videos", action="store_true",
                         help="JSONL: leave out videos that cannot be read (listed in OUT/datagen-rank*.json) "
                              "instead of stopping at the first")
    datagen.add_argument("--max-new-tokens", type=POSITIVE, default=256, help="longest response the target writes")
    datagen.add_argument("--temperature", type=NON_NEGATIVE_FLOAT, default=0.0, help="0: greedy responses")
    datagen.add_argument("--ivsb-layer", type=NON_NEGATIVE, default=None, help="intermediate layer kept (default: middle)")
    datagen.add_argument("--glimpse-tokens", type=POSITIVE, default=16, help="pooled spans of the visual block stored")
    datagen.add_argument("--visual", choices=["pooled", "full"], default="full",
                         help="'full' keeps per-position visual states (the full-visual and pruned baselines need them)")
    datagen.add_argument("--aux-layers", default=None,
                         help="also store these decoder layers' outputs, for eagle3 drafts: 'default' or 'a,b,c'")
    datagen.add_argument("--shard-size", type=POSITIVE, default=32, help="samples per shard file")
    datagen.add_argument("--seed", type=int, default=0, help="clip and sampling seed")
    datagen.add_argument("--rank", type=NON_NEGATIVE, default=0, help="this process's share (with --world)")
    datagen.add_argument("--world", type=POSITIVE, default=None,
                         help="processes sharing the work, this one being --rank (default: from accelerate)")
    datagen.set_defaults(func=_datagen, on_interrupt=RESUMABLE)

    train = sub.add_parser(
        "train", parents=[common, target_flags],
        help="train a draft (Sparrow or a peer) on datagen output",
        description="Trains a draft in any visual mode with multi-token prediction and IVSB; settings come from "
                    "--config (JSON with DraftTrainConfig fields) and are overridden by flags (unset flags: the "
                    "config's value, else DraftTrainConfig's default). Ctrl-C or SIGTERM saves a checkpoint and "
                    "says how to resume. Multi-GPU: `accelerate launch -m sparrow_sd.cli train ...`.",
    )
    train.add_argument("--data", required=True, help="a `sparrow datagen` output folder")
    train.add_argument("--out", required=True, help="draft folder to write")
    train.add_argument("--config", default=None, help="JSON file of training settings")
    train.add_argument("--visual-mode", dest="visual_mode", choices=["none", "glimpse", "full", "pruned"],
                       help="what the draft reads of the video (default: none)")
    train.add_argument("--architecture", choices=["sparrow", "eagle3"],
                       help="the draft layer's form; eagle3 exports to vLLM/SGLang (needs --aux-layers data) "
                            "(default: sparrow)")
    train.add_argument("--ivsb", dest="ivsb", action=argparse.BooleanOptionalAction, default=None,
                       help="visual items carry the intermediate layer's states (default: on)")
    train.add_argument("--mtp-steps", dest="mtp_steps", type=POSITIVE,
                       help="multi-token prediction levels (default: 3)")
    train.add_argument("--epochs", type=POSITIVE, help="passes over the data (default: 2)")
    train.add_argument("--lr", type=POSITIVE_FLOAT, help="peak learning rate (default: 5e-4)")
    train.add_argument("--draft-vocab-size", dest="draft_vocab_size", type=POSITIVE,
                       help="reduced draft vocabulary (default: 2048)")
    train.add_argument("--mixed-precision", dest="mixed_precision", choices=["no", "bf16", "fp16"],
                       help="accelerate's mixed precision (default: no)")
    train.add_argument("--checkpoint-every", dest="checkpoint_every", type=NON_NEGATIVE,
                       help="write a resumable checkpoint every this many steps; 0: only when interrupted "
                            "(default: 500)")
    train.add_argument("--seed", type=int, help="training seed (default: 0)")
    train.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint")
    train.set_defaults(func=_train)

    export = sub.add_parser(
        "export", help="write a trained draft in another engine's format",
        description="Writes an eagle3-form draft (`sparrow train --architecture eagle3`) as a folder that vLLM's and "
                    "SGLang's EAGLE-3 loaders accept. Those engines run the draft over every prompt token, visual "
                    "ones included; see docs/eagle3-format.md.")
    export.add_argument("--to", choices=["eagle3"], required=True, help="target format")
    export.add_argument("--draft", required=True, help="a sparrow draft folder")
    export.add_argument("--out", required=True, help="folder to write")
    export.add_argument("--dtype", choices=["bf16", "fp16", "fp32"], default=None,
                        help="weights' dtype (default: the one the draft was trained in)")
    export.add_argument("--max-position-embeddings", type=int, default=None,
                        help="default: the target's, as the draft records it")
    export.set_defaults(func=_export)

    drafts = sub.add_parser("drafts", help="the draft suite: Sparrow and its peers on one dataset",
                            description="Builds the drafts the benchmark compares.")
    drafts_sub = drafts.add_subparsers(dest="drafts_command", required=True)
    suite = drafts_sub.add_parser(
        "build", parents=[common, target_flags],
        help="distil data once, then train Sparrow, full-visual, pruned and text-only drafts on it",
        description="Runs `sparrow datagen` (SynthVideo, --visual full --aux-layers default) into OUT/data, then trains each draft of "
                    "the suite into OUT/<name> with the same recipe, and writes OUT/suite.json. Rerun the same "
                    "command to resume: finished drafts are skipped, an interrupted one continues.",
    )
    suite.add_argument("--out", default="runs/drafts", help="folder for the data and the drafts")
    suite.add_argument("--count", type=POSITIVE, default=400, help="SynthVideo clips to distil")
    suite.add_argument("--frames", default="6,8,12,16", help="clip lengths to draw from (comma list)")
    suite.add_argument("--max-new-tokens", type=POSITIVE, default=256, help="longest response the target writes")
    suite.add_argument("--only", default=None, help="comma list of drafts (sparrow,full,pruned,text-only,sparrow-eagle3)")
    suite.add_argument("--config", default=None, help="JSON file of base training settings (DraftTrainConfig)")
    suite.add_argument("--epochs", type=POSITIVE, default=None, help="passes over the data (default: the config's)")
    suite.add_argument("--seed", type=int, default=0, help="data seed")
    suite.set_defaults(func=_drafts_build, on_interrupt=RESUMABLE)
    tau = drafts_sub.add_parser(
        "tau", parents=[common, target_flags, tree_flags],
        help="the acceptance table: tau of each draft at each visual-token length, lossless-checked",
        description="Greedy tau (mean accepted length) of every --draft on held-out SynthVideo clips with the "
                    "detailed-description prompt, one row per draft, one column per length. Each clip is "
                    "prefilled once and shared by plain decoding and every draft (tau needs no timing; "
                    "`sparrow bench` measures speed), and every draft's output is checked against plain decoding.")
    tau.add_argument("--draft", action="append", default=[], required=True, metavar="NAME=FOLDER",
                     help="a draft to measure (repeatable)")
    tau.add_argument("--visual-tokens", type=POSITIVE, nargs="+", default=[1000, 25000],
                     help="visual-token lengths measured")
    tau.add_argument("--clips", type=POSITIVE, default=4, help="clips per length")
    tau.add_argument("--max-new-tokens", type=POSITIVE, default=200, help="tokens decoded per clip")
    tau.add_argument("--out", default=None, help="JSON report to write")
    tau.set_defaults(func=_drafts_tau)
    pack = drafts_sub.add_parser(
        "pack", help="copy a trained draft for shipping: bf16 weights, its training record and a manifest",
        description="Writes DRAFT as OUT with its floating-point weights cast to --dtype (bf16 halves the size), "
                    "its training.json, and a manifest.json recording where it came from (the suite's data and "
                    "command when DRAFT sits in a `sparrow drafts build` folder).")
    pack.add_argument("--draft", required=True, help="a trained draft folder")
    pack.add_argument("--out", required=True, help="folder to write")
    pack.add_argument("--dtype", choices=["bf16", "fp32"], default="bf16", help="dtype of the written weights")
    pack.set_defaults(func=_drafts_pack)

    generate = sub.add_parser(
        "generate", parents=[common, target_flags, tree_flags],
        help="answer a question about a video file, streamed, with a draft or without",
        description="Decodes a video file with PyAV (frames sampled by count or fps, never a frame twice), asks "
                    "the target the question and streams the answer; with --draft, speculative decoding "
                    "(lossless), with --compare also plain decoding in the same run for the speedup and an "
                    "identity check. --draft takes a `sparrow train` folder or an EAGLE-3 folder "
                    "(`sparrow export`, vLLM / SGLang format).",
    )
    generate.add_argument("--draft", default=None, help="draft folder (from `sparrow train`); none: plain decoding")
    generate.add_argument("--video", required=True, help="video file (mp4, mkv, webm, ...)")
    generate.add_argument("--prompt", required=True, help="the question or instruction")
    generate.add_argument("--num-frames", type=POSITIVE, default=16,
                          help="frames sampled evenly over the video (at most the frames it has)")
    generate.add_argument("--fps", type=POSITIVE_FLOAT, default=None,
                          help="sample frames at this rate instead (at most each frame once)")
    generate.add_argument("--max-new-tokens", type=POSITIVE, default=256, help="longest answer")
    generate.add_argument("--temperature", type=NON_NEGATIVE_FLOAT, default=None,
                          help="0: greedy, above 0: sample; unset, this and the next four come from the model's "
                               "generation config, as in its own generate()")
    generate.add_argument("--top-p", type=PROBABILITY, default=None, help="nucleus sampling mass")
    generate.add_argument("--top-k", type=NON_NEGATIVE, default=None, help="0: off")
    generate.add_argument("--min-p", type=PROBABILITY, default=None, help="drop tokens below this share of the top one")
    generate.add_argument("--repetition-penalty", type=POSITIVE_FLOAT, default=None, help="1: off")
    generate.add_argument("--seed", type=int, default=0, help="sampling seed")
    generate.add_argument("--compare", action="store_true",
                          help="with --draft: also decode without the draft, report the speedup and check the "
                               "outputs are identical")
    generate.add_argument("--json", action="store_true", help="print one JSON report instead of text")
    generate.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                          help="progress bars on stderr for decoding the video and the target's prefill "
                               "(default: when stderr is a terminal)")
    generate.set_defaults(func=_generate)

    bench = sub.add_parser(
        "bench", parents=[common, target_flags, tree_flags],
        help="the visual-token sweep: every method side by side, tau and speedups, lossless check",
        description="Runs autoregressive decoding, Hugging Face prompt lookup and every --draft on the same "
                    "held-out SynthVideo clips at each visual-token length, with the detailed-description prompt; "
                    "writes bench.json, bench.md and bench.png to --out, and fails (exit 2) if any greedy output "
                    "differs from autoregressive decoding. Needs the `bench` extra (matplotlib).",
    )
    bench.add_argument("--draft", action="append", default=[], metavar="NAME=FOLDER",
                       help="a draft to compare (repeatable), e.g. sparrow=drafts/sparrow")
    bench.add_argument("--visual-tokens", type=POSITIVE, nargs="+", default=[1000, 3000, 13000, 25000],
                       help="visual-token lengths of the sweep")
    bench.add_argument("--clips", type=POSITIVE, default=3, help="clips per length")
    bench.add_argument("--max-new-tokens", type=POSITIVE, default=200, help="tokens decoded per clip")
    bench.add_argument("--temperatures", type=NON_NEGATIVE_FLOAT, nargs="+", default=[0.0],
                       help="sampling temperatures (0: greedy)")
    bench.add_argument("--quick", action="store_true", help="1k and 3k tokens, one clip, 64 new tokens")
    bench.add_argument("--no-prompt-lookup", action="store_true", help="leave out HF prompt lookup decoding")
    bench.add_argument("--tune-tree", action="store_true",
                       help="before the sweep, time candidate trees (chains and EAGLE-2 trees) with each draft on a "
                            "tuning clip at each length (one target prefill per length) and give each draft its "
                            "fastest there; overrides --tree-*")
    bench.add_argument("--out", default="runs/bench", help="folder for bench.json, bench.md, bench.png")
    bench.set_defaults(func=_bench)
    return parser


# --- running a command --------------------------------------------------------------------------


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that every ``finally`` runs (datagen flushes its last shard)."""


@contextlib.contextmanager
def _sigterm_as_exception():
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise Terminated

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _fail(message: str) -> None:
    print(f"sparrow: error: {' '.join(str(message).split())}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit:  # a bad flag (one line already printed), or --help
        return exit.code if isinstance(exit.code, int) else 2
    args.argv = argv
    try:
        with _sigterm_as_exception():
            return args.func(args)
    except RunInterrupted as stop:
        sys.stderr.write("\n" if getattr(sys.stderr, "isatty", lambda: False)() else "")
        print(f"sparrow: {' '.join(str(stop).split())}", file=sys.stderr)
        return stop.exit_code
    except SparrowError as err:
        _fail(str(err))
        return 2
    except KeyboardInterrupt as stop:
        signum = signal.SIGTERM if isinstance(stop, Terminated) else signal.SIGINT
        hint = getattr(args, "on_interrupt", None)
        print(f"sparrow: interrupted ({signum.name})" + (f"; {hint}" if hint else ""), file=sys.stderr)
        return 128 + int(signum)
    except Exception as err:  # a bug: one line unless asked for the traceback
        if os.environ.get("SPARROW_DEBUG"):
            raise
        _fail(f"internal error: {type(err).__name__}: {err} (this is a bug; SPARROW_DEBUG=1 shows the traceback)")
        return 1


if __name__ == "__main__":
    sys.exit(main())
