"""Package layering, read from the source's imports (``ast``; nothing is imported).

In the spirit of SpecForge's package-dependency test. Every import counts,
including those inside functions and under ``TYPE_CHECKING``: a lazy import is
still a dependency.

The engine is what decodes: ``sparrow_sd/__init__.py``, ``errors.py``,
``precision.py``, ``tree.py``, ``verify.py``, ``sampling.py``, ``kv_cache.py``,
``proposers.py``, ``generate.py``, and the ``targets/`` and ``draft/``
packages. It must run without the tools built around it, so it imports nothing
from ``testbed``, ``synth``, ``bench``, ``training``, ``commands``, ``cli``,
``demo``, ``models`` or ``testing``.

Other rules: no module imports a private name (one with a leading underscore)
from another module, in ``src`` or in the tests; and the subpackages and
top-level modules of ``sparrow_sd`` import each other without cycles.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "sparrow_sd"

ENGINE = ("sparrow_sd", "sparrow_sd.errors", "sparrow_sd.precision", "sparrow_sd.tree", "sparrow_sd.verify",
          "sparrow_sd.sampling", "sparrow_sd.kv_cache", "sparrow_sd.proposers", "sparrow_sd.generate",
          "sparrow_sd.targets", "sparrow_sd.draft")
NOT_FOR_THE_ENGINE = ("testbed", "synth", "bench", "training", "commands", "cli", "demo", "models", "testing")


@dataclass(frozen=True)
class Import:
    importer: str  # dotted module name
    module: str  # the dotted module imported from (absolute)
    name: str | None  # the name taken from it (``from module import name``), None for ``import module``
    line: int

    @property
    def target(self) -> str:
        """The module depended on: ``module``, or ``module.name`` when the name is a submodule."""
        if self.name and self.module.startswith("sparrow_sd"):
            sub = PACKAGE.parent.joinpath(*self.module.split("."), self.name)
            if sub.is_dir() or sub.with_suffix(".py").is_file():
                return f"{self.module}.{self.name}"
        return self.module


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, name: str | None = None) -> list[Import]:
    """Every import of ``path`` (relative ones resolved against module ``name``)."""
    name = name or path.stem
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found += [Import(name, module, alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.Import):
            found += [Import(name, alias.name, None, node.lineno) for alias in node.names]
    return found


def src_imports() -> list[Import]:
    return [imp for path in sorted(PACKAGE.rglob("*.py")) for imp in imports_of(path, module_name(path))]


def is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def in_engine(module: str) -> bool:
    return any(module == e or (e != "sparrow_sd" and module.startswith(e + ".")) for e in ENGINE)


def unit(module: str) -> str | None:
    """The subpackage or top-level module of ``sparrow_sd`` a module belongs to (None: the root itself)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "sparrow_sd" else None


def test_the_engine_list_names_real_modules():
    for module in ENGINE:
        relative = Path(*module.split(".")[1:])
        assert module == "sparrow_sd" or (PACKAGE / relative).is_dir() or (PACKAGE / relative).with_suffix(
            ".py").is_file(), module


def test_the_engine_imports_no_tool_built_on_it():
    bad = [f"{imp.importer}:{imp.line} imports {imp.target}" for imp in src_imports()
           if in_engine(imp.importer) and unit(imp.target) in NOT_FOR_THE_ENGINE]
    assert not bad, "the engine depends on tools:\n" + "\n".join(bad)


def test_no_private_name_is_imported_from_another_module():
    found = src_imports()
    for path in sorted((ROOT / "tests").glob("*.py")):
        found += imports_of(path)
    bad = [f"{imp.importer}:{imp.line} imports {imp.name} from {imp.module}" for imp in found
           if imp.module.startswith("sparrow_sd")
           and (any(is_private(part) for part in imp.module.split(".")) or (imp.name and is_private(imp.name)))]
    assert not bad, "private names imported:\n" + "\n".join(bad)


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a path (first node repeated at the end), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_no_import_cycles_between_subpackages():
    graph: dict[str, set[str]] = {}
    for imp in src_imports():
        src, dst = unit(imp.importer), unit(imp.target)
        if src and dst and src != dst:
            graph.setdefault(src, set()).add(dst)
    assert graph, "no imports found: is the source where this test looks?"
    assert find_cycle(graph) is None, f"import cycle: {' -> '.join(find_cycle(graph))}"
