"""The ``sparrow`` command line: the top-level parser, and how every command ends.

Each command lives in :mod:`sparrow_sd.commands` (one module per command: its
flags and what it does); this module puts them under one parser and runs the
one asked for. Flags are parsed in :func:`main` only (never at import), and
only the named command's parser is built in full, so ``sparrow --help`` and a
command's flags import no other command's modules.

Every error a user can meet ends the same way: one line on stderr, ``sparrow:
error: ...``, and exit code 2 (docs/errors.md lists them): a bad flag value, a
bad input file, an output path that cannot be written, a missing device, any
error sparrow-sd raises on purpose. Each command checks its flags, its output
paths (a real write, :func:`~sparrow_sd.paths.check_writable`) and its device
before it loads a model. Ctrl-C or SIGTERM ends a command with one line too
(exit code 130 or 143); ``sparrow train`` saves a resumable checkpoint first
and says how to resume. An unexpected failure (a bug) is one line and exit
code 1; ``SPARROW_DEBUG=1`` shows its traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import signal
import sys
import threading

from .errors import RunInterrupted, SparrowError

# command -> (its module in sparrow_sd.commands, the line `sparrow --help` shows for it)
COMMANDS = {
    "demo": ("demo", "describe a video with the testbed and the Sparrow draft, then without it, and compare"),
    "testbed": ("testbed", "build or evaluate the testbed target (Qwen2.5-Coder-0.5B inside LLaVA-OneVision, "
                           "with a scene reader)"),
    "datagen": ("datagen", "self-distilled draft-training data: the target writes the responses"),
    "train": ("train", "train a draft (Sparrow or a peer) on datagen output"),
    "export": ("export", "write a trained draft in another engine's format"),
    "drafts": ("suite", "the draft suite: Sparrow and its peers on one dataset"),
    "generate": ("generate", "answer a question about a video file, streamed, with a draft or without"),
    "bench": ("bench", "the visual-token sweep: every method side by side, tau and speedups, lossless check"),
}

# --- the parser ---------------------------------------------------------------------------------


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every option's default after its help, except where there is nothing to show (off, none)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "%(default)" in text or not action.option_strings:
            return text
        if action.default is None or action.default is False or action.default is argparse.SUPPRESS:
            return text
        return f"{text} (default: %(default)s)"


class _Parser(argparse.ArgumentParser):
    """Help with defaults; a bad flag is one line on stderr and exit code 2, like every other error.

    Every command's parser is one of these (argparse makes subparsers of the parent's class)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        command = self.prog.removeprefix("sparrow").strip()
        where = f"{command}: " if command else ""
        self.exit(2, f"sparrow: error: {where}{message} (see `{self.prog} --help`)\n")


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The ``sparrow`` parser with every command in full; with ``only``, that command in full and every other
    as its name and help line (what ``sparrow --help`` shows), so building it imports that command's modules alone."""
    parser = _Parser(
        prog="sparrow",
        description="Lossless speculative decoding for Hugging Face Video LLMs (the Sparrow method). "
                    "Every error is one line on stderr and exit code 2 (docs/errors.md).",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (module, summary) in COMMANDS.items():
        if only is None or only == name:
            importlib.import_module(f"{__package__}.commands.{module}").add_parser(sub, name, summary)
        else:
            sub.add_parser(name, help=summary)
    return parser


# --- running a command --------------------------------------------------------------------------


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that every ``finally`` runs (datagen flushes its last shard)."""


@contextlib.contextmanager
def _sigterm_as_exception():
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise Terminated

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _fail(message: str) -> None:
    print(f"sparrow: error: {' '.join(str(message).split())}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = None
    try:
        with _sigterm_as_exception():
            try:
                args = build_parser(only=argv[0] if argv else "").parse_args(argv)
            except SystemExit as exit:  # a bad flag (one line already printed), or --help
                return exit.code if isinstance(exit.code, int) else 2
            args.argv = argv
            return args.func(args)
    except RunInterrupted as stop:
        sys.stderr.write("\n" if getattr(sys.stderr, "isatty", lambda: False)() else "")
        print(f"sparrow: {' '.join(str(stop).split())}", file=sys.stderr)
        return stop.exit_code
    except SparrowError as err:
        _fail(str(err))
        return 2
    except KeyboardInterrupt as stop:
        signum = signal.SIGTERM if isinstance(stop, Terminated) else signal.SIGINT
        hint = getattr(args, "on_interrupt", None)
        print(f"sparrow: interrupted ({signum.name})" + (f"; {hint}" if hint else ""), file=sys.stderr)
        return 128 + int(signum)
    except Exception as err:  # a bug: one line unless asked for the traceback
        if os.environ.get("SPARROW_DEBUG"):
            raise
        _fail(f"internal error: {type(err).__name__}: {err} (this is a bug; SPARROW_DEBUG=1 shows the traceback)")
        return 1


if __name__ == "__main__":
    sys.exit(main())
