"""Saving and loading drafts: a folder with ``config.json`` and ``model.safetensors``.

The target's embedding is not stored (the draft borrows it at run time); the LM
head rows, ``d2t`` and ``t2d`` are, under EAGLE-3 style names.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..errors import InvalidInputError
from .config import DraftConfig
from .model import Draft

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


def save_draft(draft: Draft, folder: str | Path, dtype: torch.dtype | None = None) -> Path:
    """Write ``config.json`` and ``model.safetensors``; ``dtype`` casts the floating-point weights
    (bf16 halves a shipped draft; :func:`load_draft` restores the dtype it is asked for)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    draft.config.save(folder / CONFIG_NAME)
    state = {k: v.detach().contiguous().cpu() for k, v in draft.state_dict().items()}
    if dtype is not None:
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    save_file(state, str(folder / WEIGHTS_NAME), metadata={"format": "pt", "producer": "sparrow-sd"})
    return folder


def load_draft(folder: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype | None = None) -> Draft:
    folder = Path(folder)
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        if not (folder / name).is_file():
            raise InvalidInputError(f"{folder} is not a draft folder: {name} is missing")
    try:
        config = DraftConfig.load(folder / CONFIG_NAME)
    except (ValueError, TypeError) as err:
        raise InvalidInputError(f"{folder / CONFIG_NAME} is not a valid draft config: {err}") from err
    try:
        state = load_file(str(folder / WEIGHTS_NAME))
    except (SafetensorError, OSError) as err:
        raise InvalidInputError(f"{folder / WEIGHTS_NAME} cannot be read: {err}") from err
    draft = Draft(config)
    missing, unexpected = draft.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise InvalidInputError(
            f"{folder / WEIGHTS_NAME} does not match its config: missing {missing}, unexpected {unexpected}"
        )
    draft.lm_head.weight.requires_grad_(False)
    return draft.to(device=device, dtype=dtype or draft.fc.weight.dtype).eval()


def pack_draft(source: str | Path, out: str | Path, dtype: torch.dtype = torch.bfloat16,
               about: dict | None = None) -> Path:
    """Copy a trained draft for shipping: weights cast to ``dtype``, its ``training.json`` kept,
    and ``about`` (where it came from: data, command, figures) written as ``manifest.json``."""
    import json
    import shutil

    source, out = Path(source), Path(out)
    save_draft(load_draft(source), out, dtype=dtype)
    if (source / "training.json").is_file():
        shutil.copyfile(source / "training.json", out / "training.json")
    manifest = {"packed_from": str(source), "weights_dtype": str(dtype).removeprefix("torch."), **(about or {})}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return out
