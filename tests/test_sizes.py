"""Size bars: no source file over 400 lines, no function over 80, except as listed (with why).

Counted with ``ast`` over ``src/``: a file's lines, and a function's (or
method's) from its ``def`` line to its last, docstring included, decorators not.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
MAX_FILE_LINES = 400
MAX_FUNCTION_LINES = 80

#: file (relative to the repository) -> why it may be longer
FILE_ALLOWLIST: dict[str, str] = {}
#: "file::qualified.name" -> why it may be longer
FUNCTION_ALLOWLIST: dict[str, str] = {}


def functions(tree: ast.AST, prefix: str = ""):
    """(qualified name, lines) of every function and method, nested ones included."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            name = prefix + node.name
            if not isinstance(node, ast.ClassDef):
                yield name, node.end_lineno - node.lineno + 1
            yield from functions(node, name + ".")
        else:
            yield from functions(node, prefix)


def sources() -> list[tuple[str, str]]:
    paths = sorted(SRC.rglob("*.py"))
    assert paths, f"no source under {SRC}"
    return [(path.relative_to(ROOT).as_posix(), path.read_text()) for path in paths]


def test_no_file_over_the_bar():
    long = [f"{name}: {len(text.splitlines())} lines" for name, text in sources()
            if len(text.splitlines()) > MAX_FILE_LINES and name not in FILE_ALLOWLIST]
    assert not long, f"over {MAX_FILE_LINES} lines (split the file, or allowlist it with a reason):\n" + "\n".join(long)


def test_no_function_over_the_bar():
    long = [f"{name}::{func}: {lines} lines" for name, text in sources() for func, lines in functions(ast.parse(text))
            if lines > MAX_FUNCTION_LINES and f"{name}::{func}" not in FUNCTION_ALLOWLIST]
    assert not long, (f"over {MAX_FUNCTION_LINES} lines (split the function, or allowlist it with a reason):\n"
                      + "\n".join(long))


def test_the_allowlists_hold_no_stale_entry():
    """An entry whose file or function is back under the bar (or gone) must leave the list."""
    texts = dict(sources())
    for name in FILE_ALLOWLIST:
        assert name in texts and len(texts[name].splitlines()) > MAX_FILE_LINES, f"{name}: drop it from the allowlist"
    for entry in FUNCTION_ALLOWLIST:
        name, func = entry.split("::")
        sizes = dict(functions(ast.parse(texts[name]))) if name in texts else {}
        assert sizes.get(func, 0) > MAX_FUNCTION_LINES, f"{entry}: drop it from the allowlist"
