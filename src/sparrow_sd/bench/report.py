"""Turning a sweep into figures: per method and length, as JSON, a markdown table and a plot.

Ratios are taken over the same samples, as rates: decode speedup is the
method's decoded tokens per second of decode time over the autoregressive
reference's, summed over a length's samples; end-to-end speedup the same with
new tokens per second of total time. Under greedy decoding every method emits
the same tokens, so this is the ratio of times; sampled runs emit different
numbers of tokens, and a ratio of times would compare unequal work. tau is the
mean over samples of each run's tau, shown with its range over clips.

For the engine's methods the decode time is split per verification step into
draft, verify, commit and the rest, and set against the bound the split
implies: ``tau * T_AR / (T_verify + T_draft)``, with ``T_AR`` the reference's
decode time per step (one token) at the same length. Measured below the bound
means time goes where the model does not account for it (commit, overhead).
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from statistics import mean

from .sweep import SweepResult

COLUMNS = (
    ("tau", "tau", "{:.2f}"),
    ("tau_min", "tau min", "{:.2f}"),
    ("tau_max", "tau max", "{:.2f}"),
    ("decode_tokens_per_s", "decode tok/s", "{:.1f}"),
    ("decode_speedup", "decode speedup", "{:.2f}x"),
    ("end_to_end_speedup", "end-to-end speedup", "{:.2f}x"),
    ("target_prefill_s", "target prefill s", "{:.2f}"),
    ("draft_prefill_s", "draft prefill s", "{:.3f}"),
    ("draft_prefill_ratio", "draft/target prefill", "{:.2%}"),
    ("peak_memory_mb", "peak mem MB", "{:.0f}"),
    ("draft_cache_mb", "draft KV MB", "{:.2f}"),
    ("draft_ms_per_step", "draft ms/step", "{:.1f}"),
    ("verify_ms_per_step", "verify ms/step", "{:.1f}"),
    ("commit_ms_per_step", "commit ms/step", "{:.1f}"),
    ("other_ms_per_step", "other ms/step", "{:.1f}"),
    ("bound_speedup", "bound tau*T_AR/(T_v+T_d)", "{:.2f}x"),
    ("lossless", "lossless", "{}"),
)


def summarise(result: SweepResult, reference: str = "autoregressive") -> list[dict]:
    """One row per (temperature, visual tokens, method): by temperature, then length, methods in sweep order."""
    groups: dict[tuple, list] = defaultdict(list)
    for s in result.samples:
        groups[(s.temperature, s.visual_tokens, s.method)].append(s)
    rows = []
    for (temperature, tokens, method), samples in sorted(groups.items(), key=lambda g: g[0][:2]):
        ref = groups[(temperature, tokens, reference)]
        target_prefill = mean(s.run.target_prefill_s for s in samples)
        draft_prefill = mean(s.run.draft_prefill_s for s in samples)
        checks = [s.lossless for s in samples if s.lossless is not None]
        rows.append({
            "temperature": temperature,
            "visual_tokens": tokens,
            "actual_visual_tokens": round(mean(s.actual_visual_tokens for s in samples)),
            "method": method,
            "samples": len(samples),
            "new_tokens": sum(len(s.run.tokens) for s in samples),
            "tau": mean(s.run.tau for s in samples),
            "tau_min": min(s.run.tau for s in samples),  # the spread over clips, shown as it is
            "tau_max": max(s.run.tau for s in samples),
            "decode_tokens_per_s": _rate(samples, "decode_s", 1),
            "decode_speedup": _ratio(_rate(samples, "decode_s", 1), _rate(ref, "decode_s", 1)),
            "end_to_end_speedup": _ratio(_rate(samples, "total_s", 0), _rate(ref, "total_s", 0)),
            "target_prefill_s": target_prefill,
            "draft_prefill_s": draft_prefill,
            "draft_prefill_ratio": draft_prefill / target_prefill if target_prefill else 0.0,
            "peak_memory_mb": max(s.run.peak_memory_bytes for s in samples) / 2**20,
            "draft_cache_mb": max(s.run.draft_cache_bytes for s in samples) / 2**20,
            **_step_split(samples, ref),
            "lossless": ("reference" if not checks and method == reference else
                         "n/a (sampled)" if not checks else f"{sum(checks)}/{len(checks)}"),
        })
    return rows


def _ratio(mine: float, reference: float) -> float:
    return mine / reference if mine > 0 and reference > 0 else 0.0


def _rate(samples: list, clock: str, uncounted: int) -> float:
    """New tokens per second of ``clock`` (decode_s: the first token belongs to the prefill, so
    ``uncounted`` = 1; total_s: every token counts)."""
    seconds = sum(getattr(s.run, clock) for s in samples)
    tokens = sum(max(0, len(s.run.tokens) - uncounted) for s in samples)
    return tokens / seconds if seconds > 0 else 0.0


def _step_split(samples: list, ref: list) -> dict:
    """Milliseconds per verification step in each phase, and the bound they imply (for methods
    that are not the engine's, None: Hugging Face's generate() reports no steps)."""
    steps = sum(s.run.steps for s in samples)
    ref_steps = sum(s.run.steps for s in ref)
    if not steps or not ref_steps:
        return dict.fromkeys(("draft_ms_per_step", "verify_ms_per_step", "commit_ms_per_step",
                              "other_ms_per_step", "bound_speedup"))
    per_step = {phase: 1000 * sum(getattr(s.run, f"{phase}_s") for s in samples) / steps
                for phase in ("draft", "verify", "commit")}
    decode = 1000 * sum(s.run.decode_s for s in samples) / steps
    t_ar = 1000 * sum(s.run.decode_s for s in ref) / ref_steps
    tau = mean(s.run.tau for s in samples)
    return {"draft_ms_per_step": per_step["draft"], "verify_ms_per_step": per_step["verify"],
            "commit_ms_per_step": per_step["commit"],
            "other_ms_per_step": max(0.0, decode - sum(per_step.values())),
            "bound_speedup": tau * t_ar / (per_step["verify"] + per_step["draft"])}


def markdown_table(rows: list[dict]) -> str:
    head = ["T", "visual tokens", "method"] + [label for _, label, _ in COLUMNS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [f"{r['temperature']:g}", f"{r['actual_visual_tokens']:,}", r["method"]]
        cells += ["-" if r[key] is None else fmt.format(r[key]) for key, _, fmt in COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: str | Path) -> Path:
    """Decode speedup and tau against visual tokens, one line per method (greedy rows first)."""
    from ..paths import require_extra

    require_extra("matplotlib", "bench.png")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    temperature = min(r["temperature"] for r in rows)
    chosen = [r for r in rows if r["temperature"] == temperature]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for method in dict.fromkeys(r["method"] for r in chosen):
        mine = sorted((r for r in chosen if r["method"] == method), key=lambda r: r["actual_visual_tokens"])
        xs = [r["actual_visual_tokens"] for r in mine]
        left.plot(xs, [r["decode_speedup"] for r in mine], marker="o", label=method)
        right.plot(xs, [r["tau"] for r in mine], marker="o", label=method)
    left.set(xlabel="visual tokens", ylabel="decode speedup over autoregressive",
             title=f"decode speedup (T={temperature:g})")
    right.set(xlabel="visual tokens", ylabel="tau (tokens per verification)", title="mean accepted length")
    for ax in (left, right):
        ax.grid(alpha=0.3)
    left.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_reports(result: SweepResult, out_dir: str | Path, header: dict | None = None) -> dict[str, Path]:
    """``bench.json`` (settings, every sample, the summary), ``bench.md`` and ``bench.png``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = summarise(result)
    data = {**(header or {}), **result.to_dict(), "summary": rows}
    paths = {"json": out_dir / "bench.json", "markdown": out_dir / "bench.md", "plot": out_dir / "bench.png"}
    paths["json"].write_text(json.dumps(data, indent=2) + "\n")
    settings = "\n".join(f"- `{name}`: {json.dumps(s)}" for name, s in result.methods.items())
    paths["markdown"].write_text(markdown_table(rows) + "\nSettings:\n" + settings + "\n")
    plot(rows, paths["plot"])
    return paths
