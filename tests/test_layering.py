"""The package's layering, read from the source with ``ast`` (nothing is imported).

Every ``import`` counts, at module level and inside functions (a lazy import is still a
dependency), except those under ``if TYPE_CHECKING:``, which never run. The rules are the
package map's (README "Package map", STYLE.md): a room imports only from the rooms before it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "seq2seq"

# Edges the cycle check leaves out, each with its reason.
ALLOWED_EDGES = {
    # `seq2seq.load` is imported on first use by the package's PEP 562 __getattr__, so that
    # `import seq2seq` (and `from seq2seq import __version__`) imports nothing of ours.
    ("seq2seq", "seq2seq.api"): "lazy public facade",
}

# (importer prefix, imported prefixes it must not reach): the rooms' order in the package map.
FORBIDDEN = [
    ("seq2seq.serving", ("seq2seq.training",)),
    ("seq2seq.models", ("seq2seq.data", "seq2seq.training", "seq2seq.decoding", "seq2seq.serving")),
    ("seq2seq.api", ("seq2seq.serving",)),
]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(path): path for path in sorted((SRC / PACKAGE).rglob("*.py"))}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_nodes(tree: ast.AST):
    """Every Import / ImportFrom node, at any depth, outside ``if TYPE_CHECKING:`` blocks."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        children = list(ast.iter_child_nodes(node))
        if isinstance(node, ast.If) and _is_type_checking(node):
            children = node.orelse  # the body runs only for type checkers
        stack.extend(children)


def _resolve(module: str, path: Path, node: ast.ImportFrom) -> str:
    """The absolute module name of ``from <node.module> import ...`` (relative levels resolved)."""
    if not node.level:
        return node.module or ""
    base = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(modules: dict[str, Path]) -> dict[str, list[tuple[str, int]]]:
    """For each module of the package, the modules of the package it imports, with line numbers.

    ``from pkg import name`` points at ``pkg.name`` when that is a module, else at ``pkg``.
    """
    graph: dict[str, list[tuple[str, int]]] = {}
    for module, path in modules.items():
        edges = []
        for node in _import_nodes(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                source = _resolve(module, path, node)
                targets = [f"{source}.{a.name}" if f"{source}.{a.name}" in modules else source for a in node.names]
            for target in targets:
                while target and target not in modules:  # `import seq2seq.x.attr` style: the module part
                    target = target.rpartition(".")[0]
                if target and target != module and (target, node.lineno) not in edges:
                    edges.append((target, node.lineno))
        graph[module] = edges
    return graph


def _within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def _cycles(graph: dict[str, list[tuple[str, int]]]) -> list[list[str]]:
    """One cycle (as a path that returns to its start) per strongly connected component (Tarjan)."""
    succ = {m: sorted({t for t, _ in edges if (m, t) not in ALLOWED_EDGES}) for m, edges in graph.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in succ[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(succ):
        if node not in index:
            visit(node)

    cycles = []
    for component in components:
        members = set(component)
        start = component[0]
        # Breadth-first from start, within the component, back to start: a shortest cycle.
        parents: dict[str, str] = {}
        frontier = [start]
        while frontier and start not in parents:
            following = []
            for node in frontier:
                for nxt in succ[node]:
                    if nxt in members and nxt not in parents:
                        parents[nxt] = node
                        following.append(nxt)
            frontier = following
        path = [start]
        node = parents[start]
        while node != start:
            path.append(node)
            node = parents[node]
        cycles.append([start, *reversed(path[1:]), start])
    return cycles


@pytest.fixture(scope="module")
def graph():
    return _imports(_modules())


def _line(graph, importer: str, imported: str) -> int:
    return min(line for target, line in graph[importer] if target == imported)


@pytest.mark.parametrize(("importer", "forbidden"), FORBIDDEN, ids=[rule[0] for rule in FORBIDDEN])
def test_rooms_import_only_earlier_rooms(graph, importer, forbidden):
    modules = _modules()
    faults = [
        f"{modules[module].relative_to(SRC.parent)}:{line}: {module} imports {target}"
        for module, edges in graph.items()
        if _within(module, importer)
        for target, line in edges
        if any(_within(target, prefix) for prefix in forbidden)
    ]
    assert not faults, "\n".join(faults)


def test_serving_never_reaches_training(graph):
    """Not through the modules it uses either (the Translator facade, checkpoint): the server
    loads no trainer code. Reports the chain that leads there."""
    parents = {module: None for module in graph if _within(module, "seq2seq.serving")}
    stack = list(parents)
    while stack:
        module = stack.pop()
        for target, _ in graph[module]:
            if target not in parents and (module, target) not in ALLOWED_EDGES:
                parents[target] = module
                stack.append(target)
    chains = []
    for module in sorted(parents):
        if _within(module, "seq2seq.training"):
            chain = [module]
            while parents[chain[-1]] is not None:
                chain.append(parents[chain[-1]])
            chains.append(" -> ".join(reversed(chain)))
    assert not chains, "serving reaches training:\n" + "\n".join(chains)


def test_no_import_cycles(graph):
    reports = [
        " -> ".join(f"{a} (line {_line(graph, a, b)})" for a, b in zip(cycle, cycle[1:], strict=False)) + f" -> {cycle[-1]}"
        for cycle in _cycles(graph)
    ]
    assert not reports, "import cycles:\n" + "\n".join(reports)


def test_the_check_sees_lazy_imports_and_cycles():
    """The reader itself: a function-level import is an edge, and a two-module loop is a cycle."""
    tree = ast.parse("import os\ndef f():\n    from seq2seq.b import x\nif TYPE_CHECKING:\n    import seq2seq.c\n")
    found = [node.module if isinstance(node, ast.ImportFrom) else node.names[0].name for node in _import_nodes(tree)]
    assert sorted(found) == ["os", "seq2seq.b"]
    assert _cycles({"a": [("b", 1)], "b": [("c", 2)], "c": [("a", 3)], "d": [("a", 4)]}) == [["a", "b", "c", "a"]]
