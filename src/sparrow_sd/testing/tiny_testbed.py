"""A tiny random language model inside the testbed's exact class, for fast exactness tests.

The real testbed needs the fetched Qwen2.5-Coder weights and runs a 0.5B model;
the engine's guarantees (tokens identical to ``generate()``) must hold for the
*class* -- ``LlavaOnevisionForConditionalGeneration`` with the scene reader
attached at the inner model's ``get_video_features`` -- whatever the weights.
This builds that class around a 2-layer random Qwen2 in milliseconds.

Frames are 40x40 SynthVideo frames (10x10 patches pooled to 25 tokens a frame);
scene lines are tokenized by hashing each word into the tiny vocabulary, so
different videos give different visual tokens.
"""

from __future__ import annotations

import zlib

import numpy as np
import torch
from transformers import LlavaOnevisionForConditionalGeneration

from ..testbed.model import SceneEncoder, attach_scene_reader, testbed_hf_config, zero_unused_vision

TINY_VOCAB = 256
TINY_IMAGE_SIZE = 40
TINY_PATCH = 4
TINY_TOKENS_PER_FRAME = 25  # ceil(10 / 2) ** 2
VIDEO_ID, IMAGE_ID, EOS_ID, PAD_ID, FILLER_ID = 255, 254, 253, 252, 251
TEXT_IDS = range(0, 240)  # ids an ordinary word or prompt token may take


def word_hash_encode(text: str) -> list[int]:
    """Each word (and each punctuation mark) to a stable id in ``TEXT_IDS``."""
    words = text.replace(",", " ,").replace(".", " .").replace(";", " ;").replace(":", " :").split()
    return [zlib.crc32(word.encode()) % len(TEXT_IDS) for word in words]


def build_tiny_testbed(seed: int = 0, dtype: torch.dtype = torch.float32,
                       sliding_window: int | None = None) -> LlavaOnevisionForConditionalGeneration:
    """The testbed's class and seam around a random 2-layer Qwen2 (eval mode, greedy)."""
    text = dict(
        vocab_size=TINY_VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=4096, tie_word_embeddings=True, rope_theta=10000.0,
        eos_token_id=EOS_ID, pad_token_id=PAD_ID, bos_token_id=PAD_ID, initializer_range=0.2,
    )
    if sliding_window is not None:
        text.update(use_sliding_window=True, sliding_window=sliding_window, max_window_layers=0)
    config = testbed_hf_config(text, TINY_IMAGE_SIZE, TINY_PATCH, IMAGE_ID, VIDEO_ID)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = LlavaOnevisionForConditionalGeneration(config)
    zero_unused_vision(model)
    attach_scene_reader(model, SceneEncoder(word_hash_encode, FILLER_ID, TINY_TOKENS_PER_FRAME))
    gen = model.generation_config
    gen.do_sample, gen.eos_token_id, gen.pad_token_id = False, EOS_ID, PAD_ID
    return model.to(dtype).eval()


def tiny_testbed_inputs(frames: np.ndarray, prompt_before: list[int], prompt_after: list[int],
                        dtype: torch.dtype = torch.float32) -> dict:
    """Inputs for uint8 frames (T, 40, 40, 3): the prompt around T*25+1 video placeholders."""
    count = frames.shape[0] * TINY_TOKENS_PER_FRAME + 1
    ids = torch.tensor([prompt_before + [VIDEO_ID] * count + prompt_after])
    pixels = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)[None].to(dtype)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "pixel_values_videos": pixels}


class TinyTestbedProcessor:
    """The parts of :class:`~sparrow_sd.testbed.TestbedProcessor` that training and evaluation use,
    for the tiny testbed (word-hash tokens, 40x40 frames)."""

    def __init__(self):
        from ..testbed.config import TestbedConfig

        self.config = TestbedConfig(image_size=TINY_IMAGE_SIZE, patch_size=TINY_PATCH)
        self.eos_token_id, self.pad_token_id, self.video_token_id = EOS_ID, PAD_ID, VIDEO_ID

    def num_video_tokens(self, num_frames: int) -> int:
        return num_frames * TINY_TOKENS_PER_FRAME + 1

    def encode(self, text: str) -> list[int]:
        return word_hash_encode(text)

    def prompt_ids(self, question: str, num_video_tokens: int = 0, system_prompt: str | None = None) -> list[int]:
        return [1, 2, 3] + [VIDEO_ID] * num_video_tokens + word_hash_encode(question) + [4]

    def frames_to_tensor(self, frames) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()

    def __call__(self, question: str, frames=None, system_prompt=None, dtype=torch.float32) -> dict:
        count = self.num_video_tokens(len(frames)) if frames is not None else 0
        ids = torch.tensor([self.prompt_ids(question, count)])
        data = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
        if frames is not None:
            data["pixel_values_videos"] = self.frames_to_tensor(frames)[None].to(dtype)
        return data

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        if isinstance(ids, torch.Tensor):
            ids = ids.reshape(-1).tolist()
        return " ".join(f"w{i}" for i in ids)
