"""The house's one-way dependency map (README, docs/architecture.md), checked on the source itself.

Every module of our packages is parsed with `ast` (nothing is imported), and every import is an edge:
module level, inside functions, under `if TYPE_CHECKING:`, relative ones resolved, and
`importlib.import_module("literal")`. Two rules:

- across packages, only the edges of `ALLOWED` (a failure names file:line and the edge);
- inside a package, no cycle through imports that run (type-only imports under `TYPE_CHECKING` do not
  count: they never execute). `KNOWN_CYCLES` lists the cycles not yet taken apart (issue 26), so a new
  cycle fails, and so does a listed one that is gone (then strike it from the list).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

#: who may import whom (a package always imports itself)
ALLOWED: dict[str, set[str]] = {
    "contract": set(),
    "vision": set(),
    "mes": {"contract"},
    "opcua": {"contract"},
    "training": {"vision", "contract"},
    "hub": {"contract", "mes", "vision"},
    "edge_agent": {"vision", "opcua", "contract", "mes"},
}

#: `edge-inspect` itself: the one module that gathers every package's command-line module (by name,
#: through importlib), so it may reach those and nothing else of the other packages.
FRONT_DOOR = "edge_agent.cli"
CLI_MODULES = {"vision.cli", "opcua.cli", "training.cli", "training.runtime_cli", "hub.cli"}

#: runtime cycles inside a package that are still to be taken apart (see the module docstring); issue 26
#: took the last ones apart, so any runtime cycle now fails
KNOWN_CYCLES: set[frozenset[str]] = set()


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    path: Path
    line: int
    type_only: bool

    def where(self) -> str:
        return f"{self.path.relative_to(REPO)}:{self.line}: {self.source} -> {self.target}"


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package in ALLOWED:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = list(path.relative_to(REPO).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    inside: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for stmt in node.body:
                inside.update(id(n) for n in ast.walk(stmt))
    return inside


def _imported_names(module: str, is_package: bool, node: ast.AST) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom):
        if node.level:
            base = module.split(".") if is_package else module.split(".")[:-1]
            base = base[: len(base) - (node.level - 1)]
            prefix = ".".join(base + ([node.module] if node.module else []))
        else:
            prefix = node.module or ""
        return [prefix] + [f"{prefix}.{alias.name}" for alias in node.names]
    if (
        isinstance(node, ast.Call)
        and (getattr(node.func, "attr", None) or getattr(node.func, "id", None)) == "import_module"
        and node.args
        and isinstance(node.args[0], ast.Constant)
        and isinstance(node.args[0].value, str)
    ):
        return [node.args[0].value]
    return []


def _edges(modules: dict[str, Path]) -> list[Edge]:
    edges: list[Edge] = []
    for module, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        type_only = _type_checking_nodes(tree)
        for node in ast.walk(tree):
            targets: set[str] = set()
            for name in _imported_names(module, path.name == "__init__.py", node):
                # `from pkg import name`: the submodule when `name` is one, else the module itself
                while name and name not in modules and "." in name:
                    name = name.rsplit(".", 1)[0]
                if name in modules and name != module:
                    targets.add(name)
                elif name.split(".")[0] in ALLOWED and name.split(".")[0] != module.split(".")[0]:
                    targets.add(name)  # one of our packages, even if the module does not exist
            for target in sorted(targets):
                edges.append(Edge(module, target, path, node.lineno, id(node) in type_only))
    return edges


def _front_door_modules(path: Path) -> set[str]:
    """The module names the front door loads by name: every string constant naming a module of ours."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and node.value.split(".")[0] in ALLOWED
        and node.value.count(".") == 1
        and " " not in node.value
    }


def _cycles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[frozenset[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(frozenset(component))
    return found


def test_packages_import_only_what_the_map_allows() -> None:
    modules = _modules()
    wrong = []
    for edge in _edges(modules):
        source_pkg, target_pkg = edge.source.split(".")[0], edge.target.split(".")[0]
        if source_pkg == target_pkg or target_pkg in ALLOWED[source_pkg]:
            continue
        if edge.source == FRONT_DOOR and edge.target in CLI_MODULES:
            continue
        wrong.append(edge.where() + (" (type-only)" if edge.type_only else ""))
    front_door = _front_door_modules(modules[FRONT_DOOR])
    for name in sorted(front_door):
        if name.split(".")[0] not in ALLOWED["edge_agent"] | {"edge_agent"} and name not in CLI_MODULES:
            wrong.append(f"{modules[FRONT_DOOR].relative_to(REPO)}: loads {name}, not a command-line module")
    assert not wrong, "imports outside the dependency map:\n" + "\n".join(wrong)


def test_no_runtime_import_cycle_inside_a_package() -> None:
    modules = _modules()
    graph: dict[str, set[str]] = {m: set() for m in modules}
    where: dict[tuple[str, str], Edge] = {}
    for edge in _edges(modules):
        same_package = edge.source.split(".")[0] == edge.target.split(".")[0]
        if same_package and not edge.type_only and edge.target in graph:
            graph[edge.source].add(edge.target)
            where.setdefault((edge.source, edge.target), edge)
    cycles = set(_cycles(graph))
    new = cycles - KNOWN_CYCLES
    report = []
    for cycle in sorted(new, key=sorted):
        report.append("cycle: " + ", ".join(sorted(cycle)))
        report += [
            "  " + edge.where()
            for (source, target), edge in sorted(where.items())
            if source in cycle and target in cycle
        ]
    assert not new, "runtime import cycles inside a package:\n" + "\n".join(report)
    gone = KNOWN_CYCLES - cycles
    assert not gone, f"taken apart, strike from KNOWN_CYCLES: {sorted(sorted(c) for c in gone)}"


def test_the_checker_sees_every_kind_of_import() -> None:
    """The walker itself: function-level, relative, TYPE_CHECKING and importlib imports are edges."""
    source = (
        "from typing import TYPE_CHECKING\n"
        "import importlib\n"
        "from . import sibling\n"
        "if TYPE_CHECKING:\n"
        "    from edge_agent.agent import Agent\n"
        "def f():\n"
        "    from hub.store import HubStore\n"
        "    importlib.import_module('training.cli')\n"
    )
    tree = ast.parse(source)
    found = {name for node in ast.walk(tree) for name in _imported_names("contract.probe", False, node)}
    assert {"contract.sibling", "edge_agent.agent.Agent", "hub.store", "training.cli"} <= found
    type_only = _type_checking_nodes(tree)
    froms = {n.module: n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert id(froms["edge_agent.agent"]) in type_only and id(froms["hub.store"]) not in type_only
    assert _cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [frozenset({"a", "b"})]
