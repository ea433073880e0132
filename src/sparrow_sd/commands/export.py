"""``sparrow export``: an eagle3-form draft as the EAGLE-3 folder vLLM and SGLang load
(:func:`sparrow_sd.draft.export.export_eagle3`; docs/eagle3-format.md)."""

from __future__ import annotations

import argparse

from ..errors import InvalidInputError
from . import flags


def add_parser(sub, name: str, help: str) -> None:
    export = sub.add_parser(
        name, help=help,
        description="Writes an eagle3-form draft (`sparrow train --architecture eagle3`) as a folder that vLLM's and "
                    "SGLang's EAGLE-3 loaders accept. Those engines run the draft over every prompt token, visual "
                    "ones included; see docs/eagle3-format.md.")
    export.add_argument("--to", choices=["eagle3"], required=True, help="target format")
    export.add_argument("--draft", required=True, help="a sparrow draft folder")
    export.add_argument("--out", required=True, help="folder to write")
    flags.add_dtype_flag(export, "weights' dtype (default: the one the draft was trained in)")
    export.add_argument("--max-position-embeddings", type=int, default=None,
                        help="default: the target's, as the draft records it")
    export.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..draft.export import EAGLE3_ARCHITECTURE, export_eagle3
    from .drafts import draft_format

    if draft_format(args.draft) == "eagle3":
        raise InvalidInputError(f"--draft {args.draft} is already an EAGLE-3 folder ({EAGLE3_ARCHITECTURE}): "
                                "vLLM and SGLang load it as it is; export takes a `sparrow train --architecture "
                                "eagle3` folder")
    flags.writable(args.out)
    _, dtype = flags.resolved_dtype(args.dtype)
    out = export_eagle3(args.draft, args.out, dtype=dtype, max_position_embeddings=args.max_position_embeddings)
    print(f"wrote an EAGLE-3 draft to {out} (config.json, model.safetensors)")
    return 0
