"""A random-weight model with the testbed target's shapes, for timing without weights.

Speed depends on shapes, not weights: Qwen2.5-0.5B's text stack (24 layers,
width 896, 14 heads, 2 KV heads, MLP 4864, vocabulary 151,936, tied head) inside
LLaVA-OneVision with the scene reader's tiny unused tower, built from a config
in seconds and needing no asset. Benchmarks of cost curves use it.
"""

from __future__ import annotations

import torch
from transformers import LlavaOnevisionForConditionalGeneration

from ..testbed.model import testbed_hf_config

QWEN25_05B_TEXT = dict(
    vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
    num_key_value_heads=2, max_position_embeddings=32768, rope_theta=1_000_000.0, tie_word_embeddings=True,
    eos_token_id=151645, pad_token_id=151643, bos_token_id=151643,
)


def testbed_shaped_model(seed: int = 0) -> LlavaOnevisionForConditionalGeneration:
    """The testbed's class and shapes with random weights (no scene reader: feed ``inputs_embeds`` or text)."""
    config = testbed_hf_config(QWEN25_05B_TEXT, 112, 4, image_token_id=151655, video_token_id=151656)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return LlavaOnevisionForConditionalGeneration(config).eval()
