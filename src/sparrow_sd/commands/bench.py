"""``sparrow bench``: the visual-token sweep on the testbed (or any target), all methods in one run.

Clips are held-out SynthVideo clips (seeds from ``BENCH_SEED_BASE``) at the
frame counts that give the requested visual-token lengths; the prompt is the
detailed-description prompt. Reports go to ``--out`` (``bench.json``,
``bench.md``, ``bench.png``); a greedy output that differs from plain
decoding fails the run after the reports are written.
"""

from __future__ import annotations

import platform
import shlex
import sys
from dataclasses import asdict, dataclass, field

import torch

from ..bench import (Autoregressive, DraftMethod, HFGenerate, PromptLookup, SweepConfig, check_lossless, run_sweep,
                     write_reports)
from ..bench.tune import TREE_CANDIDATES, tune_tree, tuning_prefill
from ..errors import InvalidInputError
from ..models import load_target
from ..precision import cpu_description
from ..proposers import TreeConfig
from ..synth import bounded_num_events, make_clip
from ..targets import wrap_target
from .drafts import read_draft

BENCH_SEED_BASE = 300_000
TUNING_CLIP = 1_000  # clip index of the tree-tuning input: far past any --clips count
TUNING_TOKENS = 64  # new tokens each candidate tree decodes while tuning
DESCRIBE = "Describe this video in detail."
QUICK = SweepConfig(visual_tokens=(1000, 3000), clips=1, max_new_tokens=64, temperatures=(0.0,))


@dataclass
class BenchOptions:
    model: str = "testbed"
    drafts: dict[str, str] = field(default_factory=dict)  # method name -> draft folder
    sweep: SweepConfig = SweepConfig()
    tree: TreeConfig = TreeConfig()
    hf_generate: bool = True  # Hugging Face generate(), plain: autoregressive on its own loop and prefill
    prompt_lookup: bool = True
    tune_tree: bool = False  # pick each draft's tree by timing candidates on a tuning clip first
    out: str = "runs/bench"
    dtype: str = "fp32"
    device: str = "cpu"
    language: str | None = None
    frame_size: tuple[int, int] = (112, 112)


def frames_for(model, make_inputs, tokens: int, frame_size) -> int:
    """The frame count whose video comes closest to ``tokens`` visual tokens, from measured counts.

    One and two frames are counted with the model's own processor: equal counts
    mean frames go in pairs (Qwen-VL's temporal patch), otherwise the
    difference is the per-frame count and the rest is fixed (LLaVA-OneVision's
    closing newline). ``model``: the target or its adapter.
    """
    target = wrap_target(model)
    count = [target.expected_video_tokens(make_inputs("x", torch.zeros(n, *frame_size, 3, dtype=torch.uint8).numpy()))
             for n in (1, 2)]
    if count[0] == count[1]:
        return max(2, 2 * round(tokens / count[1]))
    per_frame = count[1] - count[0]
    return max(1, round((tokens - (count[0] - per_frame)) / per_frame))


def load_drafts(folders: dict[str, str], target, device: str) -> dict:
    """name -> draft (a `sparrow train` or EAGLE-3 folder), each loaded in the target's dtype and checked
    to be made for this target."""
    drafts = {}
    for name, folder in folders.items():
        drafts[name] = read_draft(folder, device=device, dtype=target.dtype)
        drafts[name].check_target(target)
    return drafts


def sample_maker(loaded, frame_size=(112, 112), target=None):
    """``make_sample(visual_tokens, clip) -> (inputs, actual visual tokens)``: the held-out benchmark clips
    (seeds from ``BENCH_SEED_BASE``) with the detailed-description prompt. ``target``: the model's adapter,
    when the caller has one."""
    target = target if target is not None else wrap_target(loaded.model)

    def make_sample(tokens: int, clip: int):
        frames = frames_for(target, loaded.make_inputs, tokens, frame_size)
        video = make_clip(BENCH_SEED_BASE + clip, num_frames=frames, height=frame_size[0], width=frame_size[1],
                          num_events=bounded_num_events(frames)).frames
        inputs = loaded.make_inputs(DESCRIBE, video)
        return inputs, target.expected_video_tokens(inputs)

    return make_sample


def check_sweep(sweep: SweepConfig) -> None:
    """Refuse a sweep that measures nothing (no clip, no length, a length below one token)."""
    if sweep.clips < 1:
        raise InvalidInputError(f"--clips must be at least 1, got {sweep.clips}")
    if not sweep.visual_tokens or min(sweep.visual_tokens) < 1:
        raise InvalidInputError(f"--visual-tokens must be positive lengths, got {list(sweep.visual_tokens)}")
    if sweep.max_new_tokens < 1:
        raise InvalidInputError(f"--max-new-tokens must be at least 1, got {sweep.max_new_tokens}")
    if sweep.sample_lengths is not None:
        if stray := sorted(set(sweep.sample_lengths) - set(sweep.visual_tokens)):
            raise InvalidInputError(f"--sample-at {stray} is not among --visual-tokens {list(sweep.visual_tokens)}")
        if not any(t > 0 for t in sweep.temperatures):
            raise InvalidInputError("--sample-at needs a sampling temperature in --temperatures (e.g. 0 1)")


def run_bench(opts: BenchOptions, argv: list[str] | None = None) -> dict:
    check_sweep(opts.sweep)
    loaded = load_target(opts.model, dtype=opts.dtype, device=opts.device, language=opts.language)
    target = wrap_target(loaded.model)
    methods = [Autoregressive(target)]
    if opts.hf_generate:
        methods.append(HFGenerate(loaded.model))
    if opts.prompt_lookup:
        methods.append(PromptLookup(loaded.model))
    for name, draft in load_drafts(opts.drafts, target, opts.device).items():
        methods.append(DraftMethod(target, draft, opts.tree, name))
    make_sample = sample_maker(loaded, opts.frame_size, target)
    tuning = {}
    if opts.tune_tree:
        tuning = _tune_trees(target, [m for m in methods if isinstance(m, DraftMethod)], make_sample,
                             opts.sweep.visual_tokens)
    header = {
        "command": "sparrow " + shlex.join(argv if argv is not None else sys.argv[1:]),  # argv names the command
        "machine": {"platform": platform.platform(), "processor": cpu_description(),
                    "torch_threads": torch.get_num_threads(), "device": opts.device,
                    "cuda": torch.cuda.get_device_name() if opts.device.startswith("cuda") else None},
        "model": opts.model, "dtype": opts.dtype, "drafts": opts.drafts, "tree_tuning": tuning,
    }
    # the reports are rewritten after each length, so a long sweep cut short keeps what it measured
    result = run_sweep(methods, make_sample, opts.sweep,
                       on_length_done=lambda partial: write_reports(partial, opts.out, {**header, "complete": False}))
    paths = write_reports(result, opts.out, {**header, "complete": True})
    print(paths["markdown"].read_text())
    print(f"reports: {', '.join(str(p) for p in paths.values())}")
    check_lossless(result)
    return header


def _tune_trees(target, methods: list[DraftMethod], make_sample, lengths) -> dict:
    """Give each draft, at each length of the sweep, the candidate tree that decodes a tuning clip fastest.

    The tuning clip (index ``TUNING_CLIP``) is never one of the benchmarked clips.
    Tuning is per length because the best tree moves with the context: on the
    2-core CPU an 8-node verify costs ~1.7x a one-token step at 1k visual tokens but
    ~2x at 25k, and a draft that reads the video (full-visual) pays more per draft
    step at 25k too. All drafts and candidates at one length share one target
    prefill (a :class:`~sparrow_sd.targets.TargetSession`), so a 25k-token length costs one prefill.
    """
    tuning = {"clip": TUNING_CLIP, "max_new_tokens": TUNING_TOKENS, "lengths": {}}
    for tokens in lengths:
        inputs, actual = make_sample(tokens, TUNING_CLIP)
        session = tuning_prefill(target, [m.draft for m in methods], inputs, TREE_CANDIDATES, TUNING_TOKENS)
        tuning["lengths"][str(tokens)] = {"visual_tokens": actual, "drafts": {}}
        for method in methods:
            tree, trials = tune_tree(target, method.draft, inputs, max_new_tokens=TUNING_TOKENS, session=session)
            method.trees[tokens] = tree
            tuning["lengths"][str(tokens)]["drafts"][method.name] = {
                "chosen": asdict(tree), "trials": [t.to_dict() for t in trials]}
            best = "  ".join(f"{t.tree.depth}/{t.tree.top_k}/{t.tree.total_tokens}: tau {t.tau:.2f}, "
                             f"{1000 * t.decode_s_per_token:.0f} ms/token" for t in trials)
            print(f"tree tuning at {actual} visual tokens, {method.name} (depth/top_k/tokens): {best} "
                  f"-> {asdict(tree)}", flush=True)
        session.release()
    return tuning


def parse_drafts(items: list[str]) -> dict[str, str]:
    """``NAME=FOLDER`` pairs (the name labels the method in the reports)."""
    drafts = {}
    for item in items:
        name, sep, folder = item.partition("=")
        if not sep or not name or not folder:
            raise InvalidInputError(f"--draft expects NAME=FOLDER (e.g. sparrow=drafts/sparrow), got {item!r}")
        drafts[name] = folder
    return drafts


def run_acceptance(model: str, drafts: dict[str, str], lengths, clips: int, tree: TreeConfig, max_new_tokens: int,
                   out: str | None, dtype: str = "fp32", device: str = "cpu", language: str | None = None,
                   argv: list[str] | None = None) -> dict:
    """``sparrow drafts tau``: the acceptance table (see :mod:`sparrow_sd.bench.acceptance`)."""
    import json
    from pathlib import Path

    from ..bench.acceptance import acceptance_markdown, acceptance_table, check_acceptance_lossless

    loaded = load_target(model, dtype=dtype, device=device, language=language)
    target = wrap_target(loaded.model)
    loaded_drafts = load_drafts(drafts, target, device)
    rows = acceptance_table(target, loaded_drafts, sample_maker(loaded, target=target), lengths, clips, tree,
                            max_new_tokens)
    table = acceptance_markdown(rows)
    report = {"command": "sparrow " + shlex.join(argv if argv is not None else sys.argv[1:]),
              "machine": {"platform": platform.platform(), "torch_threads": torch.get_num_threads(), "device": device},
              "model": model, "drafts": drafts, "tree": asdict(tree), "clips": clips, "max_new_tokens": max_new_tokens,
              "rows": [r.to_dict() for r in rows], "markdown": table}
    print(table)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(report, indent=1) + "\n")
        print(f"report: {out}")
    check_acceptance_lossless(rows)
    return report


# --- the command line ---------------------------------------------------------------------------


def add_parser(sub, name: str, help: str) -> None:
    """``sparrow bench``: its flags, defaulting to :class:`SweepConfig`'s and :class:`BenchOptions`'s."""
    from . import flags
    from .flags import NON_NEGATIVE_FLOAT, POSITIVE

    sweep = SweepConfig()
    bench = sub.add_parser(
        name, help=help,
        description="Runs autoregressive decoding (sparrow-sd's loop and Hugging Face generate()), Hugging Face prompt "
                    "lookup and every --draft on the same "
                    "held-out SynthVideo clips at each visual-token length, with the detailed-description prompt; "
                    "writes bench.json, bench.md and bench.png to --out, and fails (exit 2) if any greedy output "
                    "differs from autoregressive decoding. Needs the `bench` extra (matplotlib).",
    )
    flags.add_common_flags(bench)
    flags.add_target_flags(bench)
    flags.add_tree_flags(bench)
    bench.add_argument("--draft", action="append", default=[], metavar="NAME=FOLDER",
                       help="a draft to compare (repeatable), e.g. sparrow=drafts/sparrow")
    bench.add_argument("--visual-tokens", type=POSITIVE, nargs="+", default=list(sweep.visual_tokens),
                       help="visual-token lengths of the sweep")
    bench.add_argument("--clips", type=POSITIVE, default=sweep.clips, help="clips per length")
    bench.add_argument("--max-new-tokens", type=POSITIVE, default=sweep.max_new_tokens, help="tokens decoded per clip")
    bench.add_argument("--temperatures", type=NON_NEGATIVE_FLOAT, nargs="+", default=list(sweep.temperatures),
                       help="sampling temperatures (0: greedy)")
    bench.add_argument("--sample-at", type=POSITIVE, nargs="+", default=None, metavar="VISUAL_TOKENS",
                       help="run the sampling temperatures only at these of --visual-tokens (default: at every "
                            "length); greedy runs at all")
    bench.add_argument("--quick", action="store_true", help="1k and 3k tokens, one clip, 64 new tokens")
    bench.add_argument("--no-hf-generate", action="store_true",
                       help="leave out Hugging Face's plain generate() (it pays its own target prefill per clip)")
    bench.add_argument("--no-prompt-lookup", action="store_true", help="leave out HF prompt lookup decoding")
    bench.add_argument("--tune-tree", action="store_true",
                       help="before the sweep, time candidate trees (chains and EAGLE-2 trees) with each draft on a "
                            "tuning clip at each length (one target prefill per length) and give each draft its "
                            "fastest there; overrides --tree-*")
    bench.add_argument("--out", default=BenchOptions.out, help="folder for bench.json, bench.md, bench.png")
    bench.set_defaults(func=run)


def run(args) -> int:
    """``sparrow bench``: the flags, the drafts, the extra and the output folder checked, then :func:`run_bench`."""
    from ..paths import require_extra
    from . import flags

    sweep = QUICK if args.quick else SweepConfig(
        visual_tokens=tuple(args.visual_tokens), clips=args.clips, max_new_tokens=args.max_new_tokens,
        temperatures=tuple(args.temperatures),
        sample_lengths=tuple(args.sample_at) if args.sample_at else None)
    check_sweep(sweep)
    drafts = parse_drafts(args.draft)
    flags.check_draft_folders(drafts)
    require_extra("matplotlib", "sparrow bench (it draws bench.png)")
    flags.writable(args.out)
    flags.check_device(args)
    flags.set_threads(args.threads)
    run_bench(BenchOptions(model=args.model, drafts=drafts, sweep=sweep, tree=flags.tree_config(args),
                           hf_generate=not args.no_hf_generate,
                           prompt_lookup=not args.no_prompt_lookup, tune_tree=args.tune_tree, out=args.out,
                           dtype=args.dtype, device=args.device, language=args.language), argv=args.argv)
    return 0
