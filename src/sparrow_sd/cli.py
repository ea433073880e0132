"""The ``sparrow`` command line.

Flags are parsed in :func:`main` only (never at import), and every error that
sparrow-sd raises on purpose becomes a one-line message and exit code 2.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from .errors import SparrowError


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    from .demo import missing_demo_assets, run_testbed_demo

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

    torch_threads(args.threads)
    cfg = TrainConfig(seed=args.seed, steps=args.steps, rank=args.lora_rank, lr=args.lr)
    command = "sparrow " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:] else None
    if not build_testbed(args.out, cfg, work=args.work, language=args.language, command=command):
        print("build stopped; rerun the same command to resume from its checkpoint", file=sys.stderr)
        return 130
    if args.no_eval:
        return 0
    return _run_eval(args.out, args, update_manifest=True)


def _testbed_eval(args: argparse.Namespace) -> int:
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
    parser.add_argument("--lengths", type=int, nargs="+", default=list(default.lengths),
                        help="visual-token lengths to evaluate at (196 tokens per frame)")
    parser.add_argument("--clips", type=int, nargs="+", default=list(default.clips),
                        help="held-out clips per length (one number for all, or one per length; at least 2)")
    parser.add_argument("--max-new-tokens", type=int, default=default.max_new_tokens)
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
    import torch

    from .training.datagen import DatagenConfig, run_datagen
    from .training.sources import jsonl_samples, synth_samples

    torch.set_num_threads(args.threads)
    model, make_inputs = _load_target(args)
    cfg = DatagenConfig(max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                        ivsb_layer=args.ivsb_layer, glimpse_tokens=args.glimpse_tokens, visual=args.visual,
                        shard_size=args.shard_size, seed=args.seed,
                        aux_layers=_aux_layers(args.aux_layers, model))
    if args.source == "synth":
        frames = tuple(int(f) for f in args.frames.split(","))
        samples, total = synth_samples(make_inputs, args.count, frames=frames, seed=args.seed), args.count
    else:
        samples, total = jsonl_samples(args.source, make_inputs, num_frames=args.num_frames), None
    rank, world = args.rank, args.world
    if world is None:  # under `accelerate launch`, one process per device
        from accelerate import PartialState

        state = PartialState()
        rank, world = state.process_index, state.num_processes
    run_datagen(model, samples, args.out, cfg, rank=rank, world=world, total=total, log=print)
    return 0


def _aux_layers(text: str | None, model) -> tuple[int, ...] | None:
    """``--aux-layers``: None, "default" (EAGLE-3's three layers for this target) or "a,b,c"."""
    from .draft.config import default_aux_layers
    from .errors import InvalidInputError

    if text is None:
        return None
    if text == "default":
        return default_aux_layers(model.config.get_text_config().num_hidden_layers)
    try:
        return tuple(int(a) for a in text.split(","))
    except ValueError:
        raise InvalidInputError(f"--aux-layers takes 'default' or comma-separated layer indices, got {text!r}") from None


def _export(args: argparse.Namespace) -> int:
    from .draft.export import export_eagle3

    import torch

    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}.get(args.dtype)
    out = export_eagle3(args.draft, args.out, dtype=dtype, max_position_embeddings=args.max_position_embeddings)
    print(f"wrote an EAGLE-3 draft to {out} (config.json, model.safetensors)")
    return 0


def _train(args: argparse.Namespace) -> int:
    import dataclasses
    import json

    import torch

    from .training.trainer import DraftTrainConfig, train_draft

    torch.set_num_threads(args.threads)
    settings = {}
    if args.config:
        settings = json.loads(open(args.config).read())
    for field in dataclasses.fields(DraftTrainConfig):
        value = getattr(args, field.name, None)
        if value is not None:
            settings[field.name] = value
    known = {f.name for f in dataclasses.fields(DraftTrainConfig)}
    if unknown := set(settings) - known:
        from .errors import InvalidInputError

        raise InvalidInputError(f"unknown training settings {sorted(unknown)}; known: {sorted(known)}")
    model, _ = _load_target(args)
    train_draft(model, args.data, args.out, DraftTrainConfig(**settings), resume=args.resume)
    return 0


def _drafts_build(args: argparse.Namespace) -> int:
    import dataclasses
    import json
    import shlex

    import torch

    from .training.suite import SuiteConfig, build_suite
    from .training.trainer import DraftTrainConfig

    torch.set_num_threads(args.threads)
    base = DraftTrainConfig(**json.loads(open(args.config).read())) if args.config else DraftTrainConfig()
    if args.epochs is not None:
        base = dataclasses.replace(base, epochs=args.epochs)
    model, make_inputs = _load_target(args)
    suite = SuiteConfig(count=args.count, frames=tuple(int(f) for f in args.frames.split(",")),
                        max_new_tokens=args.max_new_tokens, seed=args.seed)
    names = args.only.split(",") if args.only else None
    build_suite(model, make_inputs, args.out, suite, base, names,
                command="sparrow " + shlex.join(sys.argv[1:]))
    return 0


def _drafts_tau(args: argparse.Namespace) -> int:
    import torch

    from .commands.bench import parse_drafts, run_acceptance
    from .proposers import TreeConfig

    torch.set_num_threads(args.threads)
    run_acceptance(args.model, parse_drafts(args.draft), args.visual_tokens, args.clips,
                   TreeConfig(depth=args.tree_depth, top_k=args.tree_top_k, total_tokens=args.tree_tokens),
                   args.max_new_tokens, args.out, dtype=args.dtype, device=args.device, language=args.language)
    return 0


def _drafts_pack(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

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
    import torch

    from .commands.generate import GenerateOptions, run_generate
    from .proposers import TreeConfig

    torch.set_num_threads(args.threads)
    if args.fps is not None:
        args.num_frames = None
    run_generate(GenerateOptions(
        model=args.model, video=args.video, prompt=args.prompt, draft=args.draft, num_frames=args.num_frames,
        fps=args.fps, max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p,
        top_k=args.top_k, min_p=args.min_p, repetition_penalty=args.repetition_penalty,
        seed=args.seed, dtype=args.dtype, device=args.device,
        tree=TreeConfig(depth=args.tree_depth, top_k=args.tree_top_k, total_tokens=args.tree_tokens),
        compare=args.compare, json=args.json, language=args.language))
    return 0


def _bench(args: argparse.Namespace) -> int:
    import torch

    from .bench import SweepConfig
    from .commands.bench import QUICK, BenchOptions, parse_drafts, run_bench
    from .proposers import TreeConfig

    torch.set_num_threads(args.threads)
    sweep = QUICK if args.quick else SweepConfig(
        visual_tokens=tuple(args.visual_tokens), clips=args.clips, max_new_tokens=args.max_new_tokens,
        temperatures=tuple(args.temperatures))
    run_bench(BenchOptions(model=args.model, drafts=parse_drafts(args.draft), sweep=sweep,
                           tree=TreeConfig(depth=args.tree_depth, top_k=args.tree_top_k, total_tokens=args.tree_tokens),
                           prompt_lookup=not args.no_prompt_lookup, tune_tree=args.tune_tree, out=args.out,
                           dtype=args.dtype,
                           device=args.device, language=args.language))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sparrow",
        description="Lossless speculative decoding for Hugging Face Video LLMs (the Sparrow method).",
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
    demo.add_argument("--frames", type=int, default=None,
                      help="video frames (default 16, 3,137 visual tokens; --tiny: 64)")
    demo.add_argument("--max-new-tokens", type=int, default=None, help="default 200 (--tiny: 64)")
    demo.add_argument("--draft", default=None, help="draft folder (default: the committed Sparrow draft)")
    demo.add_argument("--weights", default=None, help="testbed LoRA file (default: the committed one)")
    demo.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(func=_demo)

    testbed = sub.add_parser("testbed", help="build or evaluate the testbed target (Qwen2.5-Coder-0.5B inside "
                             "LLaVA-OneVision, with a scene reader)",
                             description="The testbed Video LLM that drafts are trained and benchmarked on.")
    testbed_sub = testbed.add_subparsers(dest="testbed_command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--language", default=None,
                        help="the converted Qwen2.5-Coder folder (default: $SPARROW_QWEN_DIR, then assets/cache "
                             "from `make assets`)")
    common.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    target_flags = argparse.ArgumentParser(add_help=False)
    target_flags.add_argument("--model", default="testbed",
                              help="'testbed', a local Hugging Face model folder, or tiny:<arch> (a tiny random "
                                   "model for smoke tests)")
    target_flags.add_argument("--dtype", choices=["bf16", "fp16", "fp32"], default="fp32", help="target dtype")
    target_flags.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    tree_flags = argparse.ArgumentParser(add_help=False)
    tree_flags.add_argument("--tree-depth", type=int, default=5, help="draft tree depth")
    tree_flags.add_argument("--tree-top-k", type=int, default=4, help="children expanded per node")
    tree_flags.add_argument("--tree-tokens", type=int, default=16, help="tree nodes verified per step")
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
    build.add_argument("--seed", type=int, default=recipe.seed)
    build.add_argument("--steps", type=int, default=recipe.steps, help="training steps (one clip each)")
    build.add_argument("--lora-rank", type=int, default=recipe.rank, help="rank of the language model's LoRA")
    build.add_argument("--lr", type=float, default=recipe.lr, help="peak learning rate")
    build.add_argument("--no-eval", action="store_true", help="skip the evaluation after training")
    _add_eval_flags(build)
    build.set_defaults(func=_testbed_build)

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
                    "loss mask and the target states a draft learns from. Rerun the same command to resume; "
                    "under `accelerate launch` each process takes its share of the samples.",
    )
    datagen.add_argument("--source", default="synth", help="'synth' (SynthVideo clips) or a JSONL file")
    datagen.add_argument("--out", required=True, help="output folder (shards and info.json)")
    datagen.add_argument("--count", type=int, default=400, help="synth: number of clips")
    datagen.add_argument("--frames", default="6,8,12,16", help="synth: clip lengths to draw from (comma list)")
    datagen.add_argument("--num-frames", type=int, default=16, help="JSONL: frames sampled per video")
    datagen.add_argument("--max-new-tokens", type=int, default=256)
    datagen.add_argument("--temperature", type=float, default=0.0, help="0: greedy responses")
    datagen.add_argument("--ivsb-layer", type=int, default=None, help="intermediate layer kept (default: middle)")
    datagen.add_argument("--glimpse-tokens", type=int, default=16)
    datagen.add_argument("--visual", choices=["pooled", "full"], default="full",
                         help="'full' keeps per-position visual states (the full-visual and pruned baselines need them)")
    datagen.add_argument("--aux-layers", default=None,
                         help="also store these decoder layers' outputs, for eagle3 drafts: 'default' or 'a,b,c'")
    datagen.add_argument("--shard-size", type=int, default=32)
    datagen.add_argument("--seed", type=int, default=0)
    datagen.add_argument("--rank", type=int, default=0)
    datagen.add_argument("--world", type=int, default=None,
                         help="processes sharing the work, this one being --rank (default: from accelerate)")
    datagen.set_defaults(func=_datagen)

    train = sub.add_parser(
        "train", parents=[common, target_flags],
        help="train a draft (Sparrow or a peer) on datagen output",
        description="Trains a draft in any visual mode with multi-token prediction and IVSB; settings come from "
                    "--config (JSON with DraftTrainConfig fields) and are overridden by flags. Multi-GPU: "
                    "`accelerate launch -m sparrow_sd.cli train ...`.",
    )
    train.add_argument("--data", required=True, help="a `sparrow datagen` output folder")
    train.add_argument("--out", required=True, help="draft folder to write")
    train.add_argument("--config", default=None, help="JSON file of training settings")
    train.add_argument("--visual-mode", dest="visual_mode", choices=["none", "glimpse", "full", "pruned"])
    train.add_argument("--architecture", choices=["sparrow", "eagle3"],
                       help="the draft layer's form; eagle3 exports to vLLM/SGLang (needs --aux-layers data)")
    train.add_argument("--ivsb", dest="ivsb", action=argparse.BooleanOptionalAction, default=None)
    train.add_argument("--mtp-steps", dest="mtp_steps", type=int)
    train.add_argument("--epochs", type=int)
    train.add_argument("--lr", type=float)
    train.add_argument("--draft-vocab-size", dest="draft_vocab_size", type=int)
    train.add_argument("--mixed-precision", dest="mixed_precision", choices=["no", "bf16", "fp16"])
    train.add_argument("--seed", type=int)
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
    suite.add_argument("--count", type=int, default=400, help="SynthVideo clips to distil")
    suite.add_argument("--frames", default="6,8,12,16", help="clip lengths to draw from (comma list)")
    suite.add_argument("--max-new-tokens", type=int, default=256)
    suite.add_argument("--only", default=None, help="comma list of drafts (sparrow,full,pruned,text-only,sparrow-eagle3)")
    suite.add_argument("--config", default=None, help="JSON file of base training settings (DraftTrainConfig)")
    suite.add_argument("--epochs", type=int, default=None)
    suite.add_argument("--seed", type=int, default=0)
    suite.set_defaults(func=_drafts_build)
    tau = drafts_sub.add_parser(
        "tau", parents=[common, target_flags, tree_flags],
        help="the acceptance table: tau of each draft at each visual-token length, lossless-checked",
        description="Greedy tau (mean accepted length) of every --draft on held-out SynthVideo clips with the "
                    "detailed-description prompt, one row per draft, one column per length. Each clip is "
                    "prefilled once and shared by plain decoding and every draft (tau needs no timing; "
                    "`sparrow bench` measures speed), and every draft's output is checked against plain decoding.")
    tau.add_argument("--draft", action="append", default=[], required=True, metavar="NAME=FOLDER",
                     help="a draft to measure (repeatable)")
    tau.add_argument("--visual-tokens", type=int, nargs="+", default=[1000, 25000])
    tau.add_argument("--clips", type=int, default=4, help="clips per length")
    tau.add_argument("--max-new-tokens", type=int, default=200)
    tau.add_argument("--out", default=None, help="JSON report to write")
    tau.set_defaults(func=_drafts_tau)
    pack = drafts_sub.add_parser(
        "pack", help="copy a trained draft for shipping: bf16 weights, its training record and a manifest",
        description="Writes DRAFT as OUT with its floating-point weights cast to --dtype (bf16 halves the size), "
                    "its training.json, and a manifest.json recording where it came from (the suite's data and "
                    "command when DRAFT sits in a `sparrow drafts build` folder).")
    pack.add_argument("--draft", required=True, help="a trained draft folder")
    pack.add_argument("--out", required=True, help="folder to write")
    pack.add_argument("--dtype", choices=["bf16", "fp32"], default="bf16")
    pack.set_defaults(func=_drafts_pack)

    generate = sub.add_parser(
        "generate", parents=[common, target_flags, tree_flags],
        help="answer a question about a video file, streamed, with a draft or without",
        description="Decodes a video file with PyAV (frames sampled by count or fps), asks the target the "
                    "question and streams the answer; with --draft, speculative decoding (lossless), with "
                    "--compare also plain decoding in the same run for the speedup and an identity check.",
    )
    generate.add_argument("--draft", default=None, help="draft folder (from `sparrow train`); none: plain decoding")
    generate.add_argument("--video", required=True, help="video file (mp4, mkv, webm, ...)")
    generate.add_argument("--prompt", required=True, help="the question or instruction")
    generate.add_argument("--num-frames", type=int, default=16, help="frames sampled evenly over the video")
    generate.add_argument("--fps", type=float, default=None, help="sample frames at this rate instead")
    generate.add_argument("--max-new-tokens", type=int, default=256)
    generate.add_argument("--temperature", type=float, default=None,
                          help="0: greedy, above 0: sample; unset, this and the next four come from the model's "
                               "generation config, as in its own generate()")
    generate.add_argument("--top-p", type=float, default=None)
    generate.add_argument("--top-k", type=int, default=None, help="0: off")
    generate.add_argument("--min-p", type=float, default=None)
    generate.add_argument("--repetition-penalty", type=float, default=None, help="1: off")
    generate.add_argument("--seed", type=int, default=0)
    generate.add_argument("--compare", action="store_true", help="also decode without the draft and compare")
    generate.add_argument("--json", action="store_true", help="print one JSON report instead of text")
    generate.set_defaults(func=_generate)

    bench = sub.add_parser(
        "bench", parents=[common, target_flags, tree_flags],
        help="the visual-token sweep: every method side by side, tau and speedups, lossless check",
        description="Runs autoregressive decoding, Hugging Face prompt lookup and every --draft on the same "
                    "held-out SynthVideo clips at each visual-token length, with the detailed-description prompt; "
                    "writes bench.json, bench.md and bench.png to --out, and fails (exit 2) if any greedy output "
                    "differs from autoregressive decoding.",
    )
    bench.add_argument("--draft", action="append", default=[], metavar="NAME=FOLDER",
                       help="a draft to compare (repeatable), e.g. sparrow=drafts/sparrow")
    bench.add_argument("--visual-tokens", type=int, nargs="+", default=[1000, 3000, 13000, 25000])
    bench.add_argument("--clips", type=int, default=3, help="clips per length")
    bench.add_argument("--max-new-tokens", type=int, default=200)
    bench.add_argument("--temperatures", type=float, nargs="+", default=[0.0])
    bench.add_argument("--quick", action="store_true", help="1k and 3k tokens, one clip, 64 new tokens")
    bench.add_argument("--no-prompt-lookup", action="store_true", help="leave out HF prompt lookup decoding")
    bench.add_argument("--tune-tree", action="store_true",
                       help="before the sweep, time candidate trees (chains and EAGLE-2 trees) with each draft on a "
                            "tuning clip at each length (one target prefill per length) and give each draft its "
                            "fastest there; overrides --tree-*")
    bench.add_argument("--out", default="runs/bench", help="folder for bench.json, bench.md, bench.png")
    bench.set_defaults(func=_bench)
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
