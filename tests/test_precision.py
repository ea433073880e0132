"""Autocast only where the hardware computes bf16: emulated bf16 on a CPU is ~100x slower."""

import pytest
import torch

from sparrow_sd import precision


@pytest.mark.parametrize("native, dtype, name", [(False, torch.float32, "fp32"), (True, torch.bfloat16, "bf16")])
def test_cpu_autocast_follows_the_bf16_units(monkeypatch, native, dtype, name):
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: native)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    assert precision.fast_dtype("cpu") == dtype
    assert precision.resolve_dtype_name("auto") == name
    assert precision.resolve_dtype_name("fp32") == "fp32" and precision.resolve_dtype_name("bf16") == "bf16"
    with precision.fast_autocast("cpu"):
        out = torch.ones(4, 4) @ torch.ones(4, 4)
    assert out.dtype == dtype
