"""One call from files to a ready testbed: ``model, processor = load_testbed()``.

The model is assembled from the converted Qwen2.5-Coder folder (language
weights, see :mod:`.assets`) and the committed LoRA (``testbed/weights/``,
made by ``sparrow testbed build``), merged at load time. Every bad input is an
:class:`~sparrow_sd.errors.AssetError` that names the file and what to do,
raised before the model is built where possible.
"""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path

import torch
from transformers import LlavaOnevisionForConditionalGeneration
from transformers.initialization import no_init_weights

from ..errors import AssetError
from .config import IMAGE_PAD, REPETITION_PENALTY, VIDEO_PAD, TestbedConfig
from .language import LanguageWeights, load_language_weights
from .model import SceneEncoder, attach_scene_reader, testbed_hf_config, zero_unused_vision
from .processor import TestbedProcessor
from .scene_reader import read_video_lines
from .weights_io import merge_lora, read_lora

COMMITTED_WEIGHTS = Path(__file__).with_name("weights") / "testbed_lora.safetensors"
COMMITTED = "committed"


def build_testbed_model(language: LanguageWeights, config: TestbedConfig,
                        dtype: torch.dtype = torch.float32) -> LlavaOnevisionForConditionalGeneration:
    """The untrained testbed (eval mode, greedy with REPETITION_PENALTY): Qwen2.5-Coder inside LLaVA-OneVision, scene reader attached."""
    tokenizer = language.tokenizer
    video_id, image_id = tokenizer.convert_tokens_to_ids([VIDEO_PAD, IMAGE_PAD])
    hf_config = testbed_hf_config(language.config.to_dict(), config.image_size, config.patch_size, image_id, video_id)
    with no_init_weights():
        model = LlavaOnevisionForConditionalGeneration(hf_config)
    model.model.language_model.load_state_dict({k[len("model."):]: v for k, v in language.state.items()}, strict=True)
    model.tie_weights()
    zero_unused_vision(model)
    embed = model.get_input_embeddings().weight
    with torch.no_grad():
        newline = tokenizer("\n", add_special_tokens=False)["input_ids"]
        model.model.image_newline.copy_(embed[newline[0]])
    filler = tokenizer(config.filler, add_special_tokens=False)["input_ids"]
    if len(filler) != 1:
        raise AssetError(f"the filler {config.filler!r} must be one token, it is {len(filler)}")
    encoder = SceneEncoder(lambda text: tokenizer(text, add_special_tokens=False)["input_ids"],
                           filler[0], config.tokens_per_frame, read_lines=partial(read_video_lines, moves=config.moves),
                           unchanged_frames=config.unchanged_frames)
    attach_scene_reader(model, encoder)
    model.testbed_config = config
    gen = model.generation_config
    gen.do_sample, gen.eos_token_id, gen.pad_token_id = False, tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.pad_token_id
    gen.temperature = gen.top_p = gen.top_k = None
    gen.repetition_penalty = REPETITION_PENALTY
    return model.to(dtype).eval()


def load_testbed(weights: str | os.PathLike | None = COMMITTED, language: str | os.PathLike | None = None,
                 config: TestbedConfig | None = None, dtype: torch.dtype = torch.float32,
                 ) -> tuple[LlavaOnevisionForConditionalGeneration, TestbedProcessor]:
    """The testbed target (eval mode, greedy generation config) and its processor.

    weights: ``"committed"`` (the default) merges the LoRA shipped with
        sparrow-sd; a path merges a checkpoint written by ``sparrow testbed
        build``; None gives the untrained testbed (the plain language model
        reading scene lines zero-shot).
    language: the converted Qwen2.5-Coder folder; None looks at
        ``$SPARROW_QWEN_DIR``, then ``assets/cache`` (``make assets``).
    config: the testbed settings; None takes them from the checkpoint (or the
        defaults without one). A given config must agree with the checkpoint's.
    """
    lora = None
    if isinstance(weights, str) and weights == COMMITTED:
        if not COMMITTED_WEIGHTS.is_file():
            raise AssetError(f"the committed testbed weights are missing ({COMMITTED_WEIGHTS}); "
                             "rebuild them with `sparrow testbed build`")
        weights = COMMITTED_WEIGHTS
    if weights is not None:
        lora, saved, _ = read_lora(weights)  # refuse a bad file before the slow build
        if config is None:
            config = saved
        elif differences := saved.differences(config):
            raise AssetError(f"{weights} was trained for another testbed config: " + "; ".join(differences))
    config = config or TestbedConfig()
    language_weights = load_language_weights(language)
    model = build_testbed_model(language_weights, config, dtype=torch.float32)
    if lora is not None:
        merge_lora(model, lora, weights)
    processor = TestbedProcessor(language_weights.tokenizer, config)
    return model.to(dtype).eval(), processor
