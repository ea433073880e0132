"""One call from files to a ready testbed: ``model, processor = load_testbed(...)``.

The model is assembled from two sources: the SmolLM2 GGUF fetched by
``make assets`` (language weights) and, once trained, a committed safetensors
file with the vision tower, merger and added token rows. Every bad input is an
:class:`~sparrow_sd.errors.AssetError` that names the file and what to do, and
it is raised before the (slow) model build where possible.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from transformers import Qwen2VLForConditionalGeneration

from ..errors import AssetError
from .compose import build_testbed_model
from .config import TestbedConfig
from .language import load_smollm2_weights
from .processor import TestbedProcessor, add_vision_tokens
from .vision_io import config_differences, load_vision_weights, read_vision_weights


COMMITTED_WEIGHTS = Path(__file__).with_name("weights") / "testbed_vision.safetensors"
COMMITTED = "committed"


def load_testbed(
    vision_weights: str | os.PathLike | None = COMMITTED,
    gguf: str | os.PathLike | None = None,
    config: TestbedConfig | None = None,
    dtype: torch.dtype = torch.float32,
) -> tuple[Qwen2VLForConditionalGeneration, TestbedProcessor]:
    """The testbed target (eval mode, greedy generation config) and its processor.

    vision_weights: ``"committed"`` (the default) loads the trained weights
        shipped with sparrow-sd (``testbed/weights/``, made by ``sparrow
        testbed build``); a path loads a checkpoint written by
        ``save_vision_weights``; None keeps the random vision tower drawn from
        ``config.seed`` (an untrained testbed: text behaves exactly like
        SmolLM2, video is noise to it).
    gguf: the SmolLM2 GGUF file or a folder holding it; None looks at
        ``$SPARROW_SMOLLM2_GGUF``, then ``assets/cache`` (``make assets``).
    config: the testbed settings; None takes them from the checkpoint (or the
        defaults without one). A given config must agree with the
        checkpoint's on everything but the seed and system prompt.
    dtype: the model's dtype (the processor's pixels should match it).

    The language weights are read once per process (10-20 s) and cached; each
    call builds a fresh model (a few seconds).
    """
    saved = None
    if isinstance(vision_weights, str) and vision_weights == COMMITTED:
        if not COMMITTED_WEIGHTS.is_file():
            raise AssetError(f"the committed testbed weights are missing ({COMMITTED_WEIGHTS}); "
                             "rebuild them with `sparrow testbed build`")
        vision_weights = COMMITTED_WEIGHTS
    if vision_weights is not None:
        saved = read_vision_weights(vision_weights)[1]  # refuse a bad file before the slow build
        if config is None:
            config = saved
        elif differences := config_differences(saved, config):
            raise AssetError(f"{vision_weights} was trained for another testbed config: " + "; ".join(differences))
    config = config or TestbedConfig()
    language = load_smollm2_weights(gguf)
    model = build_testbed_model(language, config, dtype=dtype)
    if vision_weights is not None:
        load_vision_weights(model, vision_weights)
    processor = TestbedProcessor(add_vision_tokens(language.tokenizer, config), config)
    return model, processor
