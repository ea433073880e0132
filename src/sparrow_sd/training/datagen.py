"""``sparrow datagen``: self-distilled draft-training data, in resumable bf16 shards.

For each sample (an id and the target's model inputs for one video prompt)
the target writes its own response (greedy, or sampled with a temperature)
through sparrow-sd's plain decoding loop, then one forward over prompt +
response captures what the draft learns from (see :mod:`.records`). The draft
so learns the target's distribution, not a dataset's.

Samples are written in shards of ``shard_size`` as
``shard-{rank}-{index}.safetensors`` with tensors named ``{sample id}/{field}``;
a shard is written under a temporary name and renamed when complete, so the
samples in the renamed shards are exactly the finished ones, and a new shard
always takes an index past every file of its rank already there, so no rerun
can overwrite a shard. A rerun reads every shard and skips the samples it
holds: an interrupted run resumes without duplicating or losing samples. A
damaged shard (truncated, unreadable) is moved aside as ``.damaged`` and its
samples written again; each rank's ``ledger-{rank}.jsonl`` lists what every
shard it wrote holds, so a shard that disappears is named too. Both are
logged and recorded in ``datagen-rank{rank}.json``, the run's record, with
what the run wrote. The folder and ``info.json`` appear with the first
shard: a run that fails before writing anything leaves nothing behind.
``rank`` / ``world`` split the sample
list (sample ``i`` belongs to rank ``i % world``), one process per device,
which is how ``accelerate launch`` runs it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ..errors import InvalidInputError
from ..generate import SpeculativeGenerator
from ..targets import TargetSession, wrap_target
from .records import make_record

FORMAT = "sparrow-draft-data/1"


@dataclass(frozen=True)
class DatagenConfig:
    """How responses are written and what is stored."""

    max_new_tokens: int = 256
    temperature: float = 0.0  # 0: greedy
    top_p: float = 1.0
    ivsb_layer: int | None = None  # None: the middle of the target's stack
    glimpse_tokens: int = 16
    visual: str = "pooled"  # or "full" (needed by the full-visual and pruned baselines)
    aux_layers: tuple[int, ...] | None = None  # also store these layers' outputs (eagle3 drafts)
    shard_size: int = 32
    seed: int = 0


@dataclass
class Sample:
    """One prompt to distil: a unique id and the target's inputs (batch 1)."""

    id: str
    inputs: Mapping[str, torch.Tensor]


SHARD_GLOB = "shard-*.safetensors"


def shard_name(rank: int, index: int) -> str:
    return f"shard-{rank:03d}-{index:05d}.safetensors"


def _shard_rank_index(path: Path) -> tuple[int, int] | None:
    """(rank, index) from a shard's file name (also of its .partial / .damaged siblings), or None."""
    parts = path.name.split(".", 1)[0].split("-")
    if len(parts) != 3 or parts[0] != "shard" or not (parts[1].isdigit() and parts[2].isdigit()):
        return None
    return int(parts[1]), int(parts[2])


def shard_ids(path: str | Path) -> list[str]:
    """The sample ids a shard holds; :class:`InvalidInputError` naming the file when it is damaged
    (truncated, not safetensors, not sparrow draft data)."""
    from safetensors import SafetensorError

    try:
        with safe_open(str(path), framework="pt") as handle:
            meta = handle.metadata() or {}
            names = set(handle.keys())
    except (SafetensorError, OSError) as err:
        raise InvalidInputError(f"data shard {path} is damaged ({err})") from None
    if meta.get("format") != FORMAT:
        raise InvalidInputError(f"{path} is not sparrow draft data (format {meta.get('format')!r})")
    try:
        ids = json.loads(meta["ids"])
    except (KeyError, json.JSONDecodeError):
        raise InvalidInputError(f"data shard {path} is damaged (its list of sample ids is missing)") from None
    if any(not any(n.startswith(f"{i}/") for n in names) for i in ids):
        raise InvalidInputError(f"data shard {path} is damaged (a listed sample has no tensors)")
    return ids


def check_data_shards(data_dir: str | Path) -> list[Path]:
    """Every shard of a datagen folder, each checked readable; names the first damaged one and how to fix it."""
    paths = sorted(Path(data_dir).glob(SHARD_GLOB))
    if not paths:
        raise InvalidInputError(f"no data shards in {data_dir}; run `sparrow datagen` first")
    for path in paths:
        try:
            shard_ids(path)
        except InvalidInputError as err:
            raise InvalidInputError(f"{err}; rerun the `sparrow datagen` command that made {data_dir} to "
                                    "regenerate its samples") from None
    return paths


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
            owner = _shard_rank_index(path)
            if owner is not None and owner[0] == rank:
                aside = path.with_name(path.name + ".damaged")
                os.replace(path, aside)
                problems.append(f"{err}: moved to {aside.name}, its samples are written again")
            else:
                problems.append(f"{err} (rank {owner[0] if owner else '?'}'s shard: that rank regenerates it)")
    for entry in _read_ledger(out_dir, rank):
        missing = [i for i in entry["ids"] if i not in done]
        if missing:
            lost += missing
            if not any(entry["shard"] in p for p in problems):
                problems.append(f"data shard {out_dir / entry['shard']} is missing: its {len(missing)} samples are "
                                "written again")
    return ShardCheck(done=done, problems=problems, lost_ids=lost)


def _ledger_path(out_dir: Path, rank: int) -> Path:
    return out_dir / f"ledger-{rank:03d}.jsonl"


def _read_ledger(out_dir: Path, rank: int) -> list[dict]:
    path = _ledger_path(out_dir, rank)
    if not path.is_file():
        return []
    entries = []
    for line in path.read_text().splitlines():
        try:
            entry = json.loads(line)
            entries.append({"shard": str(entry["shard"]), "ids": list(entry["ids"])})
        except (json.JSONDecodeError, KeyError, TypeError):
            continue  # a line cut short by an interruption
    return entries


def read_shards(data_dir: str | Path) -> Iterator[tuple[str, dict[str, torch.Tensor]]]:
    """(id, record) for every sample of every complete shard, in file then write order."""
    for path in check_data_shards(data_dir):
        ids = shard_ids(path)
        with safe_open(str(path), framework="pt") as handle:
            names = list(handle.keys())
            for sample_id in ids:
                prefix = f"{sample_id}/"
                yield sample_id, {n[len(prefix):]: handle.get_tensor(n) for n in names if n.startswith(prefix)}


def data_info(data_dir: str | Path) -> dict:
    """The settings the data was generated with (from ``info.json``)."""
    path = Path(data_dir) / "info.json"
    if not path.is_file():
        raise InvalidInputError(f"{data_dir} has no info.json; is it a `sparrow datagen` output folder?")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise InvalidInputError(f"{path} is damaged ({err}); rerun `sparrow datagen` into a new folder") from None


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


class _ShardWriter:
    """Writes shards of ``size`` samples; never reuses the name of any file already in the folder.

    The folder is created at the first shard (a run that fails before writing leaves nothing);
    each shard goes to a ``.partial`` name, is renamed when complete, then entered in the
    rank's ledger (what the shard holds, so a shard that later goes missing can be named).
    """

    def __init__(self, out_dir: Path, rank: int, size: int, on_first_write: Callable[[], None] | None = None):
        self.out_dir, self.rank, self.size = out_dir, rank, size
        self.on_first_write = on_first_write
        taken = [_shard_rank_index(p) for p in out_dir.glob(f"shard-{rank:03d}-*")] if out_dir.is_dir() else []
        self.index = 1 + max((ri[1] for ri in taken if ri is not None), default=-1)
        self.pending: list[tuple[str, dict[str, torch.Tensor]]] = []
        self.written: list[str] = []

    def add(self, sample_id: str, record: dict[str, torch.Tensor]) -> None:
        self.pending.append((sample_id, record))
        if len(self.pending) >= self.size:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if self.on_first_write is not None:
            self.on_first_write()
            self.on_first_write = None
        while any(self.out_dir.glob(shard_name(self.rank, self.index) + "*")):
            self.index += 1
        tensors = {f"{i}/{k}": v.contiguous() for i, rec in self.pending for k, v in rec.items()}
        path = self.out_dir / shard_name(self.rank, self.index)
        partial = path.with_name(path.name + ".partial")
        ids = [i for i, _ in self.pending]
        save_file(tensors, str(partial), metadata={"format": FORMAT, "ids": json.dumps(ids)})
        os.replace(partial, path)
        with _ledger_path(self.out_dir, self.rank).open("a") as ledger:
            ledger.write(json.dumps({"shard": path.name, "ids": ids}) + "\n")
        self.written.append(path.name)
        self.index += 1
        self.pending = []


def distil(generator: SpeculativeGenerator, sample: Sample, cfg: DatagenConfig, ivsb_layer: int) -> dict:
    """The target's response to one sample and the record of its states."""
    result = generator.generate(sample.inputs, max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                                top_p=cfg.top_p, seed=cfg.seed)
    target = generator.target
    prompt = dict(sample.inputs)
    length = prompt["input_ids"].shape[1]
    response = torch.tensor([result.tokens], dtype=prompt["input_ids"].dtype)
    full = dict(prompt)
    full["input_ids"] = torch.cat([prompt["input_ids"], response], dim=1)
    for key in ("attention_mask", "mm_token_type_ids"):
        if key in prompt and prompt[key] is not None:
            full[key] = torch.cat([prompt[key], torch.full_like(response, 1 if key == "attention_mask" else 0)], dim=1)
    aux = tuple(cfg.aux_layers or ())
    with TargetSession(target, full, room=1, capture_layers=sorted({ivsb_layer, *aux})) as session:
        return make_record(session.prefill, length, ivsb_layer, cfg.glimpse_tokens, cfg.visual, aux)


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
    from tqdm.auto import tqdm

    cfg = cfg or DatagenConfig()
    log = log or (lambda message: None)
    out_dir = Path(out_dir)
    target = wrap_target(model)
    ivsb_layer = cfg.ivsb_layer if cfg.ivsb_layer is not None else target.num_layers // 2
    settings = {**asdict(cfg), "ivsb_layer": ivsb_layer}
    if cfg.aux_layers is not None:
        settings["aux_layers"] = list(cfg.aux_layers)
    else:
        del settings["aux_layers"]  # data made before aux layers existed compares equal
    info = {"format": FORMAT, "settings": settings,
            "target_model_type": target.model.config.model_type, "hidden_size": target.hidden_size,
            "vocab_size": target.vocab_size, "num_layers": target.num_layers}
    info_path = out_dir / "info.json"
    if info_path.is_file():
        if diffs := settings_differences(data_info(out_dir), info):
            raise InvalidInputError(f"{out_dir} holds data made with other settings ({'; '.join(diffs)}); "
                                    "use a new folder, or the same settings to resume")

    def write_info() -> None:
        if not info_path.is_file():
            partial = info_path.with_name(f"info.json.{rank}.partial")
            partial.write_text(json.dumps(info, indent=2) + "\n")
            os.replace(partial, info_path)

    check = ShardCheck(set(), [], [])
    if out_dir.is_dir():
        for stale in out_dir.glob(f"shard-{rank:03d}-*.partial"):  # a write cut short: never a complete shard
            stale.unlink()
        check = check_shards(out_dir, rank)
        for problem in check.problems:
            log(f"datagen rank {rank}: {problem}")
    done = check.done
    writer = _ShardWriter(out_dir, rank, cfg.shard_size, on_first_write=write_info)
    generator = SpeculativeGenerator(target, eos_token_ids=eos_token_ids)
    written = skipped = 0
    regenerated: list[str] = []
    lost = set(check.lost_ids)
    seen: set[str] = set()
    bar = tqdm(total=total, desc=f"datagen rank {rank}", unit="sample",
               disable=None if progress else True)  # None: shown on a terminal only
    try:
        for index, sample in enumerate(samples):
            if sample.id in seen:
                raise InvalidInputError(f"sample id {sample.id!r} appears twice")
            seen.add(sample.id)
            if index % world != rank:
                continue
            bar.update(1)
            if sample.id in done:
                skipped += 1
                continue
            writer.add(sample.id, distil(generator, sample, cfg, ivsb_layer))
            written += 1
            if sample.id in lost:
                regenerated.append(sample.id)
    finally:
        writer.flush()
        bar.close()
    out_dir.mkdir(parents=True, exist_ok=True)
    write_info()
    notes = notes or {}
    record = {"rank": rank, "world": world, "written": written, "already_present": skipped,
              "shards_written": writer.written, "problems_found": check.problems,
              "regenerated_ids": regenerated, **notes}
    (out_dir / f"datagen-rank{rank:03d}.json").write_text(json.dumps(record, indent=2) + "\n")
    again = f" ({len(regenerated)} of them regenerated)" if regenerated else ""
    damaged = f"; {len(check.problems)} damaged or missing shard(s) found" if check.problems else ""
    extra = "".join(f"; {len(v)} {k.replace('_', ' ')}" for k, v in notes.items() if isinstance(v, list) and v)
    log(f"datagen rank {rank}: {written} samples written{again}, {skipped} already present{damaged}{extra} "
        f"(record: {out_dir / f'datagen-rank{rank:03d}.json'})")
    return written
