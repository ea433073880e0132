"""The testbed's processor: frames and a question in, LLaVA-OneVision model inputs out.

Built in code from :class:`TestbedConfig` and Qwen2's tokenizer (no processor
files exist for this model), it does what a LLaVA-OneVision processor does for
one video and batch 1:

- frames, uint8 (T, H, W, 3) RGB as produced by ``sparrow_sd.synth.make_clip``
  or a decoded video file, are resized to ``image_size`` squared when they are
  not already (bilinear, antialiased) and kept on the 0..255 scale (see
  :mod:`.config`): ``pixel_values_videos`` is (1, T, 3, S, S);
- the prompt is Qwen2's chat format with the video's placeholders opening the
  user turn, as LLaVA-OneVision's template places ``<video>``::

      <|im_start|>system\\n{system}<|im_end|>\\n<|im_start|>user\\n
      <|video_pad|>*N\\n{question}<|im_end|>\\n<|im_start|>assistant\\n

  N = T * tokens_per_frame + 1, the count the model checks its features against.

The placeholder run is built as ids, not as an N-token string, so a 25k-token
prompt costs nothing to tokenize.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from transformers import BatchFeature, PreTrainedTokenizerBase

from ..errors import InvalidInputError
from .config import IMAGE_PAD, VIDEO_PAD, TestbedConfig


class TestbedProcessor:
    """Turns (question, frames) into ``model(**inputs)`` / ``model.generate(**inputs)`` inputs."""

    __test__ = False  # not a pytest test class despite the name

    def __init__(self, tokenizer: PreTrainedTokenizerBase, config: TestbedConfig | None = None,
                 video_token_id: int | None = None, image_token_id: int | None = None):
        self.config = config or TestbedConfig()
        self.tokenizer = tokenizer
        self.video_token_id = video_token_id if video_token_id is not None else tokenizer.convert_tokens_to_ids(VIDEO_PAD)
        self.image_token_id = image_token_id if image_token_id is not None else tokenizer.convert_tokens_to_ids(IMAGE_PAD)
        if self.video_token_id is None or self.video_token_id == tokenizer.unk_token_id:
            raise InvalidInputError(f"the tokenizer has no {VIDEO_PAD} token")
        self.eos_token_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
        self.pad_token_id = tokenizer.pad_token_id

    def num_video_tokens(self, num_frames: int) -> int:
        """Placeholders a clip of ``num_frames`` frames occupies (196 per frame + 1)."""
        return self.config.num_video_tokens(num_frames)

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` without special tokens added."""
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def frames_to_tensor(self, frames) -> torch.Tensor:
        """uint8 (T, H, W, 3) -> float32 (T, 3, S, S) on the 0..255 scale."""
        array = np.asarray(frames)
        if array.ndim != 4 or array.shape[-1] != 3:
            raise InvalidInputError(f"frames must be (T, H, W, 3) RGB, got shape {array.shape}")
        if array.dtype != np.uint8:
            raise InvalidInputError(f"frames must be uint8, got {array.dtype}")
        if array.shape[0] < 1:
            raise InvalidInputError("frames hold no frame")
        video = torch.from_numpy(np.ascontiguousarray(array)).permute(0, 3, 1, 2).float()
        size = self.config.frame_size
        if tuple(video.shape[-2:]) != size:
            video = F.interpolate(video, size=size, mode="bilinear", antialias=True, align_corners=False)
            video = video.round().clamp(0, 255)
        return video

    def prompt_ids(self, question: str, num_video_tokens: int = 0, system_prompt: str | None = None) -> list[int]:
        """Chat-formatted prompt ids with ``num_video_tokens`` placeholders (none: text only)."""
        system = self.config.system_prompt if system_prompt is None else system_prompt
        before = self.encode(f"<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n")
        after = self.encode(f"{question}<|im_end|>\n<|im_start|>assistant\n")
        video = [self.video_token_id] * num_video_tokens + self.encode("\n") if num_video_tokens else []
        return before + video + after

    def __call__(self, question: str, frames=None, system_prompt: str | None = None,
                 dtype: torch.dtype = torch.float32) -> BatchFeature:
        """Model inputs for ``question`` about ``frames`` (a text-only prompt when ``frames`` is None).

        ``dtype`` is the dtype of ``pixel_values_videos`` (use the model's; the
        0..255 integers are exact in all of them).
        """
        data = {}
        count = 0
        if frames is not None:
            video = self.frames_to_tensor(frames)
            count = self.num_video_tokens(video.shape[0])
            data["pixel_values_videos"] = video[None].to(dtype)
        ids = torch.tensor([self.prompt_ids(question, count, system_prompt)], dtype=torch.long)
        return BatchFeature({"input_ids": ids, "attention_mask": torch.ones_like(ids), **data})

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        """Text of ``ids`` (a list, or a 1-D / (1, L) tensor); special tokens dropped by default."""
        if isinstance(ids, torch.Tensor):
            ids = ids.reshape(-1).tolist()
        elif isinstance(ids, Sequence) and ids and isinstance(ids[0], Sequence):
            raise InvalidInputError("decode takes one sequence; use batch_decode for several")
        return self.tokenizer.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def batch_decode(self, sequences, skip_special_tokens: bool = True) -> list[str]:
        return [self.decode(row, skip_special_tokens) for row in sequences]
