#!/usr/bin/env python3
"""csst_edge's layering: every import (lazy ones inside functions too) points down the data flow, and no modules
import each other in a circle. Usage from the project root: `python3 tools/layers.py` (exit 1 on a problem).

The layers, lowest first, are docs/design.md's; a module may import its own layer and the layers before it. Every
first-level module or subpackage of csst_edge must be in a layer: a new one is an error until it is placed here.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

LAYERS = [
    ["__init__", "errors", "fileio", "progress", "storage", "sizes"],  # ground: no torch, no OpenCV models
    ["runtime"],  # the vehicle: numpy, OpenCV, ONNX Runtime, TensorRT; never torch
    ["data", "models"],
    ["evaluate"],
    ["train", "pseudo"],
    ["export"],
    ["pipeline"],
    ["cli", "__main__"],
]
RANK = {name: i for i, layer in enumerate(LAYERS) for name in layer}


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts.pop()
    return ".".join(parts)


def imported_modules(path: Path, module: str, package: str) -> set[str]:
    """Every csst_edge module `path` imports (absolute or relative, at any depth of the file)."""
    tree = ast.parse(path.read_text(), str(path))
    base = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == package)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                prefix = base[: len(base) - node.level + 1]
                target = ".".join(prefix + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] == package:
                found.add(target)
                found.update(f"{target}.{a.name}" for a in node.names)
    return found


def layer_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def check(root: Path) -> tuple[list[str], int, int]:
    """(problems, modules, imports) of the package at `root`."""
    package = root.name
    files = {module_name(p, root): p for p in sorted(root.rglob("*.py"))}
    unplaced = {layer_of(m) for m in files if layer_of(m) not in RANK}
    problems = [f"unplaced: {name} (add it to LAYERS in tools/layers.py)" for name in sorted(unplaced)]
    graph = {m: {t for t in imported_modules(p, m, package) if t in files and t != m} for m, p in files.items()}
    for module, targets in sorted(graph.items()):
        for target in sorted(targets):
            a, b = RANK.get(layer_of(module)), RANK.get(layer_of(target))
            if a is not None and b is not None and b > a:
                problems.append(f"up: {module} imports {target} ({layer_of(target)} is above {layer_of(module)})")
    problems += [f"cycle: {' -> '.join(c)}" for c in cycles(graph)]
    return problems, len(files), sum(map(len, graph.values()))


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
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

    sys.setrecursionlimit(10_000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def main() -> int:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parents[1] / "csst_edge").resolve()
    problems, modules, imports = check(root)
    for line in problems:
        print(line)
    print(f"{modules} modules, {imports} imports: {len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
