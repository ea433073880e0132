"""``sparrow datagen``: self-distilled draft-training data, in resumable bf16 shards.

For each sample (an id and the target's model inputs for one video prompt)
the target writes its own response (greedy, or sampled with a temperature)
through sparrow-sd's plain decoding loop, then one forward over prompt +
response captures what the draft learns from (see :mod:`.records`). The draft
so learns the target's distribution, not a dataset's.

Samples are written in shards of ``shard_size`` as
``shard-{rank}-{index}.safetensors`` with tensors named ``{sample id}/{field}``;
a shard is written under a temporary name and renamed when complete, so the
samples in the renamed shards are exactly the finished ones. A rerun reads
the ids of every complete shard and skips them: an interrupted run resumes
without duplicating or losing samples. ``rank`` / ``world`` split the sample
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
from ..targets import wrap_target
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


def completed_ids(out_dir: str | Path) -> set[str]:
    """Ids of the samples in every complete shard under ``out_dir``."""
    done: set[str] = set()
    for path in sorted(Path(out_dir).glob("shard-*.safetensors")):
        with safe_open(str(path), framework="pt") as handle:
            done.update(json.loads(handle.metadata()["ids"]))
    return done


def read_shards(data_dir: str | Path) -> Iterator[tuple[str, dict[str, torch.Tensor]]]:
    """(id, record) for every sample of every complete shard, in file then write order."""
    paths = sorted(Path(data_dir).glob("shard-*.safetensors"))
    if not paths:
        raise InvalidInputError(f"no data shards in {data_dir}; run `sparrow datagen` first")
    for path in paths:
        with safe_open(str(path), framework="pt") as handle:
            meta = handle.metadata()
            if meta.get("format") != FORMAT:
                raise InvalidInputError(f"{path} is not sparrow draft data (format {meta.get('format')!r})")
            names = list(handle.keys())
            for sample_id in json.loads(meta["ids"]):
                prefix = f"{sample_id}/"
                yield sample_id, {n[len(prefix):]: handle.get_tensor(n) for n in names if n.startswith(prefix)}


def data_info(data_dir: str | Path) -> dict:
    """The settings the data was generated with (from ``info.json``)."""
    path = Path(data_dir) / "info.json"
    if not path.is_file():
        raise InvalidInputError(f"{data_dir} has no info.json; is it a `sparrow datagen` output folder?")
    return json.loads(path.read_text())


class _ShardWriter:
    def __init__(self, out_dir: Path, rank: int, size: int):
        self.out_dir, self.rank, self.size = out_dir, rank, size
        self.index = len(list(out_dir.glob(f"shard-{rank:03d}-*.safetensors")))
        self.pending: list[tuple[str, dict[str, torch.Tensor]]] = []

    def add(self, sample_id: str, record: dict[str, torch.Tensor]) -> None:
        self.pending.append((sample_id, record))
        if len(self.pending) >= self.size:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        tensors = {f"{i}/{k}": v.contiguous() for i, rec in self.pending for k, v in rec.items()}
        path = self.out_dir / f"shard-{self.rank:03d}-{self.index:05d}.safetensors"
        partial = path.with_name(path.name + ".partial")
        save_file(tensors, str(partial), metadata={"format": FORMAT, "ids": json.dumps([i for i, _ in self.pending])})
        os.replace(partial, path)
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
    prefill = target.prefill(full, room=1, capture_layers=sorted({ivsb_layer, *aux}))
    record = make_record(prefill, length, ivsb_layer, cfg.glimpse_tokens, cfg.visual, aux)
    target.release()
    return record


def run_datagen(model, samples: Iterable[Sample], out_dir: str | Path, cfg: DatagenConfig | None = None,
                rank: int = 0, world: int = 1, total: int | None = None, progress: bool = True,
                eos_token_ids=None, log: Callable[[str], None] | None = None) -> int:
    """Distil every sample of this rank not already on disk; returns how many were written now."""
    from tqdm.auto import tqdm

    cfg = cfg or DatagenConfig()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
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
        old = json.loads(info_path.read_text())
        if old["settings"] != info["settings"] or old["target_model_type"] != info["target_model_type"]:
            raise InvalidInputError(f"{out_dir} holds data made with other settings ({old['settings']}); "
                                    "use a new folder")
    elif rank == 0:
        info_path.write_text(json.dumps(info, indent=2) + "\n")
    done = completed_ids(out_dir)
    writer = _ShardWriter(out_dir, rank, cfg.shard_size)
    generator = SpeculativeGenerator(target, eos_token_ids=eos_token_ids)
    written = skipped = 0
    seen: set[str] = set()
    bar = tqdm(total=total, desc=f"datagen rank {rank}", disable=not progress, unit="sample")
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
    finally:
        writer.flush()
        bar.close()
    if log:
        log(f"datagen rank {rank}: {written} samples written, {skipped} already present")
    return written
