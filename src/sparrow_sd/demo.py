"""The embedded demo: the engine end to end on a tiny random Video LLM.

Until a trained testbed and draft exist, the demo shows what can be shown
honestly with random weights: the three decoding paths produce the same tokens
as Hugging Face's ``generate``, and what tau looks like for a useless draft (a
random one, tau ~ 1) and for a perfect one (an oracle that proposes the
target's own continuation: an upper bound on acceptance, not a result).
"""

from __future__ import annotations

import time

import torch
from rich.console import Console
from rich.table import Table

from .generate import GenerationResult, SpeculativeGenerator
from .proposers import SparrowProposer, TreeConfig
from .testing import build_tiny_model, make_video_inputs
from .testing.drafts import tiny_draft
from .testing.oracle import OracleProposer


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
    runs: dict[str, GenerationResult] = {}
    methods = {
        "autoregressive": None,
        "sparrow (random draft)": SparrowProposer(tiny_draft(model, "none", seed=seed), tree),
        "oracle (upper bound)": OracleProposer(reference, depth=5, branching=2, error_rate=0.1,
                                               vocab_size=spec.text_token_range.stop, seed=seed),
    }
    for name, proposer in methods.items():
        runs[name] = SpeculativeGenerator(model, proposer).generate(inputs, max_new_tokens=max_new_tokens)

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
