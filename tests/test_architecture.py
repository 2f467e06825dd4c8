"""The shape of the package, checked: imports run one way, modules and functions stay small.

The import graph is read from the source with ``ast``, every ``import`` in a
module counted wherever it sits (inside a function too: a lazy import that
only hides a cycle is still a cycle), except those under ``if TYPE_CHECKING:``,
which never run.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src"
PACKAGE = "resilient_db"

MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60
# A longer function must say why in the comment block right above its ``def``
# (or its decorators), in a line that starts with this marker.
LONG_MARKER = "# Long:"


def modules() -> dict[str, Path]:
    out = {}
    for path in sorted((SRC / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _type_checking_only(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST, name: str, is_package: bool) -> Iterator[str]:
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and _type_checking_only(node):
            for child in node.orelse:
                yield from _imports(child, name, is_package)
            continue
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            # ``from package import module`` names the submodule; the
            # package itself counts only for names it defines (as grimp reads it).
            yield module
            yield from (f"{module}.{alias.name}" for alias in node.names)
        yield from _imports(node, name, is_package)


def import_graph() -> dict[str, set[str]]:
    known = modules()
    graph: dict[str, set[str]] = {}
    for name, path in known.items():
        tree = ast.parse(path.read_text(), str(path))
        targets = set()
        found = set(_imports(tree, name, path.name == "__init__.py"))
        for imported in found:
            if imported not in known or imported == name:
                continue
            # ``from pkg import sub``: pkg yields both; only the submodule counts.
            if any(other.startswith(imported + ".") and other.rpartition(".")[0] == imported
                   for other in found if other in known):
                continue
            targets.add(imported)
        graph[name] = targets
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Return the strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph[node]):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def reaches(graph: dict[str, set[str]], start: str, prefix: str) -> list[str]:
    """Return the modules under ``prefix`` that ``start`` imports, directly or not."""
    seen: set[str] = set()
    todo = [start]
    while todo:
        for succ in graph[todo.pop()]:
            if succ not in seen:
                seen.add(succ)
                todo.append(succ)
    return sorted(m for m in seen if m == prefix or m.startswith(prefix + "."))


def test_the_graph_sees_lazy_imports_and_skips_type_checking_ones() -> None:
    tree = ast.parse(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from resilient_db.backends import base\n"
        "def f():\n    from resilient_db.health import registry\n"
    )
    found = set(_imports(tree, "resilient_db.x", False))
    assert "resilient_db.health.registry" in found
    assert "resilient_db.backends.base" not in found
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycle() -> None:
    assert cycles(import_graph()) == []


@pytest.mark.parametrize(
    ("layer", "must_not_reach"),
    [
        # The registry and everything the settings are made of know nothing
        # of the parts that read them.
        ("resilient_db.health.registry", "resilient_db.backends"),
        ("resilient_db.health.registry", "resilient_db.routers"),
        ("resilient_db.health.registry", "resilient_db.health.monitor"),
        ("resilient_db.health.registry", "resilient_db.health.probes"),
        ("resilient_db.health.monitor", "resilient_db.routers"),
        ("resilient_db.health.probes", "resilient_db.routers"),
        ("resilient_db.conf", "resilient_db.backends"),
        ("resilient_db.conf", "resilient_db.routers"),
        ("resilient_db.conf", "resilient_db.health.registry"),
        ("resilient_db.topology", "resilient_db.backends"),
        ("resilient_db.health.freshness", "resilient_db.routers"),
        # Routers read the registry; they never connect or probe.
        ("resilient_db.routers.router", "resilient_db.backends"),
        ("resilient_db.routers.router", "resilient_db.health.monitor"),
        ("resilient_db.routers.router", "resilient_db.health.probes"),
        # The health side and the middleware do not import a backend.
        ("resilient_db.health.monitor", "resilient_db.backends"),
        ("resilient_db.health.heartbeat", "resilient_db.backends"),
        ("resilient_db.middleware.health", "resilient_db.backends"),
        ("resilient_db.middleware.pinning", "resilient_db.backends"),
    ],
)
def test_imports_run_one_way(layer: str, must_not_reach: str) -> None:
    assert reaches(import_graph(), layer, must_not_reach) == []


def test_the_vendor_modules_import_nothing_else_of_the_app() -> None:
    graph = import_graph()
    for name in ("resilient_db.vendors.postgresql", "resilient_db.vendors.mysql"):
        assert graph[name] == set(), (name, graph[name])


def test_no_module_is_over_the_limit() -> None:
    long = {
        name: n
        for name, path in modules().items()
        if (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert long == {}


def test_no_function_is_over_the_limit_without_a_reason() -> None:
    long = []
    for name, path in modules().items():
        lines = path.read_text().splitlines()
        for node in ast.walk(ast.parse("\n".join(lines))):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            assert node.end_lineno is not None
            if node.end_lineno - node.lineno + 1 <= MAX_FUNCTION_LINES:
                continue
            first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            # The comment block right above the def (or its decorators).
            above = first - 2
            comments = []
            while above >= 0 and lines[above].strip().startswith("#"):
                comments.append(lines[above].strip())
                above -= 1
            if not any(line.startswith(LONG_MARKER) for line in comments):
                long.append(f"{name}.{node.name}")
    assert long == []
