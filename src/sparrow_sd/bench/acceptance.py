"""The drafts' acceptance table: tau of every draft at each visual-token length, one prefill per clip.

tau (the mean accepted length) depends on the draft, the tree and the text the
target writes, not on how long a forward takes, so it needs no timing and no
repeated prefills: each clip is prefilled once (a
:class:`~sparrow_sd.targets.TargetSession`, see :func:`~sparrow_sd.generate.prefill`)
and plain decoding and every draft decode from that same prefill. At 25k visual
tokens that is one target prefill (minutes on a CPU) per clip instead of one per
draft, which is what makes several long clips affordable. Every greedy draft
decode is checked against the plain decode of the same clip; speed is the
benchmark's job (``sparrow bench``, which also decodes every method of a clip
from one prefill, and times each decode).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from statistics import mean, pstdev

from ..generate import SpeculativeGenerator, prefill
from ..progress import progress as progress_bar
from ..proposers import DraftProposer, TreeConfig
from ..targets import wrap_target
from .sweep import LosslessnessError


@dataclass
class AcceptanceRow:
    draft: str
    visual_tokens: int  # requested
    actual_visual_tokens: list[int] = field(default_factory=list)
    taus: list[float] = field(default_factory=list)
    new_tokens: list[int] = field(default_factory=list)
    lossless: list[bool] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {**asdict(self), "tau": mean(self.taus), "tau_std": pstdev(self.taus),
                "lossless_count": f"{sum(self.lossless)}/{len(self.lossless)}"}


def acceptance_table(model, drafts: dict, make_sample: Callable[[int, int], tuple[dict, int]],
                     lengths: Sequence[int], clips: int, tree: TreeConfig, max_new_tokens: int = 200,
                     progress: bool = True) -> list[AcceptanceRow]:
    """tau per (draft, length) over ``clips`` clips; greedy, every draft checked against plain decoding.

    ``model``: the target (or its adapter); ``drafts``: name -> :class:`~sparrow_sd.draft.Draft`;
    ``make_sample(length, clip)`` -> (inputs, actual visual tokens), as in :func:`~.sweep.run_sweep`.
    """
    target = wrap_target(model)
    plain_decoder = SpeculativeGenerator(target)
    decoders = {name: SpeculativeGenerator(target, DraftProposer(draft, tree)) for name, draft in drafts.items()}
    proposers = [decoder.proposer for decoder in decoders.values()]
    rows = {(name, n): AcceptanceRow(name, n) for n in lengths for name in drafts}
    bar = progress_bar(len(lengths) * clips * (len(drafts) + 1), "tau", "decode", enabled=progress)
    for n in lengths:
        for clip in range(clips):
            inputs, actual = make_sample(n, clip)
            bar.set_postfix_str(f"{actual} visual tokens, clip {clip}: prefill")
            with prefill(target, inputs, max_new_tokens, proposers) as session:
                plain = plain_decoder.decode(session, max_new_tokens).tokens
                bar.update(1)
                for name, decoder in decoders.items():
                    bar.set_postfix_str(f"{actual} visual tokens, clip {clip}: {name}")
                    result = decoder.decode(session, max_new_tokens)
                    row = rows[(name, n)]
                    row.actual_visual_tokens.append(actual)
                    row.taus.append(result.stats.tau)
                    row.new_tokens.append(len(result.tokens))
                    row.lossless.append(result.tokens == plain)
                    bar.update(1)
    bar.close()
    return list(rows.values())


def acceptance_markdown(rows: Sequence[AcceptanceRow]) -> str:
    """Drafts as rows, lengths as columns: mean tau (spread over clips), and the 25k/1k ratio."""
    lengths = sorted({r.visual_tokens for r in rows})
    names = list(dict.fromkeys(r.draft for r in rows))
    by = {(r.draft, r.visual_tokens): r for r in rows}
    head = ["draft"] + [f"tau @ ~{round(mean(by[(names[0], n)].actual_visual_tokens)):,} visual tokens"
                        for n in lengths]
    if len(lengths) > 1:
        head.append("longest / shortest")
    head.append("lossless")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name in names:
        cells = [name]
        for n in lengths:
            r = by[(name, n)]
            cells.append(f"{mean(r.taus):.2f} ± {pstdev(r.taus):.2f}")
        if len(lengths) > 1:
            cells.append(f"{mean(by[(name, lengths[-1])].taus) / mean(by[(name, lengths[0])].taus):.3f}")
        checks = [ok for n in lengths for ok in by[(name, n)].lossless]
        cells.append(f"{sum(checks)}/{len(checks)}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def check_acceptance_lossless(rows: Sequence[AcceptanceRow]) -> None:
    bad = [(r.draft, r.visual_tokens) for r in rows if not all(r.lossless)]
    if bad:
        raise LosslessnessError(f"greedy draft output differs from plain decoding for {bad}")
