"""Targets with sliding-window attention: tree masks apply the window per layer, exactly.

The tiny models here attend fully on layer 0 and through a 4-token window on layers
1 and 2 (Qwen2's ``use_sliding_window`` / ``max_window_layers``). Trees deeper than the
window make a node's far ancestors fall out of it, which is where a mask that lets
every node see the whole cache and all its ancestors goes wrong.
"""

import pytest
from conftest import assert_every_path_matches, hf_greedy, prompt_inputs

from sparrow_sd.errors import UnsupportedModelError
from sparrow_sd.proposers import TreeConfig
from sparrow_sd.targets import wrap_target
from sparrow_sd.testing import build_tiny_model

WINDOW = 4


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_sliding_window_target_matches_generate(arch, attn):
    if attn == "eager" and arch != "qwen2_vl":
        pytest.skip("one architecture is enough for the additive-mask path")
    model = build_tiny_model(arch, sliding_window=WINDOW, attn_implementation=attn)
    assert wrap_target(model).sliding_window == WINDOW
    assert model.config.get_text_config().layer_types[0] == "full_attention"
    inputs = prompt_inputs(model, arch, seed=1, frames=2)
    ref = hf_greedy(model, inputs, 20)
    assert ref != hf_greedy(build_tiny_model(arch, attn_implementation=attn), inputs, 20), "the window must matter"
    # the oracle's true branch is accepted deep past the window (depth 7 > 4)
    assert_every_path_matches(model, inputs, ref, 20, oracle_depth=7, min_tau=2, oracle_seed=1,
                              tree=TreeConfig(depth=6, top_k=3, total_tokens=12))


def test_attention_layout_is_read_from_the_config():
    """The adapter reads each layer's attention type and the window from the text config, and
    refuses a layer type or a window it cannot mask exactly."""
    model = build_tiny_model("qwen2_vl")  # its own copy: the config is edited below
    text = model.config.get_text_config()
    layers = text.num_hidden_layers
    target = wrap_target(model)
    assert target.layer_types == ("full_attention",) * layers and target.sliding_window is None
    text.layer_types, text.sliding_window = ["full_attention"] + ["sliding_attention"] * (layers - 1), 8
    assert wrap_target(model).sliding_window == 8
    text.layer_types = ["chunked_attention"] * layers
    with pytest.raises(UnsupportedModelError, match="chunked_attention"):
        wrap_target(model)
    text.layer_types, text.sliding_window = ["sliding_attention"] * layers, None
    with pytest.raises(UnsupportedModelError, match="sliding_window=None"):
        wrap_target(model)
