"""The testbed's processor: frames and a question in, Qwen2-VL model inputs out.

Built in code from :class:`TestbedConfig` and SmolLM2's tokenizer (no
processor files exist for this model), it does what a Hugging Face Qwen2-VL
processor does, for one video and batch 1:

- frames, uint8 (T, H, W, 3) RGB as produced by ``sparrow_sd.synth.make_clip``
  or ``sparrow_sd.video.read_video``, are resized to ``config.frame_size``
  (bilinear, antialiased), scaled to [0, 1], normalised with the fixed
  ``image_mean`` / ``image_std``, padded to an even count by repeating the
  last frame, and cut into the flattened patches the vision tower reads;
- the prompt is SmolLM2-Instruct's chat format with the video block at the
  start of the user turn, as Qwen2-VL's template places it::

      <|im_start|>system\\n{system}<|im_end|>\\n<|im_start|>user\\n
      <|vision_start|><|video_pad|>*N<|vision_end|>{question}<|im_end|>\\n
      <|im_start|>assistant\\n

  (without a video the user turn is just the question: exactly SmolLM2's own
  chat template). N is the video's token count, so the model's check that
  placeholders match features always holds.

The placeholder run is built as ids, not as an N-token string, so a 25k-token
prompt costs nothing to tokenize; the text around it is tokenized separately,
which gives the same ids because special tokens always split the text.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from transformers import AddedToken, BatchFeature, PreTrainedTokenizerBase

from ..errors import InvalidInputError
from .config import TestbedConfig
from .patches import qwen_patchify

VIDEO_TOKEN_TYPE = 2  # mm_token_type_ids: 0 text, 1 image, 2 video


def add_vision_tokens(tokenizer: PreTrainedTokenizerBase, config: TestbedConfig) -> PreTrainedTokenizerBase:
    """A copy of ``tokenizer`` with the four vision special tokens appended, in config order.

    Refuses a tokenizer where they would not get the ids the model config
    assigns (``len(tokenizer) .. len(tokenizer) + 3``).
    """
    tokenizer = copy.deepcopy(tokenizer)
    base = len(tokenizer)
    added = [AddedToken(t, special=True, normalized=False, lstrip=False, rstrip=False) for t in config.special_tokens]
    tokenizer.add_tokens(added, special_tokens=True)
    ids = tokenizer.convert_tokens_to_ids(list(config.special_tokens))
    if ids != list(range(base, base + len(added))):
        raise InvalidInputError(f"vision tokens got ids {ids}, expected {base}..{base + len(added) - 1}")
    return tokenizer


class TestbedProcessor:
    """Turns (frames, question) into ``model(**inputs)`` / ``model.generate(**inputs)`` inputs.

    ``tokenizer`` must already hold the vision tokens (see
    :func:`add_vision_tokens`); :func:`sparrow_sd.testbed.load_testbed` builds
    one. Outputs are batch 1: ``input_ids``, ``attention_mask`` and
    ``mm_token_type_ids`` (1, L); with frames also ``pixel_values_videos``
    (patches, C*2*4*4) and ``video_grid_thw`` (1, 3).
    """

    __test__ = False  # not a pytest test class despite the name

    def __init__(self, tokenizer: PreTrainedTokenizerBase, config: TestbedConfig | None = None):
        self.config = config or TestbedConfig()
        self.tokenizer = tokenizer
        ids = tokenizer.convert_tokens_to_ids(list(self.config.special_tokens))
        if any(i is None or i == tokenizer.unk_token_id for i in ids):
            raise InvalidInputError("tokenizer lacks the vision tokens; build it with add_vision_tokens()")
        self.vision_start_token_id, self.vision_end_token_id, self.image_token_id, self.video_token_id = ids
        self.eos_token_id = tokenizer.eos_token_id
        self.pad_token_id = tokenizer.pad_token_id

    # -- video -----------------------------------------------------------------

    def num_video_tokens(self, num_frames: int) -> int:
        """Placeholders a clip of ``num_frames`` frames occupies (324 per frame pair by default)."""
        return self.config.num_video_tokens(num_frames)

    def frames_to_tensor(self, frames) -> torch.Tensor:
        """uint8 (T, H, W, 3) -> normalised float32 (T, 3, H', W') at ``config.frame_size``."""
        array = np.asarray(frames)
        if array.ndim != 4 or array.shape[-1] != 3:
            raise InvalidInputError(f"frames must be (T, H, W, 3) RGB, got shape {array.shape}")
        if array.dtype != np.uint8:
            raise InvalidInputError(f"frames must be uint8, got {array.dtype}")
        if array.shape[0] < 1:
            raise InvalidInputError("frames hold no frame")
        video = torch.from_numpy(np.ascontiguousarray(array)).permute(0, 3, 1, 2).float()
        size = tuple(self.config.frame_size)
        if tuple(video.shape[-2:]) != size:
            video = F.interpolate(video, size=size, mode="bilinear", antialias=True, align_corners=False)
            video = video.clamp(0, 255)
        mean = torch.tensor(self.config.image_mean).view(1, 3, 1, 1)
        std = torch.tensor(self.config.image_std).view(1, 3, 1, 1)
        return (video / 255.0 - mean) / std

    def preprocess_video(self, frames, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
        """``(pixel_values_videos, video_grid_thw)`` for one clip, in Qwen2-VL's patch layout."""
        patches, grid = qwen_patchify(self.frames_to_tensor(frames), self.config)
        return patches.to(dtype), grid

    # -- text ------------------------------------------------------------------

    def _encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def prompt_ids(self, question: str, num_video_tokens: int = 0, system_prompt: str | None = None) -> list[int]:
        """Chat-formatted prompt ids with ``num_video_tokens`` placeholders (none: text only)."""
        system = self.config.system_prompt if system_prompt is None else system_prompt
        before = self._encode(f"<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n")
        after = self._encode(f"{question}<|im_end|>\n<|im_start|>assistant\n")
        video = []
        if num_video_tokens:
            video = [self.vision_start_token_id, *[self.video_token_id] * num_video_tokens, self.vision_end_token_id]
        return before + video + after

    def prompt_text(self, question: str, num_video_tokens: int = 0, system_prompt: str | None = None) -> str:
        """The prompt as a string (for display; the placeholders are spelled out)."""
        return self.tokenizer.decode(self.prompt_ids(question, num_video_tokens, system_prompt))

    # -- both --------------------------------------------------------------------

    def __call__(
        self,
        question: str,
        frames=None,
        system_prompt: str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> BatchFeature:
        """Model inputs for ``question`` about ``frames`` (or a text-only prompt when ``frames`` is None).

        ``dtype`` is the dtype of ``pixel_values_videos`` (use the model's).
        """
        data = {}
        count = 0
        if frames is not None:
            patches, grid = self.preprocess_video(frames, dtype)
            count = int(grid.prod()) // self.config.spatial_merge_size**2
            data = {"pixel_values_videos": patches, "video_grid_thw": grid}
        ids = torch.tensor([self.prompt_ids(question, count, system_prompt)], dtype=torch.long)
        data = {
            "input_ids": ids,
            "attention_mask": torch.ones_like(ids),
            "mm_token_type_ids": (ids == self.video_token_id).long() * VIDEO_TOKEN_TYPE,
            **data,
        }
        return BatchFeature(data)

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        """Text of ``ids`` (a list, or a 1-D / (1, L) tensor); special tokens dropped by default."""
        if isinstance(ids, torch.Tensor):
            ids = ids.reshape(-1).tolist()
        elif isinstance(ids, Sequence) and ids and isinstance(ids[0], Sequence):
            raise InvalidInputError("decode takes one sequence; use batch_decode for several")
        return self.tokenizer.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def batch_decode(self, sequences, skip_special_tokens: bool = True) -> list[str]:
        """:meth:`decode` for each row of a (B, L) tensor or list of lists."""
        return [self.decode(row, skip_special_tokens) for row in sequences]
