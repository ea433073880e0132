"""The testbed target: a real Hugging Face Video LLM class with real language weights.

SmolLM2-135M-Instruct (fetched by ``make assets``) inside
``Qwen2VLForConditionalGeneration``, with a small vision tower trained here,
and a processor built in code. It stands in for Qwen2.5-VL-7B where no Video
LLM weights can be fetched::

    from sparrow_sd.testbed import load_testbed
    model, processor = load_testbed()                 # or load_testbed("vision.safetensors")
    inputs = processor("What happens in the video?", frames)   # uint8 (T, H, W, 3)
    out = model.generate(**inputs, max_new_tokens=64)
    print(processor.decode(out[0, inputs["input_ids"].shape[1]:]))

Files: ``config.py`` (settings, token counts), ``assets.py`` (finding and
checking the GGUF), ``language.py`` (reading it), ``compose.py`` (the weight
mapping), ``patches.py`` (Qwen patch layout), ``processor.py``,
``vision_io.py`` (the trained part's checkpoint), ``loader.py`` (one call).
"""

from .assets import ENV_VAR, GGUF_NAME, fetch_command, find_gguf, locate_gguf
from .compose import build_testbed_model, testbed_hf_config
from .config import TestbedConfig
from .language import SmolLM2Weights, build_smollm2, load_smollm2_weights
from .loader import load_testbed
from .patches import qwen_grid, qwen_patchify
from .processor import TestbedProcessor, add_vision_tokens
from .vision_io import load_vision_weights, read_vision_weights, save_vision_weights

__all__ = [
    "ENV_VAR",
    "GGUF_NAME",
    "SmolLM2Weights",
    "TestbedConfig",
    "TestbedProcessor",
    "add_vision_tokens",
    "build_smollm2",
    "build_testbed_model",
    "fetch_command",
    "find_gguf",
    "load_smollm2_weights",
    "load_testbed",
    "load_vision_weights",
    "locate_gguf",
    "qwen_grid",
    "qwen_patchify",
    "read_vision_weights",
    "save_vision_weights",
    "testbed_hf_config",
]
