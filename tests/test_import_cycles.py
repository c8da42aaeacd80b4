"""No import cycles inside kbmfast/, and the library never imports a command module.

A static check (an AST walk, no imports executed): every ``import`` and ``from ... import`` in
every kbmfast/**/*.py counts, wherever it stands: at the top, inside a function (a "late"
import is still a circle), or under ``if TYPE_CHECKING:`` (mypy follows those). Importing
``a.b.c`` also runs the package ``a.b``'s ``__init__``, so that package is an edge too, except
for the importing module's own ancestors (those already run before it does).
"""

from __future__ import annotations

import ast
import itertools
from pathlib import Path

import pytest

import kbmfast

# The package as imported: the source tree under an editable install, site-packages under the
# wheel (.ci/wheel runs the suite against an installed wheel).
ROOT = Path(kbmfast.__file__).resolve().parent.parent
PACKAGE = "kbmfast"

# Compiled modules (no .py source): leaves of the graph.
EXTENSIONS = {"kbmfast._native"}

# The command modules: the whole kbmfast.cli package (one module per command, and its entry
# point). The library under it (the benchmark engine kbmfast.bench and the generator kbmfast.gen
# included) must never import one of them.
COMMAND_PACKAGE = "kbmfast.cli"
COMMANDS = {"version", "bench", "verify", "gen", "keys", "state", "serve", "mn"}


def is_command(module: str) -> bool:
    """Whether ``module`` is part of the command line (kbmfast.cli or anything under it)."""
    return module == COMMAND_PACKAGE or module.startswith(COMMAND_PACKAGE + ".")


def module_files(root: Path, package: str) -> dict[str, Path]:
    """Map every module name under ``root/package`` to its file."""
    out: dict[str, Path] = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    for name in EXTENSIONS:
        if name.split(".")[0] == package:
            out.setdefault(name, root / (name.replace(".", "/") + ".so"))
    return out


def _resolve(name: str, is_package: bool, level: int, module: str | None) -> str:
    if level == 0:
        return module or ""
    base = name.split(".") if is_package else name.split(".")[:-1]
    base = base[: len(base) - (level - 1)] if level > 1 else base
    return ".".join(base + ([module] if module else []))


def _closest(target: str, modules: dict[str, Path]) -> str | None:
    """The longest known module that ``target`` names (``kbmfast.x.Y`` -> ``kbmfast.x``)."""
    parts = target.split(".")
    while parts:
        cand = ".".join(parts)
        if cand in modules:
            return cand
        parts.pop()
    return None


def _with_packages(name: str, target: str, modules: dict[str, Path]) -> set[str]:
    """``target`` plus the packages whose __init__ importing it runs (not ``name``'s ancestors)."""
    out = {target}
    parts = target.split(".")
    for i in range(1, len(parts)):
        pkg = ".".join(parts[:i])
        if pkg in modules and not (name == pkg or name.startswith(pkg + ".")):
            out.add(pkg)
    return out


def import_graph(root: Path, package: str) -> dict[str, dict[str, int]]:
    """Module -> {imported module: line of the first such import}, within ``package`` only."""
    modules = module_files(root, package)
    graph: dict[str, dict[str, int]] = {}
    for name, path in modules.items():
        if not path.exists():
            graph[name] = {}
            continue
        is_package = path.name == "__init__.py"
        edges: dict[str, int] = {}
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(name, is_package, node.level, node.module)
                # "from pkg import sub" imports the submodule when there is one.
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
            for t in targets:
                hit = _closest(t, modules) if t.split(".")[0] == package else None
                if hit is None:
                    continue
                for dep in _with_packages(name, hit, modules):
                    if dep != name:
                        edges.setdefault(dep, node.lineno)
        graph[name] = edges
    return graph


def find_cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Every strongly connected component of more than one module, as one cycle path through it."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    comps: list[list[str]] = []

    def strong(v: str) -> None:  # Tarjan; the graph is a few dozen modules
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, {}):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                comps.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            strong(v)
    return [_cycle_path(graph, set(c), c[0]) for c in comps]


def _cycle_path(graph: dict[str, dict[str, int]], comp: set[str], start: str) -> list[str]:
    """A shortest path start -> ... -> start inside one component (breadth first)."""
    prev: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v]):
                if w not in comp:
                    continue
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(prev[path[-1]])
                    return [*reversed(path), start]
                if w not in prev:
                    prev[w] = v
                    nxt.append(w)
        frontier = nxt
    raise AssertionError("a component without a cycle")  # pragma: no cover


def describe(graph: dict[str, dict[str, int]], path: list[str]) -> str:
    return " -> ".join(f"{a} (line {graph[a][b]})" for a, b in itertools.pairwise(path)) + f" -> {path[-1]}"


def test_no_import_cycles() -> None:
    graph = import_graph(ROOT, PACKAGE)
    assert len(graph) > 10 and "kbmfast.fast" in graph["kbmfast"]
    cycles = find_cycles(graph)
    assert not cycles, "import cycles in kbmfast/:\n" + "\n".join(describe(graph, c) for c in cycles)


def test_library_never_imports_a_command() -> None:
    graph = import_graph(ROOT, PACKAGE)
    missing = {f"{COMMAND_PACKAGE}.{c}" for c in COMMANDS} - set(graph)
    assert not missing, f"command modules not found: {sorted(missing)}"
    bad = [
        f"{mod} imports {dep} (line {line})"
        for mod, deps in graph.items()
        if not is_command(mod)
        for dep, line in deps.items()
        if is_command(dep)
    ]
    assert not bad, "\n".join(bad)


def test_command_package_is_one_prefix() -> None:
    assert is_command("kbmfast.cli") and is_command("kbmfast.cli.verify") and is_command("kbmfast.cli.__main__")
    assert not is_command("kbmfast.client") and not is_command("kbmfast.bench") and not is_command("kbmfast")


def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)


def test_checker_finds_a_late_import_cycle(tmp_path: Path) -> None:
    # The check itself: a circle closed by an import inside a function, through a subpackage.
    _write(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/a.py": "from .sub import b\n",
            "pkg/sub/__init__.py": "",
            "pkg/sub/b.py": "import os\n\ndef f():\n    from ..c import thing\n",
            "pkg/c.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import a\n",
            "pkg/d.py": "from . import a, c\n",
        },
    )
    graph = import_graph(tmp_path, "pkg")
    assert graph["pkg.sub.b"] == {"pkg.c": 4}
    assert set(graph["pkg.a"]) == {"pkg.sub", "pkg.sub.b"}
    cycles = find_cycles(graph)
    assert len(cycles) == 1
    assert cycles[0][0] == cycles[0][-1] and set(cycles[0]) == {"pkg.a", "pkg.sub.b", "pkg.c"}
    assert "pkg.sub.b (line 4) -> pkg.c" in describe(graph, cycles[0])


@pytest.mark.parametrize(
    ("files", "cycle"),
    [
        # A sibling package's __init__ that imports the module back: the _mn <-> reference shape.
        (
            {
                "pkg/__init__.py": "",
                "pkg/m.py": "def f():\n    from .ref.state import S\n",
                "pkg/ref/__init__.py": "from ..m import f\n",
                "pkg/ref/state.py": "",
            },
            {"pkg.m", "pkg.ref"},
        ),
        ({"pkg/__init__.py": "", "pkg/x.py": "import pkg.y\n", "pkg/y.py": "from pkg.x import z\n"}, {"pkg.x", "pkg.y"}),
    ],
)
def test_checker_shapes(tmp_path: Path, files: dict[str, str], cycle: set[str]) -> None:
    _write(tmp_path, files)
    cycles = find_cycles(import_graph(tmp_path, "pkg"))
    assert [set(c) for c in cycles] == [cycle]


# The module that defines the command line's error and output helpers (shared by the commands).
CLI_HELPERS = "kbmfast._outputs"


def test_command_line_code_lives_in_the_command_package() -> None:
    """Code that raises the command line's CliError is command code: it belongs under kbmfast.cli
    (where the graph above checks that the library never imports it). kbmfast.verify_rr was such
    code in the library's top level."""
    modules = module_files(ROOT, PACKAGE)
    bad = []
    for name, path in modules.items():
        if is_command(name) or name == CLI_HELPERS or not path.exists():
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Name) and node.id == "CliError":
                bad.append(f"{name} (line {node.lineno})")
                break
    assert not bad, "command-line code outside kbmfast.cli: " + ", ".join(bad)
    assert "kbmfast.cli._verify_rr" in modules
