"""The shape of fanlog's import graph, read from the source (nothing is imported).

- No import circle: a module that imports another which, while it runs, imports the first
  again sees it half initialised, and works only by the order of its lines.
- Only ``fanlog/backends/`` and ``fanlog/compat/`` name a tracker library, even lazily:
  the core stays free of trackers, and a tracker is one file.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "fanlog"
TRACKERS = (
    "mlflow",
    "wandb",
    "tensorboard",
    "tensorboardX",
    "torch.utils.tensorboard",
    "azureml",
    "azure",
    "yprov4ml",
    "prov4ml",
)
TRACKER_HOMES = ("fanlog.backends", "fanlog.compat")
IMPORT_FUNCTIONS = {"import_module", "import_tracker", "__import__", "find_spec"}
"""Calls whose first argument, a string, names a module that gets imported."""


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted((SRC / PACKAGE).rglob("*.py"))}


def is_package(module: str) -> bool:
    return MODULES[module].name == "__init__.py"


def absolute(module: str, level: int, name: str | None) -> str:
    """The absolute name of ``from <level dots><name> import ...`` written in `module`."""
    if level == 0:
        return name or ""
    base = module.split(".") if is_package(module) else module.split(".")[:-1]
    base = base[: len(base) - level + 1]
    return ".".join(base + ([name] if name else []))


def _guarded(test: ast.expr) -> bool:
    """``if TYPE_CHECKING:`` or ``if __name__ == "__main__":``: not run at import."""
    text = ast.unparse(test)
    return text in ("TYPE_CHECKING", "typing.TYPE_CHECKING") or text.startswith("__name__ ==")


def import_time_statements(body: list[ast.stmt]) -> Iterator[ast.Import | ast.ImportFrom]:
    """Import statements run when the module is imported: not in functions nor under guards."""
    for node in body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, ast.If):
            if not _guarded(node.test):
                yield from import_time_statements(node.body)
            yield from import_time_statements(node.orelse)
        elif isinstance(node, ast.ClassDef):
            yield from import_time_statements(node.body)
        elif isinstance(node, (ast.Try, ast.With)):
            for block in ("body", "handlers", "orelse", "finalbody"):
                for part in getattr(node, block, []):
                    yield from import_time_statements(
                        part.body if isinstance(part, ast.ExceptHandler) else [part]
                    )


def targets(module: str, node: ast.Import | ast.ImportFrom) -> Iterator[str]:
    """The fanlog modules that `node` runs, as Python imports them (missing parent packages too)."""
    if isinstance(node, ast.Import):
        named = [alias.name for alias in node.names]
    else:
        base = absolute(module, node.level, node.module)
        named = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
    ancestors = {".".join(module.split(".")[:i]) for i in range(1, module.count(".") + 2)}
    for name in named:
        parts = name.split(".")
        for i in range(1, len(parts) + 1):
            prefix = ".".join(parts[:i])
            explicit = i == len(parts)
            if prefix in MODULES and (explicit or prefix not in ancestors) and prefix != module:
                yield prefix


def import_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text(), str(path))
        graph[module] = {t for node in import_time_statements(tree.body) for t in targets(module, node)}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of `graph` as [a, b, ..., a], or None (depth-first search)."""
    state: dict[str, str] = {}
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node] = "done"
        path.pop()
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return None


def all_imported_names(path: Path, module: str) -> Iterator[tuple[int, str]]:
    """(line, module name) of every import in the file, lazy ones and import calls included."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = absolute(module, node.level, node.module)
            yield node.lineno, base
            yield from ((node.lineno, f"{base}.{alias.name}") for alias in node.names)
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if called in IMPORT_FUNCTIONS and isinstance(node.args[0].value, str):
                yield node.lineno, node.args[0].value


def names_tracker(name: str) -> bool:
    return any(name == t or name.startswith(f"{t}.") for t in TRACKERS)


# ------------------------------------------------------------------------------ the checks
def test_the_package_has_no_import_cycle() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_only_backends_and_compat_name_a_tracker() -> None:
    offenders = [
        f"{MODULES[module].relative_to(SRC)}:{line}: {name}"
        for module in MODULES
        if not module.startswith(TRACKER_HOMES)
        for line, name in all_imported_names(MODULES[module], module)
        if names_tracker(name)
    ]
    assert offenders == []


# ------------------------------------------------------- the checks can fail (fixtures)
@pytest.mark.parametrize(
    ("graph", "cycle"),
    [
        ({"a": {"b"}, "b": {"a"}}, ["a", "b", "a"]),
        ({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}, ["a", "b", "c", "a"]),
        ({"a": {"a"}}, ["a", "a"]),
        ({"a": {"b", "c"}, "b": {"c"}, "c": set()}, None),
    ],
)
def test_find_cycle(graph: dict[str, set[str]], cycle: list[str] | None) -> None:
    assert find_cycle(graph) == cycle


CIRCLE = """
from typing import TYPE_CHECKING
from fanlog.kinds import core            # a real edge
if TYPE_CHECKING:
    from fanlog import logger            # not run
def later():
    from fanlog import pipeline          # not at import time
try:
    from fanlog import errors            # run
except ImportError:
    from . import record                 # run (relative: fanlog.record)
class Holder:
    from fanlog import secrets           # run with the class body
if __name__ == "__main__":
    from fanlog import demo              # not run on import
"""


def test_import_time_edges_are_read_as_python_runs_them() -> None:
    tree = ast.parse(CIRCLE)
    found = {t for node in import_time_statements(tree.body) for t in targets("fanlog.reader", node)}
    assert found == {"fanlog.kinds", "fanlog.kinds.core", "fanlog.errors", "fanlog.record", "fanlog.secrets"}


@pytest.mark.parametrize(
    "name",
    [
        "mlflow",
        "mlflow.tracking",
        "wandb.proto.wandb_internal_pb2",
        "torch.utils.tensorboard",
        "tensorboard.compat.proto",
        "azureml.mlflow",
        "azure.identity",
        "yprov4ml",
        "prov4ml.x",
    ],
)
def test_tracker_names_are_recognised(name: str) -> None:
    assert names_tracker(name)


@pytest.mark.parametrize(
    "name", ["fanlog.backends.mlflow", "torch", "torch.utils.data", "accelerate", "wandbx", "prov", "numpy"]
)
def test_other_names_are_not_trackers(name: str) -> None:
    assert not names_tracker(name)
