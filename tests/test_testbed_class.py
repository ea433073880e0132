"""The testbed's class (LLaVA-OneVision with the scene reader) on a tiny random language model.

No asset needed: these pin the seam (the inner model's ``get_video_features``)
and that the engine is lossless on exactly this class, tree and chain.
"""

import json

import numpy as np
import pytest
import torch

from sparrow_sd.errors import InvalidInputError
from sparrow_sd.generate import SpeculativeGenerator
from sparrow_sd.proposers import DraftProposer, TreeConfig
from sparrow_sd.synth import make_clip
from sparrow_sd.targets import wrap_target
from sparrow_sd.testbed.config import TestbedConfig
from sparrow_sd.testbed.model import SceneEncoder, SceneReaderOnevisionModel, attach_scene_reader
from sparrow_sd.testing.drafts import tiny_draft
from sparrow_sd.testing.oracle import OracleProposer
from sparrow_sd.testing.tiny_testbed import (
    FILLER_ID,
    TINY_TOKENS_PER_FRAME,
    build_tiny_testbed,
    tiny_testbed_inputs,
    word_hash_encode,
)


def clip_inputs(seed, frames=4):
    clip = make_clip(seed, num_frames=frames, height=40, width=40)
    rng = np.random.default_rng(seed)
    before, after = rng.integers(0, 240, 6).tolist(), rng.integers(0, 240, 5).tolist()
    return tiny_testbed_inputs(clip.frames, before, after)


def greedy(model, inputs, n):
    return model.generate(**inputs, do_sample=False, max_new_tokens=n)[0, inputs["input_ids"].shape[1]:].tolist()


@pytest.fixture(scope="module")
def model():
    return build_tiny_testbed(seed=0)


def test_outer_class_is_hugging_faces_and_the_adapter_is_llava_onevision(model):
    assert type(model).__name__ == "LlavaOnevisionForConditionalGeneration"
    assert isinstance(model.model, SceneReaderOnevisionModel)
    assert type(wrap_target(model)).__name__ == "LlavaOnevisionTarget"


def test_video_features_are_the_embeddings_of_the_scene_lines(model):
    clip = make_clip(7, num_frames=3, height=40, width=40)
    inputs = tiny_testbed_inputs(clip.frames, [1, 2], [3])
    features = model.model.get_video_features(inputs["pixel_values_videos"]).pooler_output
    assert features.shape == (1, 3 * TINY_TOKENS_PER_FRAME + 1, 64)
    lines = model.model.scene_encoder.read_lines(clip.frames)
    first = word_hash_encode(lines[0])[:TINY_TOKENS_PER_FRAME]
    embed = model.get_input_embeddings().weight
    assert torch.equal(features[0, : len(first)], embed[first])
    assert torch.equal(features[0, -1], model.model.image_newline)


def test_the_video_changes_the_output(model):
    a, b = clip_inputs(1), clip_inputs(2)
    b["input_ids"] = a["input_ids"]  # same prompt, other video
    logits_a = model(**a).logits[0, -1]
    logits_b = model(**b).logits[0, -1]
    assert not torch.allclose(logits_a, logits_b)


def test_placeholder_count_mismatch_is_refused_by_hugging_face(model):
    inputs = clip_inputs(3)
    inputs["input_ids"] = inputs["input_ids"][:, 1:]
    inputs["attention_mask"] = inputs["attention_mask"][:, 1:]
    bad = inputs["input_ids"].clone()
    bad[0, 10] = 5  # one placeholder fewer
    inputs["input_ids"] = bad
    with pytest.raises(ValueError, match="do not match"):
        model(**inputs)


def test_images_are_refused(model):
    with pytest.raises(InvalidInputError, match="videos only"):
        model.model.get_image_features(torch.zeros(1, 3, 40, 40))


def test_encoder_pads_and_cuts_lines():
    encoder = SceneEncoder(lambda text: list(range(len(text.split()))), FILLER_ID, 4, read_lines=lambda f: [])
    ids = encoder.line_ids(["a b", "a b c d e f"])
    assert ids.tolist() == [[0, 1, FILLER_ID, FILLER_ID], [0, 1, 2, 3]]


def test_unchanged_frames_show_filler_only_between_the_first_and_the_last():
    lines = ["Frame 1: a.", "Frame 2: a.", "Frame 3: a, b. Changes: b appears.", "Frame 4: a, b.", "Frame 5: a, b."]
    encode = lambda text: [len(word) for word in text.split()]  # noqa: E731
    repeat = SceneEncoder(encode, FILLER_ID, 8, read_lines=lambda f: lines)
    filler = SceneEncoder(encode, FILLER_ID, 8, read_lines=lambda f: lines, unchanged_frames="filler")
    full, kept = repeat.frame_ids(np.zeros((5, 4, 4, 3), np.uint8)), filler.frame_ids(np.zeros((5, 4, 4, 3), np.uint8))
    assert [bool((row != FILLER_ID).any()) for row in kept] == [True, False, True, False, True]
    for t in (0, 2, 4):
        assert torch.equal(kept[t], full[t])
    assert (full != FILLER_ID).any(dim=1).all()
    with pytest.raises(InvalidInputError, match="unchanged_frames"):
        SceneEncoder(encode, FILLER_ID, 8, unchanged_frames="skip")


def test_weights_written_before_a_line_setting_read_as_they_were_trained():
    old = json.loads(TestbedConfig().to_json())
    del old["unchanged_frames"], old["moves"]
    assert (TestbedConfig.from_json(json.dumps(old)).unchanged_frames, TestbedConfig.from_json(json.dumps(old)).moves
            ) == ("repeat", "every_frame")
    assert (TestbedConfig().unchanged_frames, TestbedConfig().moves) == ("filler", "once")
    with pytest.raises(InvalidInputError, match="unchanged_frames"):
        TestbedConfig(unchanged_frames="skip")
    with pytest.raises(InvalidInputError, match="moves"):
        TestbedConfig(moves="twice")


def test_attach_refuses_a_token_count_the_model_does_not_give():
    model = build_tiny_testbed(seed=1)
    with pytest.raises(InvalidInputError, match="tokens"):
        attach_scene_reader(model, SceneEncoder(word_hash_encode, FILLER_ID, 24))


@pytest.mark.parametrize("shape", [TreeConfig(depth=4, top_k=3, total_tokens=10), TreeConfig.chain(5)],
                         ids=["tree", "chain"])
@pytest.mark.parametrize("mode", ["none", "glimpse", "full"])
def test_engine_is_lossless_on_the_testbed_class(model, shape, mode):
    for seed in (11, 12):
        inputs = clip_inputs(seed, frames=3 + seed % 3)
        ref = greedy(model, inputs, 20)
        proposer = DraftProposer(tiny_draft(model, mode, seed=seed), shape)
        assert SpeculativeGenerator(model, proposer).generate(inputs, max_new_tokens=20).tokens == ref
    assert SpeculativeGenerator(model).generate(inputs, max_new_tokens=20).tokens == ref


@pytest.mark.parametrize("branching", [1, 3], ids=["chain", "tree"])
def test_long_accepts_on_the_testbed_class(model, branching):
    inputs = clip_inputs(21, frames=5)
    ref = greedy(model, inputs, 36)
    oracle = OracleProposer(ref, depth=6, branching=branching, error_rate=0.2, vocab_size=240, seed=3)
    result = SpeculativeGenerator(model, oracle).generate(inputs, max_new_tokens=36)
    assert result.tokens == ref
    assert result.stats.tau > 2.5
