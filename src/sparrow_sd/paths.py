"""Checks made before any model loads: can the outputs be written, is the device there, are extras installed.

A command that trains for an hour and then cannot write its result has lost
the hour; every command therefore checks each output path with a real write
(a temporary file created and removed in the nearest existing folder) before
it loads anything, and creates nothing itself.
"""

from __future__ import annotations

import importlib.util
import os
import tempfile
from pathlib import Path

from .errors import DeviceError, MissingExtraError, OutputPathError


def check_writable(path: str | os.PathLike, flag: str = "--out", kind: str = "folder") -> Path:
    """Refuse an output ``path`` (a ``kind`` of "folder" or "file") that cannot be written.

    Nothing is created: the nearest existing ancestor must be a folder in which a
    file can be made (tested by making and removing one), and ``path`` itself, if
    it exists, must be of the right kind.
    """
    path = Path(path)
    if path.exists():
        if kind == "folder" and not path.is_dir():
            raise OutputPathError(f"{flag} {path}: a file is in the way (expected a folder)")
        if kind == "file" and path.is_dir():
            raise OutputPathError(f"{flag} {path}: is a folder (expected a file)")
    start = path if kind == "folder" else path.parent
    existing = start.absolute()
    while not existing.exists() and not existing.is_symlink():
        existing = existing.parent
    if not existing.is_dir():
        raise OutputPathError(f"{flag} {path}: {existing} is a file, so nothing can be created under it")
    try:
        handle, probe = tempfile.mkstemp(prefix=".sparrow-write-test-", dir=existing)
    except OSError as err:
        raise OutputPathError(f"{flag} {path}: cannot write in {existing} ({err.strerror or err})") from None
    os.close(handle)
    os.unlink(probe)
    return path


def check_device(device: str) -> str:
    """Refuse a device torch does not know, or one this machine does not have."""
    import torch

    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError):
        raise DeviceError(f"--device {device!r} is not a device; use cpu, cuda or cuda:N") from None
    if parsed.type == "cpu":
        return device
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"--device {device}: this machine has no CUDA device torch can use "
                              f"(torch {torch.__version__}); use --device cpu")
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise DeviceError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s) "
                              f"(cuda:0 to cuda:{torch.cuda.device_count() - 1})")
        return device
    if parsed.type == "mps" and torch.backends.mps.is_available():
        return device
    raise DeviceError(f"--device {device}: sparrow-sd runs on cpu or cuda")


EXTRAS = {"matplotlib": "bench", "gguf": "testbed"}


def require_extra(module: str, needed_for: str) -> None:
    """Refuse early, naming the pip extra, when an optional dependency is missing."""
    import sys

    if module in sys.modules:
        found = sys.modules[module] is not None
    else:
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
    if not found:
        extra = EXTRAS[module]
        raise MissingExtraError(f"{needed_for} needs the optional package {module!r}: "
                                f"pip install 'sparrow-sd[{extra}]'")
