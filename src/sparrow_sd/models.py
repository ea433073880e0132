"""Loading a target and its processor: the testbed, or a Hugging Face model folder on disk.

Only local folders are read (``local_files_only=True``): nothing is fetched
at run time. The returned ``make_inputs(question, frames)`` builds the
model's inputs for one video and one question with the model's own processor
and chat template, so the placeholder count always matches the video.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .errors import InvalidInputError, UnsupportedModelError
from .targets import supported_model_classes

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


@dataclass
class LoadedTarget:
    """A target model with its processor's two jobs: inputs for (question, frames), and decoding."""

    model: torch.nn.Module
    make_inputs: Callable[[str, np.ndarray], dict]
    decode: Callable[[list[int]], str]


def load_target(name: str, dtype: str = "fp32", device: str = "cpu", language: str | None = None) -> LoadedTarget:
    """The target for ``'testbed'`` (committed weights), ``'testbed:<weights file>'`` (e.g. a fresh
    ``sparrow testbed build`` output), a local Hugging Face model folder, or
    ``'tiny:<arch>'``: a tiny random model for smoke tests (it ignores the question text and
    reads only the frame count)."""
    torch_dtype = DTYPES[dtype]
    if name.startswith("tiny:"):
        return _tiny(name.split(":", 1)[1], torch_dtype, device)
    if name == "testbed" or name.startswith("testbed:"):
        from .testbed import load_testbed

        weights = name.split(":", 1)[1] if ":" in name else "committed"
        model, processor = load_testbed(weights, language=language, dtype=torch_dtype)
        model.to(device)
        return LoadedTarget(model, lambda question, frames: processor(question, frames, dtype=torch_dtype).to(device),
                            processor.decode)
    return _load_folder(Path(name), torch_dtype, device)


def _load_folder(folder: Path, dtype: torch.dtype, device: str):
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise InvalidInputError(f"--model {folder}: not a model folder (no config.json); give a local "
                                "Hugging Face model folder or 'testbed'")
    try:
        architectures = json.loads(config_path.read_text()).get("architectures") or []
    except json.JSONDecodeError as err:
        raise InvalidInputError(f"{config_path} is not valid JSON: {err}") from err
    import transformers

    supported = supported_model_classes()
    known = [a for a in architectures if a in supported]
    if not known:
        raise UnsupportedModelError(f"{folder} holds a {architectures or 'model of unknown class'}; "
                                    f"supported: {', '.join(supported)}")
    try:
        model = getattr(transformers, known[0]).from_pretrained(folder, dtype=dtype, attn_implementation="sdpa",
                                                                local_files_only=True)
    except (OSError, ValueError, RuntimeError) as err:  # no weights, damaged weights, shapes that disagree
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise InvalidInputError(f"--model {folder}: cannot load the {known[0]} weights: {first}") from err
    model = model.to(device).eval()
    from transformers import AutoProcessor

    try:
        processor = AutoProcessor.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError) as err:
        raise InvalidInputError(f"{folder} has no usable processor files: {err}") from err

    def make_inputs(question: str, frames: np.ndarray) -> dict:
        messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": question}]}]
        text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        inputs = processor(text=[text], videos=[list(frames)], return_tensors="pt")
        return {k: (v.to(device, dtype) if torch.is_floating_point(v) else v.to(device)) for k, v in inputs.items()}

    return LoadedTarget(model, make_inputs, lambda ids: processor.decode(ids, skip_special_tokens=True))


def _tiny(arch: str, dtype: torch.dtype, device: str) -> LoadedTarget:
    from .testing import build_tiny_model, make_video_inputs
    from .testing.tiny_models import ARCHS

    if arch not in ARCHS:
        raise UnsupportedModelError(f"--model tiny:{arch}: no tiny {arch!r} model; the tiny architectures are "
                                    f"{', '.join('tiny:' + a for a in ARCHS)}")

    model = build_tiny_model(arch, seed=0, dtype=dtype).to(device)

    def make_inputs(question: str, frames: np.ndarray) -> dict:
        inputs = make_video_inputs(arch, model, num_frames=len(frames), prompt_ids_before=[1, 2, 3],
                                   prompt_ids_after=[4, 5, 6, 7], seed=len(frames), dtype=dtype)
        return {k: v.to(device) for k, v in inputs.items()}

    return LoadedTarget(model, make_inputs, lambda ids: " ".join(str(i) for i in ids))
