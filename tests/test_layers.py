"""The package's layers: every import, including those inside functions, runs downward.

Read statically from the sources (importing a submodule always runs ``otcore/__init__``,
which imports everything, so ``sys.modules`` cannot tell).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import otcore

ROOT = Path(otcore.__file__).parent

#: Rank of each layer: a module may import modules of its own rank or below.
LAYERS = [
    ("otcore._array", "otcore._dask"),
    ("otcore.costs", "otcore._validation"),
    ("otcore.geometry", "otcore.result", "otcore.collection"),
    ("otcore.kernels",),
    ("otcore.backends",),
    ("otcore.solvers",),
    ("otcore.losses", "otcore.entry_point", "otcore.pairwise"),
]


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def rank(name: str) -> int:
    if name == "otcore":
        return len(LAYERS)
    for r, prefixes in enumerate(LAYERS):
        if any(name == p or name.startswith(p + ".") for p in prefixes):
            return r
    raise AssertionError(f"{name} belongs to no layer; add it to LAYERS")


def imports_of(path: Path) -> set[str]:
    """The otcore modules that ``path`` imports, anywhere in the file."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "otcore")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "otcore":
                continue
            for alias in node.names:  # "from . import x" may name a submodule
                sub = f"{target}.{alias.name}"
                found.add(sub if (ROOT.parent / sub.replace(".", "/")).with_suffix(".py")
                          .exists() or (ROOT.parent / sub.replace(".", "/")).is_dir()
                          else target)
    return found


MODULES = {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}
GRAPH = {name: imports_of(path) for name, path in MODULES.items()}


@pytest.mark.parametrize("name", sorted(MODULES))
def test_imports_only_run_downward(name):
    upward = sorted(t for t in GRAPH[name] if rank(t) > rank(name))
    assert not upward, f"{name} (layer {rank(name)}) imports a higher layer: {upward}"


def closure(name: str) -> set[str]:
    seen, todo = set(), [name]
    while todo:
        for target in GRAPH.get(todo.pop(), ()):
            if target not in seen:
                seen.add(target)
                todo.append(target)
    return seen


@pytest.mark.parametrize("name", ["otcore.geometry", "otcore.result", "otcore._validation",
                                  "otcore.costs", "otcore._array"])
def test_data_modules_never_reach_the_backends(name):
    reached = closure(name)
    assert not any(t.startswith("otcore.backends") for t in reached), sorted(reached)
    assert not any(t.startswith("otcore.solvers") for t in reached), sorted(reached)


def test_the_bottom_layer_imports_nothing_from_otcore():
    assert GRAPH["otcore._array"] == set()


def test_the_checker_sees_function_level_imports():
    # a guard on the guard: the top-k kernels are imported inside a method of numba_cpu
    assert "otcore.kernels.numba.topk" in GRAPH["otcore.backends.numba_cpu"]
    assert "otcore.kernels.numba.apply" in GRAPH["otcore.backends.numba_cpu"]
