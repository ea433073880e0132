"""A random-weight model with the testbed target's shapes, for timing without weights.

Speed depends on shapes, not weights: SmolLM2-135M's text stack (30 layers,
width 576, 9 heads, 3 KV heads) inside Qwen2-VL with the tiny vision tower,
built in milliseconds and needing no asset. Benchmarks of cost curves use it.
"""

from __future__ import annotations

import torch
from transformers import Qwen2VLForConditionalGeneration

from .tiny_models import tiny_config


def testbed_shaped_model(seed: int = 0) -> Qwen2VLForConditionalGeneration:
    config = tiny_config("qwen2_vl", vocab_size=49156)
    text = config.text_config
    text.hidden_size, text.intermediate_size, text.num_hidden_layers = 576, 1536, 30
    text.num_attention_heads, text.num_key_value_heads, text.head_dim = 9, 3, 64
    text.layer_types = ["full_attention"] * 30
    text.rope_parameters = {"rope_type": "default", "rope_theta": 100000.0, "mrope_section": [8, 12, 12]}
    config.vision_config.hidden_size = 576
    torch.manual_seed(seed)
    return Qwen2VLForConditionalGeneration(config).eval()
