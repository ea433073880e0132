"""``sparrow testbed build``: reproduce the trained testbed from scratch.

Builds the untrained testbed (SmolLM2 weights + a vision tower drawn from the
testbed seed), runs both training stages of :mod:`.training` with a fixed
seed, merges the LoRA, writes the weights file and its manifest, and (unless
told not to) evaluates it with :mod:`.evaluate`. Intermediate checkpoints go
to the work folder so a killed run still leaves usable weights.
"""

from __future__ import annotations

import json
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from ..errors import AssetError
from .config import TestbedConfig
from .lora import DEFAULT_TARGETS, MLP_TARGETS, LoRA
from .loader import load_testbed
from .training import PROBE_CLASSES, RunState, TrainConfig, config_dict, train_grounding, train_language
from .vision_io import save_vision_weights


def _logger(path: Path) -> Callable[[str], None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = path.open("a", buffering=1)

    def log(message: str) -> None:
        line = f"[{time.strftime('%H:%M:%S')}] {message}"
        print(line, flush=True)
        handle.write(line + "\n")

    return log


def train_testbed(out: str | Path, cfg: TrainConfig | None = None, work: str | Path | None = None,
                  gguf: str | None = None, log: Callable[[str], None] | None = None, device: str = "cpu",
                  command: str | None = None) -> dict:
    """Train the testbed's vision tower and LoRA; write ``out`` (weights) and ``out``.json (manifest).

    ``device``: where training runs ("cuda" when a GPU is lent); checkpoints and
    the weights file are device-independent, so a build resumes on either.

    ``command``: the command line to record in the manifest (default: the
    plain ``sparrow testbed build --out OUT``).

    Returns the manifest (settings, timings, data description). Evaluation
    figures are added by :func:`sparrow_sd.testbed.evaluate.evaluate_testbed`.
    """
    cfg = cfg or TrainConfig()
    out = Path(out)
    work = Path(work) if work else out.parent / "testbed-work"
    log = log or _logger(work / "train.log")
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    work.mkdir(parents=True, exist_ok=True)
    model, processor = load_testbed(None, gguf=gguf, config=TestbedConfig(seed=cfg.seed))  # untrained start
    model.train(False)  # no dropout in these modules; keep eval-mode behaviour
    model.requires_grad_(False)
    model.model.visual.requires_grad_(True)
    probe = torch.nn.Linear(model.config.text_config.hidden_size, sum(PROBE_CLASSES))
    model.to(device)
    probe.to(device)
    log(f"training settings: {json.dumps(config_dict(cfg))}")

    started = time.time()
    state = RunState(work / "resume.pt", cfg, log=log)
    if not state.stage_done("grounding"):
        train_grounding(model, processor, probe, cfg, log, state=state)
    grounding_s = state.elapsed_s()
    targets = DEFAULT_TARGETS + (MLP_TARGETS if cfg.lora_mlp else ())
    lora = LoRA(model, rank=cfg.lora_rank, targets=targets, seed=cfg.seed).to(device).attach()
    if state.stage_done("language"):
        state.load_modules({"visual": model.model.visual, "probe": probe, "lora": lora})
    else:
        state = RunState(work / "resume.pt", cfg, log=log)  # holds the finished grounding stage now
        state.started = started
        train_language(model, processor, probe, lora, cfg, log, state=state)
    total_s = state.elapsed_s()
    lora.merge()
    model.cpu()
    lora.cpu()
    save_vision_weights(model, out, lora_state=lora.state())
    manifest = {
        "weights": out.name,
        "command": command or "sparrow testbed build --out " + str(out),
        "seed": cfg.seed,
        "training": config_dict(cfg),
        "data": ("SynthVideo clips generated on the fly at 144x144: training seeds from "
                 f"{1_000_000} upward (grounding stage offset by 7,000,000); evaluation seeds below 1,000,000"),
        "training_time_s": {"grounding": round(grounding_s, 1), "total": round(total_s, 1)},
        "machine": f"{platform.machine()} {platform.processor() or ''} {torch.get_num_threads()} threads".strip()
                   + (f", {torch.cuda.get_device_name(device)}" if str(device).startswith("cuda") else ""),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
    }
    write_manifest(out, manifest)
    log(f"saved {out} ({out.stat().st_size / 1e6:.1f} MB); training took {total_s / 60:.1f} min")
    return manifest


def snapshot_weights(work: str | Path, out: str | Path, gguf: str | None = None) -> dict:
    """Weights from an unfinished build's checkpoint (``WORK/resume.pt``), marked interim.

    For measuring the engine on a partly trained testbed while a build is
    unfinished; the manifest says which stage and step it holds, so figures made
    with it cannot pass for the finished testbed's.
    """
    path = Path(work) / "resume.pt"
    if not path.is_file():
        raise AssetError(f"no build checkpoint at {path}; run `sparrow testbed build` first")
    state = torch.load(path, weights_only=False, map_location="cpu")
    settings = state["config"]
    model, _ = load_testbed(None, gguf=gguf, config=TestbedConfig(seed=settings["seed"]))
    model.model.visual.load_state_dict(state["modules"]["visual"])
    lora_state = None
    if "lora" in state["modules"]:
        targets = DEFAULT_TARGETS + (MLP_TARGETS if settings.get("lora_mlp") else ())
        lora = LoRA(model, rank=settings["lora_rank"], targets=targets, seed=settings["seed"])
        lora.load_state_dict(state["modules"]["lora"])
        lora_state = lora.state()
    save_vision_weights(model, out, lora_state=lora_state)
    manifest = {
        "weights": Path(out).name,
        "interim": True,
        "checkpoint": _checkpoint_point(state, settings) | {"source": str(path)},
        "command": f"sparrow testbed snapshot --work {work} --out {out}",
        "seed": settings["seed"],
        "training": settings,
        "training_time_s": {"total": round(state["elapsed_s"], 1)},
    }
    write_manifest(out, manifest)
    return manifest


def _checkpoint_point(state: dict, settings: dict) -> dict:
    """Stage and step a checkpoint holds (a finished stage is saved as the next one at step 0)."""
    stage = state.get("finished", state["stage"])
    total = settings["grounding_steps"] if stage == "grounding" else settings["steps"]
    return {"stage": stage, "step": total if "finished" in state else state["step"], "of_steps": total}


def manifest_path(weights: str | Path) -> Path:
    weights = Path(weights)
    return weights.with_name(weights.stem + ".manifest.json")


def write_manifest(weights: str | Path, manifest: dict) -> Path:
    path = manifest_path(weights)
    path.write_text(json.dumps(manifest, indent=2) + "\n")
    return path
