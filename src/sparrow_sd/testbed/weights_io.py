"""Saving and loading the testbed's trained part: the language model's LoRA.

The language weights are Qwen2.5-Coder's and come from the fetched assets, so a
testbed checkpoint holds only what is trained here: the LoRA tensors
(``lora.<module path>.a`` / ``.b``, scale folded into ``b``; a few MB, small
enough to commit). The safetensors metadata records the format, the
:class:`TestbedConfig` the LoRA was trained with and a SHA-256 over the
tensors, so a truncated, bit-flipped or mismatched file is refused with an
:class:`~sparrow_sd.errors.AssetError` instead of giving a silently wrong model.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ..errors import AssetError
from .config import TestbedConfig
from .lora import PREFIX, merge_state, target_modules

FORMAT = "sparrow-testbed-lora/2"


def tensor_digest(state: dict[str, torch.Tensor]) -> str:
    """SHA-256 over names, dtypes, shapes and bytes, in name order."""
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().contiguous().cpu()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def save_lora(path: str | os.PathLike, state: dict[str, torch.Tensor], config: TestbedConfig,
              extra: dict[str, str] | None = None) -> Path:
    """Write ``state`` (``lora.*`` tensors) with its config and digest; atomic (temp file, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in state.items()}
    if not state or not all(k.startswith(PREFIX) for k in state):
        raise ValueError("a testbed checkpoint holds only lora.* tensors")
    metadata = {"format": FORMAT, "testbed_config": config.to_json(), "sha256": tensor_digest(state), **(extra or {})}
    tmp = path.with_name(path.name + ".tmp")
    save_file(state, str(tmp), metadata=metadata)
    tmp.replace(path)
    return path


def read_lora(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], TestbedConfig, dict[str, str]]:
    """(tensors, config, metadata) of a checkpoint written by :func:`save_lora`, checked."""
    path = Path(path)
    if not path.is_file():
        raise AssetError(f"testbed weights not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            state = {k: handle.get_tensor(k) for k in handle.keys()}
    except Exception as exc:
        raise AssetError(f"{path} is not a readable safetensors file ({type(exc).__name__}: {exc}); "
                         "rebuild it with `sparrow testbed build`") from exc
    if metadata.get("format") != FORMAT:
        raise AssetError(f"{path} is not a testbed v2 checkpoint (format {metadata.get('format')!r}, "
                         f"expected {FORMAT!r})")
    if tensor_digest(state) != metadata.get("sha256"):
        raise AssetError(f"{path} is corrupt (its tensors do not match the recorded SHA-256)")
    try:
        config = TestbedConfig.from_json(metadata["testbed_config"])
    except Exception as exc:
        raise AssetError(f"{path} records an unreadable testbed config: {exc}") from exc
    return state, config, metadata


def merge_lora(model, state: dict[str, torch.Tensor], source: str | os.PathLike = "checkpoint") -> None:
    """Fold the LoRA into ``model``'s language weights; refuse one made for other shapes."""
    modules = target_modules(model, targets=None)
    for key in state:
        name = key[len(PREFIX):].rsplit(".", 1)[0]
        module = modules.get(name)
        if module is None:
            raise AssetError(f"{source}: {name} is not a linear layer of this testbed's language model")
        a, b = state[f"{PREFIX}{name}.a"], state[f"{PREFIX}{name}.b"]
        if a.shape[1] != module.in_features or b.shape[0] != module.out_features or a.shape[0] != b.shape[1]:
            raise AssetError(f"{source}: LoRA shapes {tuple(a.shape)}/{tuple(b.shape)} do not fit {name}")
    merge_state(modules, state)
