"""Qwen2.5-Coder-0.5B-Instruct's weights, config and tokenizer, read once per process.

The converted folder (see :mod:`.assets`) holds plain fp32 safetensors, so
reading it is a memory map and a hash check (a few seconds), not the ~50 s
GGUF dequantization. Tests, the loader and the plain reference model share
one in-memory copy; builders copy from it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch
from safetensors.torch import load_file
from transformers import AutoTokenizer, PreTrainedTokenizerBase, Qwen2Config, Qwen2ForCausalLM
from transformers.initialization import no_init_weights

from ..errors import AssetError
from .assets import WEIGHTS, language_dir, verify_language_dir


@dataclass(frozen=True)
class LanguageWeights:
    """The language model: config, fp32 state dict (``Qwen2ForCausalLM`` names, no separate head) and tokenizer.

    Treat ``state`` as read-only: every model built in this process copies from it.
    """

    path: Path
    config: Qwen2Config
    state: dict[str, torch.Tensor]
    tokenizer: PreTrainedTokenizerBase


@lru_cache(maxsize=2)
def _load(folder: Path) -> LanguageWeights:
    verify_language_dir(folder)
    try:
        config = Qwen2Config.from_pretrained(str(folder))
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
        state = load_file(str(folder / WEIGHTS))
    except Exception as exc:  # the hash matched, so this is an environment problem
        raise AssetError(f"could not read the language weights in {folder}: {type(exc).__name__}: {exc}") from exc
    return LanguageWeights(path=folder, config=config, state=state, tokenizer=tokenizer)


def load_language_weights(path: str | os.PathLike | None = None) -> LanguageWeights:
    """The converted Qwen2.5-Coder weights (see :func:`~sparrow_sd.testbed.assets.language_dir`), cached."""
    return _load(language_dir(path).resolve())


def build_language_model(weights: LanguageWeights, dtype: torch.dtype = torch.float32) -> Qwen2ForCausalLM:
    """A fresh plain ``Qwen2ForCausalLM`` (eval mode, greedy) with these weights: the text-only reference."""
    with no_init_weights():
        model = Qwen2ForCausalLM(weights.config)
    model.model.load_state_dict({k[len("model."):]: v for k, v in weights.state.items()}, strict=True)
    model.tie_weights()
    model.generation_config.do_sample = False
    return model.to(dtype).eval()
