"""The embedded demo.

With the committed testbed weights and the committed Sparrow draft
(:func:`run_testbed_demo`): a SynthVideo clip is written to a real mp4,
decoded back with PyAV, described by the testbed target with the Sparrow
draft while the answer streams, then decoded again without the draft in the
same run, so the report's decode speedup and "identical" are measured, not
quoted.

Without them (:func:`run_demo`, ``--tiny``): the engine on a tiny random Video
LLM, showing what can be shown honestly with random weights: the decoding
paths produce the same tokens as Hugging Face's ``generate``, and what tau
looks like for a useless draft (a random one, tau ~ 1) and for a perfect one
(an oracle that proposes the target's own continuation: an upper bound on
acceptance, not a result).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from ..errors import AssetError
from ..generate import GenerationResult, SpeculativeGenerator, prefill
from ..synth import bounded_num_events, make_clip, write_mp4
from ..proposers import NullProposer, DraftProposer, TreeConfig
from ..targets import wrap_target
from ..testing import build_tiny_model, make_video_inputs
from ..testing.drafts import tiny_draft
from ..testing.oracle import OracleProposer

# beside the committed testbed weights (src/sparrow_sd/testbed/drafts/<name>), packed by `sparrow drafts pack`
COMMITTED_DRAFTS = Path(__file__).resolve().parents[1] / "testbed" / "drafts"


DEMO_CLIP_SEED = 400_000  # held out: testbed training uses 1,000,000+, draft data 2,000,000+
DEMO_PROMPT = "Describe this video in detail."  # the testbed's describe prompt


def committed_draft(name: str = "sparrow") -> Path:
    """The folder of a committed testbed draft, or an AssetError saying how to build it."""
    folder = COMMITTED_DRAFTS / name
    if not (folder / "model.safetensors").is_file():
        raise AssetError(f"the committed testbed draft {name!r} is missing ({folder}); build it with "
                         "`sparrow drafts build` and copy it there")
    return folder


def missing_demo_assets() -> str | None:
    """Why the testbed demo cannot run here (committed weights or draft absent), or None."""
    from ..testbed.loader import COMMITTED_WEIGHTS

    if not COMMITTED_WEIGHTS.is_file():
        return "the trained testbed weights are not committed yet"
    try:
        committed_draft("sparrow")
    except AssetError:
        return "the trained Sparrow draft for the testbed is not committed yet"
    return None


def run_testbed_demo(frames: int = 16, max_new_tokens: int = 200, seed: int = 0, threads: int = 2,
                     draft: str | Path | None = None, weights: str | Path | None = None) -> int:
    """Describe a held-out SynthVideo mp4 with the testbed and the Sparrow draft; 0 if the outputs matched."""
    from .generate import GenerateOptions, run_generate

    console = Console()
    torch.set_num_threads(threads)
    draft = Path(draft) if draft else committed_draft("sparrow")
    model = f"testbed:{weights}" if weights else "testbed"
    with tempfile.TemporaryDirectory() as tmp:
        clip = make_clip(DEMO_CLIP_SEED + seed, num_frames=frames, height=112, width=112,
                         num_events=bounded_num_events(frames))
        video = write_mp4(clip.frames, Path(tmp) / "demo.mp4")
        console.print(f"[bold]sparrow demo[/bold]: testbed Video LLM (Qwen2.5-Coder-0.5B inside LLaVA-OneVision, "
                      f"scene reader), Sparrow draft "
                      f"{draft}, a {frames}-frame SynthVideo mp4 ({video.stat().st_size / 1e3:.0f} kB); "
                      f"prompt: {DEMO_PROMPT!r}\n", soft_wrap=True)
        report = run_generate(GenerateOptions(model=model, video=str(video), prompt=DEMO_PROMPT, draft=str(draft),
                                              num_frames=frames, max_new_tokens=max_new_tokens, compare=True,
                                              seed=seed))
    ok = bool(report["identical_to_autoregressive"])
    console.print("[green]output identical to plain decoding[/green]" if ok else
                  "[red]output differs from plain decoding: this is a bug[/red]")
    return 0 if ok else 1


def run_demo(arch: str = "qwen2_5_vl", frames: int = 64, max_new_tokens: int = 64, seed: int = 0) -> int:
    console = Console()
    torch.manual_seed(seed)
    model = build_tiny_model(arch, seed=seed)
    spec = model.tiny_spec
    prompt = torch.randint(0, spec.text_token_range.stop, (12,), generator=torch.Generator().manual_seed(seed))
    inputs = make_video_inputs(arch, model, num_frames=frames, prompt_ids_before=prompt[:4].tolist(),
                               prompt_ids_after=prompt[4:].tolist(), seed=seed)
    visual = int((inputs["input_ids"] == spec.video_token_id).sum())
    console.print(f"[bold]sparrow demo[/bold]: tiny random {arch}, {visual} visual tokens, "
                  f"{inputs['input_ids'].shape[1]} prompt tokens, up to {max_new_tokens} new tokens")

    t0 = time.perf_counter()
    reference = model.generate(**inputs, do_sample=False, max_new_tokens=max_new_tokens)[0, inputs["input_ids"].shape[1]:]
    reference = reference.tolist()
    hf_s = time.perf_counter() - t0

    tree = TreeConfig(depth=5, top_k=4, total_tokens=16)
    target = wrap_target(model)
    proposers = {
        "autoregressive": NullProposer(),
        "sparrow (random draft)": DraftProposer(tiny_draft(target, "none", seed=seed), tree),
        "oracle (upper bound)": OracleProposer(reference, depth=5, branching=2, error_rate=0.1,
                                               vocab_size=spec.text_token_range.stop, seed=seed),
    }
    runs: dict[str, GenerationResult] = {}
    with prefill(target, inputs, max_new_tokens, proposers.values()) as session:  # every method decodes from it
        for name, proposer in proposers.items():
            runs[name] = SpeculativeGenerator(target, proposer).decode(session, max_new_tokens)

    table = Table(title="same prompt, same cache, greedy")
    for col in ("method", "tokens", "identical to generate()", "steps", "tau", "decode s", "decode speedup"):
        table.add_column(col)
    base = runs["autoregressive"].stats.decode_s
    for name, run in runs.items():
        s = run.stats
        table.add_row(name, str(s.new_tokens), "yes" if run.tokens == reference else "[red]NO[/red]", str(s.steps),
                      f"{s.tau:.2f}", f"{s.decode_s:.3f}", f"{base / s.decode_s:.2f}x")
    console.print(table)
    console.print(f"Hugging Face generate(): {hf_s:.3f} s in all. Tiny random models decode in milliseconds, "
                  "so timings here show overheads, not the speedups of a real model.")
    ok = all(run.tokens == reference for run in runs.values())
    console.print("[green]all outputs identical[/green]" if ok else "[red]outputs differ: this is a bug[/red]")
    return 0 if ok else 1
