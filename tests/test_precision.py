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


@pytest.mark.parametrize("vector, amx, avx512_bf16, tail", [
    ("AVX2", False, False, "AVX2, no native bf16"),
    ("AVX512", False, True, "AVX512, AVX512-BF16"),
    ("AVX512", True, True, "AVX512, AMX, AVX512-BF16"),
])
def test_the_cpu_is_named_with_its_vector_and_bf16_units(monkeypatch, vector, amx, avx512_bf16, tail):
    """Figures from an AVX2 machine and from an AVX512-BF16 one differ 3x: the report must say which."""
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: vector)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    described = precision.cpu_description()
    assert described.endswith(f" cores, {tail}") and described.split(", ")[0]
