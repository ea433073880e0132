"""What the commands share: flag value types, the flags several commands take, and the checks before a model loads.

Light to import (the standard library and :mod:`sparrow_sd.errors`); the
helpers that need a default from a heavy module (the tree's, the dtypes)
import it when they are called, which is when that command's parser is built.
"""

from __future__ import annotations

import argparse
import json
import shlex

from ..errors import InvalidInputError

RESUMABLE = "rerun the same command to resume: finished work is kept"

# --- flag values --------------------------------------------------------------------------------


def _int_at_least(low: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value

    parse.__name__ = "integer"
    return parse


def _float_in(low: float, high: float | None = None, low_open: bool = False):
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        too_low = value <= low if low_open else value < low
        if too_low or (high is not None and value > high) or value != value:
            bound = f"({low:g}, {high:g}]" if high is not None else (f"above {low:g}" if low_open else f"at least {low:g}")
            raise argparse.ArgumentTypeError(f"must be {'in ' if high is not None else ''}{bound}, got {text}")
        return value

    parse.__name__ = "number"
    return parse


POSITIVE = _int_at_least(1)
NON_NEGATIVE = _int_at_least(0)
POSITIVE_FLOAT = _float_in(0.0, low_open=True)
NON_NEGATIVE_FLOAT = _float_in(0.0)
PROBABILITY = _float_in(0.0, 1.0, low_open=True)


def int_list(text: str, flag: str, low: int = 1) -> tuple[int, ...]:
    """``"6,8,12"`` -> (6, 8, 12), each at least ``low``; one line naming the flag otherwise."""
    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise InvalidInputError(f"{flag} takes comma-separated whole numbers (e.g. 6,8,12), got {text!r}") from None
    if any(v < low for v in values):
        raise InvalidInputError(f"{flag}: every value must be at least {low}, got {text!r}")
    return values


def comma_list(values) -> str:
    """(6, 8, 12) -> ``"6,8,12"``: a tuple default as the text :func:`int_list` reads back."""
    return ",".join(str(v) for v in values)


def read_json_config(path: str, flag: str = "--config") -> dict:
    try:
        with open(path) as handle:
            data = json.load(handle)
    except FileNotFoundError:
        raise InvalidInputError(f"{flag} {path}: file not found") from None
    except (OSError, UnicodeDecodeError) as err:
        raise InvalidInputError(f"{flag} {path}: cannot be read ({err})") from None
    except json.JSONDecodeError as err:
        raise InvalidInputError(f"{flag} {path} is not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise InvalidInputError(f"{flag} {path} must hold a JSON object of settings, not {type(data).__name__}")
    return data


# --- flags several commands take ----------------------------------------------------------------


def add_common_flags(parser: argparse.ArgumentParser) -> None:
    """``--language`` and ``--threads``: every command that runs a model."""
    parser.add_argument("--language", default=None,
                        help="the converted Qwen2.5-Coder folder (default: $SPARROW_QWEN_DIR, then assets/cache "
                             "from `make assets`)")
    parser.add_argument("--threads", type=POSITIVE, default=2, help="torch CPU threads")


def add_target_flags(parser: argparse.ArgumentParser) -> None:
    """``--model``, ``--dtype``, ``--device``: the target a command loads (:func:`load_target`)."""
    parser.add_argument("--model", default="testbed",
                        help="'testbed', a local Hugging Face model folder, or tiny:<arch> (a tiny random "
                             "model for smoke tests)")
    add_dtype_flag(parser, "target dtype", default="fp32")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")


def add_dtype_flag(parser: argparse.ArgumentParser, help: str, default: str | None = None,
                   only: tuple[str, ...] | None = None) -> None:
    """``--dtype``: one of :data:`sparrow_sd.models.DTYPES` (``only``: a subset; ``"auto"`` may be in it)."""
    from ..models import DTYPES

    names = [name for name in ("auto", *DTYPES) if name in (only or DTYPES)]
    parser.add_argument("--dtype", choices=names, default=default, help=help)


def resolved_dtype(name: str | None, device: str = "cpu"):
    """A ``--dtype`` value as (name, torch dtype); ``auto`` becomes bf16 where ``device`` computes bf16 fast,
    else fp32 (:func:`sparrow_sd.precision.resolve_dtype_name`); unset stays (None, None)."""
    if name is None:
        return None, None
    from ..models import DTYPES
    from ..precision import resolve_dtype_name

    name = resolve_dtype_name(name, device)
    return name, DTYPES[name]


def add_tree_flags(parser: argparse.ArgumentParser) -> None:
    """``--tree-depth``, ``--tree-top-k``, ``--tree-tokens``: the draft tree, defaulting to
    :class:`~sparrow_sd.proposers.TreeConfig`'s; :func:`tree_config` reads them back."""
    from ..proposers import TreeConfig

    default = TreeConfig()
    parser.add_argument("--tree-depth", type=POSITIVE, default=default.depth, help="draft tree depth")
    parser.add_argument("--tree-top-k", type=POSITIVE, default=default.top_k, help="children expanded per node")
    parser.add_argument("--tree-tokens", type=POSITIVE, default=default.total_tokens,
                        help="tree nodes verified per step")


def tree_config(args: argparse.Namespace):
    """The :class:`~sparrow_sd.proposers.TreeConfig` of the tree flags (:func:`add_tree_flags`)."""
    from ..proposers import TreeConfig

    return TreeConfig(depth=args.tree_depth, top_k=args.tree_top_k, total_tokens=args.tree_tokens)


# --- before and while a command runs ------------------------------------------------------------


def check_device(args: argparse.Namespace) -> None:
    from ..paths import check_device as check

    if getattr(args, "device", None) is not None:
        check(args.device)


def writable(path, flag: str = "--out", kind: str = "folder") -> None:
    """Refuse an output path that cannot be written, by a real write (:func:`~sparrow_sd.paths.check_writable`)."""
    from ..paths import check_writable

    check_writable(path, flag, kind)


def set_threads(count: int) -> None:
    import torch

    torch.set_num_threads(count)


def load_target(args: argparse.Namespace):
    """The target model and a ``make_inputs(question, frames)`` for it, from the target flags."""
    from ..models import load_target as load

    loaded = load(args.model, dtype=args.dtype, device=args.device, language=args.language)
    return loaded.model, loaded.make_inputs


def command_line(args: argparse.Namespace) -> str:
    """The command as typed (recorded next to what it writes, and quoted in resume hints)."""
    return "sparrow " + shlex.join(args.argv)


def check_draft_folders(drafts: dict[str, str]) -> None:
    """Refuse a ``--draft NAME=FOLDER`` that is no draft folder, before any model loads."""
    from .drafts import draft_format

    for folder in drafts.values():
        draft_format(folder)
