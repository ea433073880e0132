"""SmolLM2-135M-Instruct, read from its GGUF file with transformers, once per process.

transformers dequantizes the Q4_1 GGUF into an ordinary fp32
``LlamaForCausalLM`` (and undoes llama.cpp's q/k row permutation), which takes
about 10-20 s on a 2-core CPU. Tests, the testbed loader and the plain
reference model all need the same weights, so the dequantized state, the
config and the tokenizer are cached in memory per GGUF file; models are built
from that cache in about a second.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerBase
from transformers.initialization import no_init_weights

from ..errors import AssetError
from .assets import locate_gguf


@dataclass(frozen=True)
class SmolLM2Weights:
    """The dequantized language model: config, fp32 state dict and tokenizer.

    ``state`` uses ``LlamaForCausalLM``'s names (``model.layers.0...``,
    ``lm_head.weight``, the latter the same tensor as the embedding). Treat
    it as read-only: it is shared by every model built in this process, and
    builders copy from it.
    """

    path: Path
    config: LlamaConfig
    state: dict[str, torch.Tensor]
    tokenizer: PreTrainedTokenizerBase


@contextlib.contextmanager
def _quiet():
    """Hide the dequantization progress bars and info logs (the loader is not a long task)."""
    logger = logging.getLogger("transformers")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        logger.setLevel(level)


@lru_cache(maxsize=2)
def _load(path: Path, size: int, mtime_ns: int) -> SmolLM2Weights:
    folder, name = str(path.parent), path.name
    try:
        with _quiet():
            tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
            model = LlamaForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    except Exception as exc:  # the hash matched, so this is an environment problem
        raise AssetError(f"could not read the SmolLM2 GGUF {path}: {type(exc).__name__}: {exc}") from exc
    state = {k: v.detach() for k, v in model.state_dict().items()}
    return SmolLM2Weights(path=path, config=model.config, state=state, tokenizer=tokenizer)


def load_smollm2_weights(gguf: str | os.PathLike | None = None) -> SmolLM2Weights:
    """The SmolLM2 weights from ``gguf`` (see :func:`~sparrow_sd.testbed.assets.find_gguf`), cached.

    Raises :class:`~sparrow_sd.errors.AssetError` when the file is missing or
    is not the pinned SmolLM2 GGUF.
    """
    from ..paths import require_extra

    require_extra("gguf", "reading the testbed's SmolLM2 GGUF")
    path = locate_gguf(gguf).resolve()
    stat = path.stat()
    return _load(path, stat.st_size, stat.st_mtime_ns)


def build_smollm2(weights: SmolLM2Weights, dtype: torch.dtype = torch.float32) -> LlamaForCausalLM:
    """A fresh plain ``LlamaForCausalLM`` (eval mode) with the SmolLM2 weights.

    The reference the testbed's text stack is checked against; its parameters
    are copies, so training or casting it leaves the cache untouched.
    """
    with no_init_weights():
        model = LlamaForCausalLM(weights.config)
    model.load_state_dict(weights.state, strict=True)
    model.tie_weights()
    model.generation_config.do_sample = False
    return model.to(dtype).eval()
