"""Which reduced-precision format a device computes natively, and autocast only where it pays.

bf16 halves memory traffic and, on hardware that has bf16 matrix units
(CUDA GPUs from Ampere on, Intel CPUs with AMX or AVX512-BF16), runs matrix
products several times faster than fp32. On a CPU without them PyTorch
emulates bf16 and a matrix product runs about 100x *slower* than in fp32
(measured on an AVX2-only AMD EPYC: 155 GFLOP/s fp32 against 0.9 GFLOP/s
bf16). Training code that autocasts to bf16 unconditionally therefore turns a
two-hour CPU job into a week. :func:`fast_dtype` says which format to use;
:func:`fast_autocast` autocasts to it, or does nothing where fp32 is fastest.
"""

from __future__ import annotations

import contextlib

import torch


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 matrices in hardware (AMX or AVX512-BF16)."""
    return bool(_native_bf16_units())


def _native_bf16_units() -> list[str]:
    """The CPU's bf16 matrix units that torch reports (AMX, AVX512-BF16), by name."""
    checks = (("_is_amx_tile_supported", "AMX"), ("_is_avx512_bf16_supported", "AVX512-BF16"))
    return [label for name, label in checks if bool(getattr(torch.cpu, name, lambda: False)())]


def cpu_description() -> str:
    """This CPU as a figure should name it: model, cores, the vector instructions torch's kernels
    use, and its native bf16 units, e.g. "AMD EPYC, 2 cores, AVX512, AVX512-BF16" or "AMD EPYC,
    2 cores, AVX2, no native bf16" (platform.processor() is empty on Linux)."""
    import os
    import platform

    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            name = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), name)
    except OSError:
        pass
    units = _native_bf16_units()
    vector = torch.backends.cpu.get_cpu_capability()  # "AVX2", "AVX512", ... ("DEFAULT" when neither)
    return f"{name}, {os.cpu_count()} cores, {vector}, " + (", ".join(units) if units else "no native bf16")


def fast_dtype(device: torch.device | str) -> torch.dtype:
    """bf16 where the device computes it natively, else fp32."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    if device.type == "cpu":
        return torch.bfloat16 if cpu_has_native_bf16() else torch.float32
    return torch.float32


def fast_autocast(device: torch.device | str):
    """``torch.autocast`` to :func:`fast_dtype`, or a no-op context where that is fp32."""
    device = torch.device(device)
    dtype = fast_dtype(device)
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def resolve_dtype_name(name: str, device: torch.device | str = "cpu") -> str:
    """``'auto'`` becomes ``'bf16'`` or ``'fp32'`` by :func:`fast_dtype`; other names pass through."""
    if name != "auto":
        return name
    return "bf16" if fast_dtype(device) == torch.bfloat16 else "fp32"
