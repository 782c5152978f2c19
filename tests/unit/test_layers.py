"""The import rule, checked on the import graph: lower layers never import higher ones, and no
two modules import each other, directly or round a loop.

Every `import` and `from ... import` of the project's own packages counts, wherever it is: at
the top, inside a function (a lazy import is still a dependency), and under `if TYPE_CHECKING:`
(an annotation-only import still couples the modules, and is how cycles hide).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("core", "models", "db", "worker")
# What each top-level package may import (besides itself and third-party code).
ALLOWED: dict[str, set[str]] = {
    "core": set(),
    "models": {"core"},
    "db": {"core"},
    "worker": {"core", "models", "db"},
}


def worker_order() -> list[str]:
    """The layer order, as written at the top of worker/__init__.py."""
    doc = ast.get_docstring(ast.parse((ROOT / "worker" / "__init__.py").read_text())) or ""
    lines = [line.strip() for line in doc.splitlines() if line.count(" < ") >= 2]
    assert len(lines) == 1, "worker/__init__.py must state the layer order on one `a < b` line"
    return [part.strip() for part in lines[0].split("<")]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if "migrations" not in path.parts:  # Alembic's revisions are frozen snapshots
                found[module_name(path)] = path
    return found


def imports(name: str, path: Path, known: dict[str, Path]) -> Iterator[str]:
    """The project modules `name` imports (a `from pkg import sub` counts as `pkg.sub`)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}".rstrip(".")
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                yield target
                break  # `from a.b import c`: the deepest module named is the dependency


def graph() -> dict[str, set[str]]:
    known = project_modules()
    return {name: set(imports(name, path, known)) for name, path in known.items()}


def layer(module: str, order: list[str]) -> int | None:
    """The position of a worker module's layer in `order` (None: not a worker module)."""
    parts = module.split(".")
    if parts[0] != "worker" or len(parts) < 2:
        return None
    return order.index(parts[1])


def test_the_rule_names_every_subpackage() -> None:
    order = worker_order()
    subpackages = {p.name for p in (ROOT / "worker").iterdir() if (p / "__init__.py").exists()}
    assert subpackages <= set(order), f"not placed in the rule: {subpackages - set(order)}"


def test_no_file_of_worker_outside_a_subpackage() -> None:
    flat = {module_name(p) for p in (ROOT / "worker").glob("*.py") if p.name != "__init__.py"}
    assert not flat, f"move into a subpackage: {sorted(flat)}"


def test_lower_packages_never_import_higher_ones() -> None:
    wrong = [
        f"{src} imports {dst}"
        for src, targets in graph().items()
        for dst in targets
        if dst.split(".")[0] != src.split(".")[0]
        and dst.split(".")[0] not in ALLOWED[src.split(".")[0]]
    ]
    assert not wrong, "\n".join(wrong)


def test_worker_layers_import_only_downwards() -> None:
    order = worker_order()
    wrong = []
    for src, targets in graph().items():
        here = layer(src, order)
        for dst in targets:
            there = layer(dst, order)
            if here is None or there is None:
                continue
            if there > here:
                wrong.append(f"{src} ({order[here]}) imports {dst} ({order[there]})")
    assert not wrong, "\n".join(wrong)


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles() -> None:
    assert cycles(graph()) == []


@pytest.mark.parametrize(
    ("edges", "expected"),
    [
        ({"a": {"b"}, "b": {"a"}}, [["a", "b"]]),
        ({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}, [["a", "b", "c"]]),
        ({"a": {"b"}, "b": set()}, []),
    ],
)
def test_cycle_finder(edges: dict[str, set[str]], expected: list[list[str]]) -> None:
    assert cycles(edges) == expected


def test_the_graph_sees_type_checking_and_lazy_imports() -> None:
    g = graph()
    assert "worker.session.viva" in g["worker.service.live"]  # under `if TYPE_CHECKING:`
    assert "models.fakes" in g["models.hub"]  # inside a function
    assert "worker.protocol" in g["worker.voice.outbox"]  # `from worker import protocol as p`
