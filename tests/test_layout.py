"""The house stands: no import circle inside mace_transfer, arrows between layers point down only.

Imports are read with ``ast`` from the source (function-level imports included), so a lazy import
cannot hide a circle.
"""

import ast
import importlib
import warnings
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "mace_transfer"

#: a layer may import its own folder and the layers below it (cli on top, the package root at 0)
#: ``execution`` (the seam to Dask) is the lowest floor: it imports nothing of the package
FLOOR = {"mace_transfer": 0, "execution": 0, "datagen": 1, "transfer": 1, "evaluate": 2, "active": 3, "studies": 4,
         "cli": 5}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def our_modules():
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports_of(path: Path, modules) -> set:
    """The mace_transfer modules ``path`` imports: ``from a.b import c`` is a.b.c when that is a module."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                     for a in node.names]
        else:
            continue
        found.update(n for n in names if n.split(".")[0] == "mace_transfer")
    return found


def import_graph():
    modules = our_modules()
    return {name: imports_of(path, modules) - {name} for name, path in modules.items()}


def find_cycle(graph):
    """One import circle as a list of modules, or None (depth-first search, three colours)."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "mace_transfer"


def test_cycle_finder_sees_a_circle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_no_import_circle_inside_mace_transfer():
    assert find_cycle(import_graph()) is None


def test_imports_point_down_the_layers_only():
    wrong = []
    for module, targets in import_graph().items():
        for target in targets:
            here, there = layer(module), layer(target)
            if here != there and FLOOR[there] >= FLOOR[here]:
                wrong.append(f"{module} -> {target}")
    assert wrong == []


def test_execution_is_the_lowest_floor():
    """The executor seam imports nothing of the package, so every layer may submit through it."""
    assert import_graph()["mace_transfer.execution"] == set()


def test_old_flat_names_are_the_new_modules():
    from mace_transfer import MOVED_MODULES

    for old, new in MOVED_MODULES.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            module = importlib.import_module(f"mace_transfer.{old}")
        assert module is importlib.import_module(f"mace_transfer.{new}")
        assert module.__spec__.name == f"mace_transfer.{new}"


def test_old_name_warns_once_it_is_imported_fresh():
    import sys

    sys.modules.pop("mace_transfer.remap", None)
    with pytest.warns(DeprecationWarning, match="mace_transfer.transfer.remap"):
        from mace_transfer.remap import remap_elements  # noqa: F401  (the README's import, release 0.1)
