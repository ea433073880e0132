"""The testbed target: a real Hugging Face Video LLM class with real language weights.

Qwen2.5-Coder-0.5B-Instruct (32k context; fetched by ``make assets``) inside
``LlavaOnevisionForConditionalGeneration``, whose visual encoder is a scene
reader (:mod:`.scene_reader`): it reads each frame's objects and changes from
the pixels and hands the language model the embeddings of that text, 196
tokens per frame. A LoRA trained here (``sparrow testbed build``) teaches the
detailed descriptions. It stands in for LLaVA-OneVision-7B where no Video LLM
weights can be fetched::

    from sparrow_sd.testbed import load_testbed
    model, processor = load_testbed()
    inputs = processor("Describe this video in detail.", frames)   # uint8 (T, H, W, 3)
    out = model.generate(**inputs, max_new_tokens=300)
    print(processor.decode(out[0, inputs["input_ids"].shape[1]:]))

Files: ``config.py`` (settings, token counts), ``assets.py`` (fetching and
checking the weights), ``language.py`` (reading them), ``scene_reader.py``
(pixels to objects) and ``scene_lines.py`` (objects to lines, and the true
lines), ``model.py`` (the LLaVA-OneVision seam), ``processor.py``, ``lora.py``
and ``weights_io.py`` (the trained part), ``loader.py`` (one call),
``training.py`` / ``build.py`` (the recipe), ``evaluate.py`` (the description
metrics).
"""

from .config import TestbedConfig
from .loader import COMMITTED_WEIGHTS, build_testbed_model, load_testbed
from .processor import TestbedProcessor

__all__ = ["COMMITTED_WEIGHTS", "TestbedConfig", "TestbedProcessor", "build_testbed_model", "load_testbed"]
