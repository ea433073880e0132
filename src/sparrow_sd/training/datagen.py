"""``sparrow datagen``: self-distilled draft-training data, in resumable bf16 shards.

For each sample (an id and the target's model inputs for one video prompt)
the target writes its own response (greedy, or sampled with a temperature)
through sparrow-sd's plain decoding loop, then one forward over prompt +
response captures what the draft learns from (see :mod:`.records`). The draft
so learns the target's distribution, not a dataset's.

Samples are written in shards of ``shard_size`` (the format and its one reader
and writer are in :mod:`.shards`). A new shard always takes an index past every
file of its rank already there, so no rerun can overwrite a shard. A rerun reads
every shard and skips the samples it holds: an interrupted run resumes without
duplicating or losing samples. A damaged shard (truncated, unreadable) is moved
aside as ``.damaged`` and its samples written again; each rank's ledger lists
what every shard it wrote holds, so a shard that disappears is named too. Both
are logged and recorded in ``datagen-rank{rank}.json``, the run's record, with
what the run wrote. The folder and ``info.json`` appear with the first shard: a
run that fails before writing anything leaves nothing behind. ``rank`` /
``world`` split the sample list (sample ``i`` belongs to rank ``i % world``), one
process per device, which is how ``accelerate launch`` runs it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ..errors import InvalidInputError
from ..generate import SpeculativeGenerator
from ..progress import count_done_before, progress as progress_bar
from ..targets import TargetAdapter, TargetPrefill, TargetSession, TargetVerify, wrap_target
from ..tree import DraftTree
from .records import make_record
from .shards import (  # check_data_shards and data_info are also read from here
    FORMAT,
    SHARD_GLOB,
    ShardWriter,
    check_data_shards,
    data_info,
    read_ledger,
    shard_ids,
    shard_rank_index,
)

__all__ = ["DatagenConfig", "Sample", "ShardCheck", "check_data_shards", "check_shards", "completed_ids",
           "data_info", "distil", "run_datagen", "settings_differences"]


@dataclass(frozen=True)
class DatagenConfig:
    """How responses are written and what is stored."""

    max_new_tokens: int = 256
    temperature: float = 0.0  # 0: greedy
    top_p: float = 1.0
    ivsb_layer: int | None = None  # None: the middle of the target's stack
    glimpse_tokens: int = 16
    visual: str = "full"  # per-position visual states, which full-visual and pruned drafts need; or "pooled"
    aux_layers: tuple[int, ...] | None = None  # also store these layers' outputs (eagle3 drafts)
    shard_size: int = 32
    seed: int = 0


@dataclass
class Sample:
    """One prompt to distil: a unique id and the target's inputs (batch 1)."""

    id: str
    inputs: Mapping[str, torch.Tensor]


def completed_ids(out_dir: str | Path) -> set[str]:
    """Ids of the samples in every readable shard under ``out_dir`` (damaged shards count for nothing)."""
    done: set[str] = set()
    for path in sorted(Path(out_dir).glob(SHARD_GLOB)):
        try:
            done.update(shard_ids(path))
        except InvalidInputError:
            continue
    return done


@dataclass
class ShardCheck:
    """What a resume found: the ids on disk, and what has to be written again and why."""

    done: set[str]
    problems: list[str]  # one line per damaged or missing shard
    lost_ids: list[str]  # ids a damaged or missing shard of this rank held, where the ledger knows them


def check_shards(out_dir: Path, rank: int) -> ShardCheck:
    """Read every shard; move this rank's damaged ones aside (``.damaged``) so they are regenerated,
    and compare with this rank's ledger to find shards that went missing."""
    done: set[str] = set()
    problems: list[str] = []
    lost: list[str] = []
    for path in sorted(out_dir.glob(SHARD_GLOB)):
        try:
            done.update(shard_ids(path))
        except InvalidInputError as err:
            owner = shard_rank_index(path)
            if owner is not None and owner[0] == rank:
                aside = path.with_name(path.name + ".damaged")
                os.replace(path, aside)
                problems.append(f"{err}: moved to {aside.name}, its samples are written again")
            else:
                problems.append(f"{err} (rank {owner[0] if owner else '?'}'s shard: that rank regenerates it)")
    for entry in read_ledger(out_dir, rank):
        missing = [i for i in entry["ids"] if i not in done]
        if missing:
            lost += missing
            if not any(entry["shard"] in p for p in problems):
                problems.append(f"data shard {out_dir / entry['shard']} is missing: its {len(missing)} samples are "
                                "written again")
    return ShardCheck(done=done, problems=problems, lost_ids=lost)


def settings_differences(old: dict, new: dict) -> list[str]:
    """``name: old there, new here`` for every setting or target fact in which two info.json differ."""
    diffs = []
    for key in ("target_model_type", "hidden_size", "vocab_size", "num_layers"):
        if key in old and old[key] != new[key]:
            diffs.append(f"{key} {old[key]!r} there, {new[key]!r} here")
    before, now = old.get("settings", {}), new["settings"]
    for key in sorted(set(before) | set(now)):
        if before.get(key) != now.get(key):
            diffs.append(f"{key} {before.get(key)!r} there, {now.get(key)!r} here")
    return diffs


def distil(generator: SpeculativeGenerator, sample: Sample, cfg: DatagenConfig, ivsb_layer: int) -> dict:
    """The target's response to one sample and the record of its states, from one prefill.

    The prompt's states come from the prefill that the response is decoded from;
    the response's from one causal pass over it on the rewound cache: the states a
    draft reads at inference, where the prompt's come from the prefill and the
    generated tokens' from verification. (A second forward over prompt + response
    would cost another prefill, most of a long video's time.)
    """
    target = generator.target
    layers = sorted({ivsb_layer, *(cfg.aux_layers or ())})
    with torch.inference_mode(), TargetSession(target, sample.inputs, room=cfg.max_new_tokens + 1, capture_layers=layers) as session:
        result = generator.decode(session, cfg.max_new_tokens, temperature=cfg.temperature, top_p=cfg.top_p,
                                  seed=cfg.seed)
        session.rewind()
        chain = DraftTree(torch.tensor(result.tokens, device=target.device),
                          torch.arange(-1, len(result.tokens) - 1, device=target.device))
        response = session.verify(chain.tokens, chain.mask, chain.depths, layers)
        full = _appended(session.prefill, chain.tokens, response,
                         target.model.get_input_embeddings()(chain.tokens))
        return make_record(full, session.prompt_length, ivsb_layer, cfg.glimpse_tokens, cfg.visual,
                           tuple(cfg.aux_layers or ()))


def _appended(prompt: TargetPrefill, tokens: torch.Tensor, states: TargetVerify,
              embeds: torch.Tensor) -> TargetPrefill:
    """The prompt's prefill followed by the response's states: the view of prompt + response."""
    def cat(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.cat([a, b.to(device=a.device, dtype=a.dtype)])

    return TargetPrefill(
        input_ids=cat(prompt.input_ids, tokens),
        visual_mask=cat(prompt.visual_mask, torch.zeros(len(tokens), dtype=torch.bool)),
        input_embeds=cat(prompt.input_embeds, embeds),
        hidden=cat(prompt.hidden, states.hidden),
        layer_hidden={layer: cat(h, states.layer_hidden[layer]) for layer, h in prompt.layer_hidden.items()},
        video_token_id=prompt.video_token_id,
    )


def datagen_info(target: TargetAdapter, cfg: DatagenConfig) -> dict:
    """What ``info.json`` records: the settings (IVSB layer resolved) and the target's facts."""
    ivsb_layer = cfg.ivsb_layer if cfg.ivsb_layer is not None else target.num_layers // 2
    settings = {**asdict(cfg), "ivsb_layer": ivsb_layer}
    if cfg.aux_layers is not None:
        settings["aux_layers"] = list(cfg.aux_layers)
    else:
        del settings["aux_layers"]  # data made before aux layers existed compares equal
    return {"format": FORMAT, "settings": settings,
            "target_model_type": target.model.config.model_type, "hidden_size": target.hidden_size,
            "vocab_size": target.vocab_size, "num_layers": target.num_layers}


def prepare_resume(out_dir: Path, info: dict, rank: int, log: Callable[[str], None]) -> ShardCheck:
    """Before a (re)run: refuse a folder made with other settings, drop this rank's cut-short
    ``.partial`` writes, and check every shard (:func:`check_shards`), logging what it found."""
    if (out_dir / "info.json").is_file():
        if diffs := settings_differences(data_info(out_dir), info):
            raise InvalidInputError(f"{out_dir} holds data made with other settings ({'; '.join(diffs)}); "
                                    "use a new folder, or the same settings to resume")
    if not out_dir.is_dir():
        return ShardCheck(set(), [], [])
    for stale in out_dir.glob(f"shard-{rank:03d}-*.partial"):  # a write cut short: never a complete shard
        stale.unlink()
    check = check_shards(out_dir, rank)
    for problem in check.problems:
        log(f"datagen rank {rank}: {problem}")
    return check


@dataclass
class RankProgress:
    """What one rank's run did: samples written, skipped as already on disk, and regenerated."""

    written: int = 0
    skipped: int = 0
    regenerated: list[str] = field(default_factory=list)


def distil_rank(generator: SpeculativeGenerator, samples: Iterable[Sample], writer: ShardWriter,
                check: ShardCheck, cfg: DatagenConfig, ivsb_layer: int, rank: int, world: int, bar) -> RankProgress:
    """Distil this rank's samples that are not on disk into ``writer`` (flushed even on an error)."""
    progress = RankProgress()
    lost = set(check.lost_ids)
    seen: set[str] = set()
    try:
        for index, sample in enumerate(samples):
            if sample.id in seen:
                raise InvalidInputError(f"sample id {sample.id!r} appears twice")
            seen.add(sample.id)
            if index % world != rank:
                continue
            if sample.id in check.done:
                progress.skipped += 1
                count_done_before(bar)
                continue
            writer.add(sample.id, distil(generator, sample, cfg, ivsb_layer))
            progress.written += 1
            bar.update(1)
            if sample.id in lost:
                progress.regenerated.append(sample.id)
    finally:
        writer.flush()
        bar.close()
    return progress


def write_run_record(out_dir: Path, rank: int, world: int, progress: RankProgress, writer: ShardWriter,
                     check: ShardCheck, notes: dict, log: Callable[[str], None]) -> None:
    """``datagen-rank{rank}.json``: what this run wrote and found, plus ``notes``; and its one-line summary."""
    path = out_dir / f"datagen-rank{rank:03d}.json"
    record = {"rank": rank, "world": world, "written": progress.written, "already_present": progress.skipped,
              "shards_written": writer.written, "problems_found": check.problems,
              "regenerated_ids": progress.regenerated, **notes}
    path.write_text(json.dumps(record, indent=2) + "\n")
    again = f" ({len(progress.regenerated)} of them regenerated)" if progress.regenerated else ""
    damaged = f"; {len(check.problems)} damaged or missing shard(s) found" if check.problems else ""
    extra = "".join(f"; {len(v)} {k.replace('_', ' ')}" for k, v in notes.items() if isinstance(v, list) and v)
    log(f"datagen rank {rank}: {progress.written} samples written{again}, {progress.skipped} already present"
        f"{damaged}{extra} (record: {path})")


def run_datagen(model, samples: Iterable[Sample], out_dir: str | Path, cfg: DatagenConfig | None = None,
                rank: int = 0, world: int = 1, total: int | None = None, progress: bool = True,
                eos_token_ids=None, log: Callable[[str], None] | None = None,
                notes: dict | None = None) -> int:
    """Distil every sample of this rank not already on disk; returns how many were written now.

    On a rerun every shard is read first: a damaged shard of this rank is moved
    aside and its samples written again, and a shard that went missing is named
    (from the rank's ledger); both are logged and kept in the run's record,
    ``datagen-rank{rank}.json``, with what this run wrote and ``notes`` (the
    source's skipped items and warnings, filled in while the samples are read).
    """
    cfg = cfg or DatagenConfig()
    log = log or (lambda message: None)
    out_dir = Path(out_dir)
    target = wrap_target(model)
    info = datagen_info(target, cfg)
    info_path = out_dir / "info.json"
    check = prepare_resume(out_dir, info, rank, log)

    def write_info() -> None:
        if not info_path.is_file():
            partial = info_path.with_name(f"info.json.{rank}.partial")
            partial.write_text(json.dumps(info, indent=2) + "\n")
            os.replace(partial, info_path)

    writer = ShardWriter(out_dir, rank, cfg.shard_size, on_first_write=write_info)
    generator = SpeculativeGenerator(target, eos_token_ids=eos_token_ids)
    bar = progress_bar(total, f"datagen rank {rank}", "sample", enabled=progress)
    done = distil_rank(generator, samples, writer, check, cfg, info["settings"]["ivsb_layer"], rank, world, bar)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_info()
    write_run_record(out_dir, rank, world, done, writer, check, notes or {}, log)
    return done.written
