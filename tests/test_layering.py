"""The package's layering, read from the source (nothing is imported): no import cycle among
the ``sddhr`` modules, and no source file longer than :data:`MAX_LINES` lines.

An import counts when it runs while its module is being imported: at module level (inside a
class body, ``try`` or a plain ``if`` too), not inside a function and not under
``if TYPE_CHECKING:``. Importing ``a.b.c`` runs the packages ``a.b`` on the way (those that
are not the importer's own packages, which are already being imported), so a package whose
``__init__`` imports its submodules counts too.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "sddhr"
MAX_LINES = 400


def _modules() -> dict[str, Path]:
    """Every module of the package by its dotted name (a package by its own name)."""
    out = {}
    for path in sorted((SRC / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING"
            or isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _module_level_imports(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    """The import statements that run when the module is imported."""
    found: list[ast.Import | ast.ImportFrom] = []

    def visit(stmts: list[ast.stmt]) -> None:
        for st in stmts:
            if isinstance(st, (ast.Import, ast.ImportFrom)):
                found.append(st)
            elif isinstance(st, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            elif isinstance(st, ast.If):
                if not _is_type_checking(st.test):
                    visit(st.body)
                visit(st.orelse)
            else:  # class bodies, try / with / for / while / match blocks
                for field in ("body", "orelse", "finalbody"):
                    visit(getattr(st, field, []))
                for handler in getattr(st, "handlers", []):
                    visit(handler.body)
                for case in getattr(st, "cases", []):
                    visit(case.body)

    visit(tree.body)
    return found


def _targets(name: str, path: Path, node: ast.Import | ast.ImportFrom, modules: dict[str, Path]) -> set[str]:
    """The package's modules that ``node`` in module ``name`` (file ``path``) imports."""
    if isinstance(node, ast.Import):
        wanted = [a.name for a in node.names]
    else:
        if node.level:
            here = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
            base = here[:len(here) - (node.level - 1)]
            full = ".".join(base + ([node.module] if node.module else []))
        else:
            full = node.module or ""
        wanted = [full] + [f"{full}.{a.name}" for a in node.names]  # ``from pkg import submodule``
    out = set()
    for target in wanted:
        parts = target.split(".")
        for i in range(1, len(parts) + 1):  # the packages on the way, then the module itself
            mod = ".".join(parts[:i])
            if mod in modules and mod != name and not name.startswith(mod + "."):
                out.add(mod)
    return out


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        graph[name] = set().union(*(_targets(name, path, n, modules) for n in _module_level_imports(tree)))
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component that has one (Tarjan, then a path in it)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                components.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    cycles = []
    for comp in components:  # the shortest way back to the component's first module
        start, members = comp[0], set(comp)
        paths = {start: [start]}
        frontier = [start]
        while frontier and start not in {w for v in frontier for w in graph[v]}:
            nxt = []
            for v in frontier:
                for w in sorted(graph[v] & members):
                    if w not in paths:
                        paths[w] = paths[v] + [w]
                        nxt.append(w)
            frontier = nxt
        last = next(v for v in frontier if start in graph[v])
        cycles.append(paths[last] + [start])
    return cycles


def test_find_cycles_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set()}
    assert find_cycles(graph) == [["a", "b", "c", "a"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_only_the_imports_that_run_at_import_time_count():
    tree = ast.parse("import a\nif TYPE_CHECKING:\n    import b\nelse:\n    import c\n"
                     "def f():\n    import d\nclass C:\n    import e\ntry:\n    import f\nexcept ImportError:\n"
                     "    import g\n")
    assert [n.names[0].name for n in _module_level_imports(tree)] == ["a", "c", "e", "f", "g"]


def test_relative_imports_resolve_to_the_package_modules():
    graph = import_graph()
    assert "sddhr.noise.base" in graph["sddhr.noise"]  # a package's __init__ importing its submodules
    assert "sddhr.noise" in graph["sddhr.config"]  # ``from .noise import ...``
    assert "sddhr.noise.base" in graph["sddhr.noise.adc_gain"]  # ``from .base import ...``


def test_no_import_cycle():
    cycles = find_cycles(import_graph())
    assert not cycles, "import cycles among the sddhr modules (module-level imports):\n" + "\n".join(
        " -> ".join(c) for c in cycles)


def test_no_source_file_is_too_long():
    long = {str(p.relative_to(SRC)): n for p in sorted((SRC / PACKAGE).rglob("*.py"))
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not long, f"source files over {MAX_LINES} lines: {long}"
