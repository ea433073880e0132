"""The on-disk form of draft-training data, and the one reader and writer of it.

A datagen folder holds ``info.json`` (the settings the data was made with),
shards named ``shard-{rank:03d}-{index:05d}.safetensors`` and, per rank, a
ledger ``ledger-{rank:03d}.jsonl``. A shard's tensors are named
``{sample id}/{field}`` (the fields of :mod:`.records`); its metadata holds
``format`` (:data:`FORMAT`) and ``ids``, the JSON list of its samples in write
order. A shard is written under a ``.partial`` name and renamed when complete,
then entered in the ledger (one JSON line ``{"shard": name, "ids": [...]}``),
so a shard that later disappears can still be named.

Everything that reads shards (datagen's resume, the trainer, the tests) goes
through :func:`shard_ids`, which checks the format and names a damaged file,
and :class:`DataShards`, which reads the records.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from ..errors import InvalidInputError

FORMAT = "sparrow-draft-data/1"
SHARD_GLOB = "shard-*.safetensors"


def shard_name(rank: int, index: int) -> str:
    return f"shard-{rank:03d}-{index:05d}.safetensors"


def shard_rank_index(path: Path) -> tuple[int, int] | None:
    """(rank, index) from a shard's file name (also of its .partial / .damaged siblings), or None."""
    parts = path.name.split(".", 1)[0].split("-")
    if len(parts) != 3 or parts[0] != "shard" or not (parts[1].isdigit() and parts[2].isdigit()):
        return None
    return int(parts[1]), int(parts[2])


def shard_ids(path: str | Path) -> list[str]:
    """The sample ids a shard holds; :class:`InvalidInputError` naming the file when it is damaged
    (truncated, not safetensors, not sparrow draft data)."""
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


def data_info(data_dir: str | Path) -> dict:
    """The settings the data was generated with (from ``info.json``)."""
    path = Path(data_dir) / "info.json"
    if not path.is_file():
        raise InvalidInputError(f"{data_dir} has no info.json; is it a `sparrow datagen` output folder?")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise InvalidInputError(f"{path} is damaged ({err}); rerun `sparrow datagen` into a new folder") from None


def _read_sample(handle, sample_id: str) -> dict[str, torch.Tensor]:
    prefix = f"{sample_id}/"
    return {n[len(prefix):]: handle.get_tensor(n) for n in handle.keys() if n.startswith(prefix)}


class DataShards:
    """The records of a datagen folder: every shard checked when opened (a damaged one is
    named at once, not mid-training), records read from disk only when asked for.

    ``data[i]`` is the ``i``-th record (file order, then write order), iterating gives the
    records, :meth:`items` the ``(id, record)`` pairs and :attr:`ids` the ids.
    """

    def __init__(self, data_dir: str | Path):
        self.entries: list[tuple[Path, str]] = []
        for path in check_data_shards(data_dir):
            self.entries += [(path, i) for i in shard_ids(path)]

    @property
    def ids(self) -> list[str]:
        return [sample_id for _, sample_id in self.entries]

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        path, sample_id = self.entries[index]
        with safe_open(str(path), framework="pt") as handle:
            return _read_sample(handle, sample_id)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        return (record for _, record in self.items())

    def items(self) -> Iterator[tuple[str, dict[str, torch.Tensor]]]:
        """(id, record) for every sample, opening each shard once."""
        by_shard: dict[Path, list[str]] = {}
        for path, sample_id in self.entries:
            by_shard.setdefault(path, []).append(sample_id)
        for path, ids in by_shard.items():
            with safe_open(str(path), framework="pt") as handle:
                for sample_id in ids:
                    yield sample_id, _read_sample(handle, sample_id)


def ledger_path(out_dir: Path, rank: int) -> Path:
    return out_dir / f"ledger-{rank:03d}.jsonl"


def read_ledger(out_dir: Path, rank: int) -> list[dict]:
    """The ledger's entries ``{"shard": name, "ids": [...]}``; a line cut short by an interruption is skipped."""
    path = ledger_path(out_dir, rank)
    if not path.is_file():
        return []
    entries = []
    for line in path.read_text().splitlines():
        try:
            entry = json.loads(line)
            entries.append({"shard": str(entry["shard"]), "ids": list(entry["ids"])})
        except (json.JSONDecodeError, KeyError, TypeError):
            continue
    return entries


class ShardWriter:
    """Writes shards of ``size`` samples; never reuses the name of any file already in the folder.

    The folder is created at the first shard (a run that fails before writing leaves nothing);
    each shard goes to a ``.partial`` name, is renamed when complete, then entered in the
    rank's ledger (what the shard holds, so a shard that later goes missing can be named).
    """

    def __init__(self, out_dir: Path, rank: int, size: int, on_first_write: Callable[[], None] | None = None):
        self.out_dir, self.rank, self.size = out_dir, rank, size
        self.on_first_write = on_first_write
        taken = [shard_rank_index(p) for p in out_dir.glob(f"shard-{rank:03d}-*")] if out_dir.is_dir() else []
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
        try:
            save_file(tensors, str(partial), metadata={"format": FORMAT, "ids": json.dumps(ids)})
        except BaseException:  # Ctrl-C / SIGTERM mid-write: no half file; the samples stay pending
            partial.unlink(missing_ok=True)
            raise
        with hold_signals():  # the rename and the bookkeeping happen together or not at all
            os.replace(partial, path)
            self.written.append(path.name)
            self.index += 1
            self.pending = []
            with ledger_path(self.out_dir, self.rank).open("a") as ledger:
                ledger.write(json.dumps({"shard": path.name, "ids": ids}) + "\n")


@contextlib.contextmanager
def hold_signals() -> Iterator[None]:
    """Hold SIGINT / SIGTERM until the block is done (raised right after), so that a stop cannot
    land between a shard's rename and its bookkeeping and get the samples written twice.

    Done with Python handlers that note the signal, not with a thread signal mask: the kernel
    gives a process-wide signal to any thread that does not block it (torch has several)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = {s: signal.signal(s, lambda signum, frame: caught.append(signum))
                for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, signal.SIG_DFL if handler is None else handler)
        for s in caught:
            signal.raise_signal(s)
