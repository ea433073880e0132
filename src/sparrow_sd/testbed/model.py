"""The testbed Video LLM: Hugging Face's LLaVA-OneVision with a scene reader for eyes.

No vision encoder weights can be fetched here, so the visual encoder is a
*scene reader* (:mod:`.scene_reader`): from the decoded frames it reads each
frame's objects and what changed since the previous frame, writes that as a
short line of text, and emits the language model's own input embeddings of
that line, padded with a filler to the fixed number of tokens LLaVA-OneVision
gives a frame (196 by default). The language model therefore reads visual
tokens it already understands, at 1-D positions, like text.

It plugs in through one public seam: the inner ``LlavaOnevisionModel``'s
``get_video_features``, which ``forward`` (and so ``generate()``) calls to turn
``pixel_values_videos`` into the embeddings scattered over the ``<|video_pad|>``
placeholders. The inner model's class is swapped for a subclass that overrides
that method (:func:`attach_scene_reader`); the outer model stays exactly
``LlavaOnevisionForConditionalGeneration``, so the engine's LLaVA-OneVision
adapter, the cache and ``generate()`` are Hugging Face's, unchanged. (The
unused SigLIP tower and projector are kept tiny and zero: they are part of the
class, not of the computation.)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from transformers import LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.models.llava_onevision.modeling_llava_onevision import LlavaOnevisionModel

from ..errors import InvalidInputError


class SceneEncoder:
    """Frames -> per-frame token ids: the scene line of each frame, padded to a fixed length.

    ``encode`` turns text into the language model's token ids (the tokenizer,
    or a toy encoder for tiny test models); ``filler_id`` pads each line to
    ``tokens_per_frame``. A line longer than that is cut (it never is with the
    default 196 tokens: a SynthVideo line is at most about 70).
    """

    def __init__(self, encode: Callable[[str], list[int]], filler_id: int, tokens_per_frame: int,
                 read_lines: Callable[[np.ndarray], list[str]] | None = None, unchanged_frames: str = "repeat"):
        if tokens_per_frame < 1:
            raise InvalidInputError(f"tokens_per_frame must be positive, got {tokens_per_frame}")
        if unchanged_frames not in ("filler", "repeat"):
            raise InvalidInputError(f"unchanged_frames must be 'filler' or 'repeat', got {unchanged_frames!r}")
        self.unchanged_frames = unchanged_frames
        self.encode = encode
        self.filler_id = int(filler_id)
        self.tokens_per_frame = int(tokens_per_frame)
        if read_lines is None:
            from .scene_reader import read_video_lines as read_lines
        self.read_lines = read_lines

    def line_ids(self, lines: Sequence[str]) -> torch.Tensor:
        """(F, tokens_per_frame) ids of ``lines``, each cut or padded with the filler."""
        out = torch.full((len(lines), self.tokens_per_frame), self.filler_id, dtype=torch.long)
        for row, line in enumerate(lines):
            ids = self.encode(line)[: self.tokens_per_frame]
            out[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        return out

    def frame_ids(self, frames: np.ndarray) -> torch.Tensor:
        """(F, tokens_per_frame) ids for uint8 frames (F, H, W, 3)."""
        lines = self.read_lines(frames)
        return self.line_ids(lines if self.unchanged_frames == "repeat" else changed_frame_lines(lines))


CHANGES_MARK = " Changes: "


def changed_frame_lines(lines: Sequence[str]) -> list[str]:
    """The lines a frame keeps when unchanged frames show filler only.

    The first and last frames keep their line (what is there at the start and
    at the end), and so does every frame that says what changed; every other
    line becomes empty, i.e. all filler.
    """
    last = len(lines) - 1
    return [line if t in (0, last) or CHANGES_MARK in line else "" for t, line in enumerate(lines)]


def pixels_to_frames(pixel_values_videos: torch.Tensor) -> np.ndarray:
    """(B, F, 3, H, W) pixel values on the 0..255 scale -> uint8 (B, F, H, W, 3)."""
    if pixel_values_videos.ndim != 5 or pixel_values_videos.shape[2] != 3:
        raise InvalidInputError(f"pixel_values_videos must be (batch, frames, 3, H, W), got {tuple(pixel_values_videos.shape)}")
    pixels = pixel_values_videos.detach().float().round().clamp(0, 255).to(torch.uint8)
    return pixels.permute(0, 1, 3, 4, 2).cpu().numpy()


class SceneReaderOnevisionModel(LlavaOnevisionModel):
    """``LlavaOnevisionModel`` whose video features come from the scene reader.

    Instances are made by :func:`attach_scene_reader` (a class swap on a built
    model), which sets ``scene_encoder``.
    """

    scene_encoder: SceneEncoder

    def get_video_features(self, pixel_values_videos: torch.Tensor, **kwargs) -> BaseModelOutputWithPooling:
        frames = pixels_to_frames(pixel_values_videos)
        ids = torch.stack([self.scene_encoder.frame_ids(clip) for clip in frames])  # (B, F, T)
        embed = self.get_input_embeddings()
        features = embed(ids.to(embed.weight.device)).flatten(1, 2)  # (B, F*T, H)
        newline = self.image_newline.to(features.dtype)[None, None].expand(features.shape[0], 1, -1)
        return BaseModelOutputWithPooling(pooler_output=torch.cat([features, newline], dim=1))

    def get_image_features(self, *args, **kwargs):
        raise InvalidInputError("the testbed reads videos only; pass the image as a one-frame video")


def attach_scene_reader(model: LlavaOnevisionForConditionalGeneration, encoder: SceneEncoder) -> None:
    """Make ``model`` read videos with ``encoder`` (in place; the outer class is unchanged)."""
    vision = model.config.vision_config
    side = -(-(vision.image_size // vision.patch_size) // 2)
    if side * side != encoder.tokens_per_frame:
        raise InvalidInputError(
            f"the model gives a frame {side * side} tokens, the scene encoder writes {encoder.tokens_per_frame}"
        )
    model.model.__class__ = SceneReaderOnevisionModel
    model.model.scene_encoder = encoder


def testbed_hf_config(text_config: dict, image_size: int, patch_size: int, image_token_id: int,
                      video_token_id: int) -> LlavaOnevisionConfig:
    """LLaVA-OneVision's config around a Qwen2 text config, with a minimal (unused) SigLIP tower."""
    vision = dict(
        model_type="siglip_vision_model", hidden_size=8, intermediate_size=8, num_hidden_layers=1,
        num_attention_heads=1, image_size=image_size, patch_size=patch_size, vision_use_head=False,
    )
    return LlavaOnevisionConfig(
        text_config={**text_config, "model_type": "qwen2"},
        vision_config=vision,
        image_token_index=image_token_id,
        video_token_index=video_token_id,
        vision_feature_select_strategy="full",
        vision_feature_layer=-1,
        tie_word_embeddings=bool(text_config.get("tie_word_embeddings", True)),
    )


@torch.no_grad()
def zero_unused_vision(model: LlavaOnevisionForConditionalGeneration) -> None:
    """Zero the SigLIP tower and projector the scene reader replaces (deterministic, visibly unused)."""
    for module in (model.model.vision_tower, model.model.multi_modal_projector):
        for param in module.parameters():
            param.zero_()
