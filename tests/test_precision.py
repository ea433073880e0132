"""Autocast only where the hardware computes bf16: emulated bf16 on a CPU is ~100x slower."""

import pytest
import torch

from sparrow_sd import precision


@pytest.fixture
def cpu_bf16(monkeypatch):
    def set_native(native: bool):
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: native)
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    return set_native


def test_a_cpu_without_bf16_units_computes_in_fp32(cpu_bf16):
    cpu_bf16(False)
    assert precision.fast_dtype("cpu") == torch.float32
    assert precision.resolve_dtype_name("auto") == "fp32"
    with precision.fast_autocast("cpu"):
        out = torch.ones(4, 4) @ torch.ones(4, 4)
    assert out.dtype == torch.float32


def test_a_cpu_with_bf16_units_autocasts_to_bf16(cpu_bf16):
    cpu_bf16(True)
    assert precision.fast_dtype("cpu") == torch.bfloat16
    assert precision.resolve_dtype_name("auto") == "bf16"
    with precision.fast_autocast("cpu"):
        out = torch.ones(4, 4) @ torch.ones(4, 4)
    assert out.dtype == torch.bfloat16


def test_explicit_dtype_names_pass_through(cpu_bf16):
    cpu_bf16(False)
    assert precision.resolve_dtype_name("bf16") == "bf16"
    assert precision.resolve_dtype_name("fp32") == "fp32"
