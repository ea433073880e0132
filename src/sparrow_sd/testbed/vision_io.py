"""Saving and loading the testbed's trained part: vision tower, merger, added token rows.

The language weights are SmolLM2's and come from the fetched GGUF, so a
testbed checkpoint holds only what is trained here (a few MB, small enough to
commit): every ``model.visual.*`` tensor (the merger is ``model.visual.merger``)
under the model's own names, plus the embedding rows of the added vision
tokens as ``added_token_embeddings`` (the LM head is tied to them).

The safetensors metadata records the format, the :class:`TestbedConfig` the
weights were trained with, and a SHA-256 over the tensors, so a file that was
truncated, bit-flipped or made for another geometry is refused with an
:class:`~sparrow_sd.errors.AssetError` instead of giving a silently wrong model.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ..errors import AssetError
from .config import TestbedConfig
from .lora import PREFIX as LORA_PREFIX
from .lora import merge_state

FORMAT = "sparrow-testbed-vision/1"
VISUAL_PREFIX = "model.visual."
ADDED_ROWS = "added_token_embeddings"
# settings that may differ between a checkpoint and the config it is loaded with
_FREE_SETTINGS = {"seed", "system_prompt"}


def _embedding(model) -> torch.Tensor:
    return model.get_input_embeddings().weight


def _num_added(model) -> int:
    return len(model.testbed_config.special_tokens)


def trained_state(model) -> dict[str, torch.Tensor]:
    """The tensors a testbed checkpoint holds (views into ``model``, not copies)."""
    state = {k: v for k, v in model.state_dict().items() if k.startswith(VISUAL_PREFIX)}
    state[ADDED_ROWS] = _embedding(model)[-_num_added(model) :]
    return state


def _digest(state: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().contiguous().cpu()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def save_vision_weights(model, path: str | os.PathLike, lora_state: dict[str, torch.Tensor] | None = None) -> Path:
    """Write the vision tower, merger and added token rows of a testbed ``model`` to ``path``.

    ``lora_state`` (``LoRA.state()``) adds the language model's low-rank
    update, which loading merges into SmolLM2's weights. Saved in the model's current dtype; the file is written next to the
    destination first and renamed, so an interrupted save leaves no half file.
    """
    path = Path(path)
    state = {k: v.detach().contiguous().cpu().clone() for k, v in trained_state(model).items()}
    state.update({k: v.detach().contiguous().cpu().clone() for k, v in (lora_state or {}).items()})
    metadata = {
        "format": FORMAT,
        "testbed_config": model.testbed_config.to_json(),
        "sha256": _digest(state),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    save_file(state, str(partial), metadata=metadata)
    os.replace(partial, path)
    return path


def read_vision_weights(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], TestbedConfig]:
    """Tensors and config of a testbed checkpoint, verified against its checksum.

    Raises :class:`AssetError` when the file is missing, unreadable, not a
    testbed checkpoint, or its tensors do not match the recorded checksum.
    """
    path = Path(path)
    if not path.is_file():
        raise AssetError(f"testbed vision weights not found at {path}")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            state = {name: handle.get_tensor(name) for name in handle.keys()}
    except Exception as exc:
        raise AssetError(
            f"testbed vision weights {path} are unreadable (corrupt or truncated safetensors): {exc}"
        ) from exc
    if metadata.get("format") != FORMAT:
        raise AssetError(
            f"{path} is not a testbed vision checkpoint (format {metadata.get('format')!r}, "
            f"expected {FORMAT!r}); save one with save_vision_weights()"
        )
    if metadata.get("sha256") != _digest(state):
        raise AssetError(f"testbed vision weights {path} are corrupt: the tensors do not match their checksum")
    try:
        config = TestbedConfig.from_json(metadata["testbed_config"])
    except Exception as exc:
        raise AssetError(f"{path} records an invalid testbed config: {exc}") from exc
    return state, config


def config_differences(saved: TestbedConfig, wanted: TestbedConfig) -> list[str]:
    """Settings (other than seed and system prompt) on which two configs disagree."""
    return [
        f"{f.name}: file {getattr(saved, f.name)!r} vs {getattr(wanted, f.name)!r}"
        for f in dataclasses.fields(TestbedConfig)
        if f.name not in _FREE_SETTINGS and getattr(saved, f.name) != getattr(wanted, f.name)
    ]


@torch.no_grad()
def load_vision_weights(model, path: str | os.PathLike) -> None:
    """Copy a testbed checkpoint into ``model`` in place (cast to the model's dtype).

    Everything is checked before anything is copied: a refused file leaves the
    model as it was. Raises :class:`AssetError` for a missing or corrupt file,
    a checkpoint made for another testbed config, and missing, unexpected or
    wrongly shaped tensors.
    """
    state, saved_config = read_vision_weights(path)
    differences = config_differences(saved_config, model.testbed_config)
    if differences:
        raise AssetError(f"{path} was trained for another testbed config: " + "; ".join(differences))
    lora = {k: v for k, v in state.items() if k.startswith(LORA_PREFIX)}
    state = {k: v for k, v in state.items() if not k.startswith(LORA_PREFIX)}
    _check_lora(model, lora, path)
    expected = trained_state(model)
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise AssetError(f"{path} does not fit the testbed: missing {missing[:4]}, unexpected {unexpected[:4]}")
    wrong = [
        f"{name} {tuple(state[name].shape)} (model {tuple(dest.shape)})"
        for name, dest in expected.items()
        if state[name].shape != dest.shape
    ]
    if wrong:
        raise AssetError(f"{path} has tensors of the wrong shape: " + ", ".join(wrong[:4]))
    bad = [name for name, tensor in state.items() if tensor.is_floating_point() and not torch.isfinite(tensor).all()]
    if bad:
        raise AssetError(f"{path} is corrupt: non-finite values in {bad[:4]}")
    for name, dest in expected.items():
        dest.copy_(state[name].to(dest.dtype))
    modules = dict(model.named_modules())
    merge_state({k[len(LORA_PREFIX) : -2]: modules[k[len(LORA_PREFIX) : -2]] for k in lora if k.endswith(".a")}, lora)


def _check_lora(model, lora: dict[str, torch.Tensor], path) -> None:
    """Every ``lora.<path>.a/.b`` pair names a linear layer of ``model`` and fits its shape."""
    modules = dict(model.named_modules())
    for key in lora:
        if not key.endswith((".a", ".b")):
            raise AssetError(f"{path} has an unexpected LoRA tensor {key}")
        name = key[len(LORA_PREFIX) : -2]
        module = modules.get(name)
        pair = f"{LORA_PREFIX}{name}." + ("b" if key.endswith(".a") else "a")
        if not isinstance(module, torch.nn.Linear) or pair not in lora:
            raise AssetError(f"{path} has a LoRA update for {name}, which the testbed lacks or is incomplete")
        a, b = (lora[key], lora[pair]) if key.endswith(".a") else (lora[pair], lora[key])
        if a.shape[1] != module.in_features or b.shape[0] != module.out_features or a.shape[0] != b.shape[1]:
            raise AssetError(f"{path} has a LoRA update of the wrong shape for {name}")
