"""The import graph of gansvc (issue 16 #4): no circle between gansvc modules, and every import follows the layers.

Read from the source with `ast` (nothing is imported): module-level and function-local imports both count, since a
function-local import that closes a circle only hides it. An import under `if TYPE_CHECKING:` never runs: it counts
for the layers, not for circles. `from gansvc.pkg import name` is an edge to the submodule `gansvc.pkg.name` when
there is one, else to the package module `gansvc.pkg` (its __init__).
"""

from __future__ import annotations

import ast
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2] / "gansvc"

# The layer table: module or package -> (layer, packages it may never import). A module imports modules of its own
# layer and of the layers below, never one above. The applications (layer 6) may import any layer, less the packages
# listed; nothing below imports them. No module imports a `__main__` (a command line, not a library).
LAYERS: dict[str, tuple[int, tuple[str, ...]]] = {
    # 0: base utilities
    "gansvc": (0, ()),
    "gansvc.paths": (0, ()),
    "gansvc.storage": (0, ()),
    "gansvc.imaging": (0, ()),
    "gansvc.strict": (0, ()),
    "gansvc.checkpoint_layout": (0, ()),  # the names of a checkpoint's files (read by families, registry, CLIs)
    "gansvc.data": (0, ()),
    "gansvc.metrics": (0, ()),
    # 1: networks, layers and losses
    "gansvc.nn": (1, ()),
    "gansvc.losses": (1, ()),
    # 2: the families (each family's training logic and its FamilySpec)
    "gansvc.families": (2, ()),
    # 3: what is stored and loaded: checkpoints, the experiment config, the model registry and its importers
    "gansvc.checkpoint": (3, ()),
    "gansvc.config": (3, ()),
    "gansvc.registry": (3, ()),
    "gansvc.importers": (3, ()),
    "gansvc.export": (3, ()),  # ONNX / TorchScript export of registry models (the registry's export command)
    # 4: training on Ray Train
    "gansvc.train": (4, ()),
    # 5: sweeps on Ray Tune
    "gansvc.tune": (5, ()),
    # 6: applications: serving never trains; the top-level CLIs never sweep
    "gansvc.serve": (6, ("gansvc.train", "gansvc.tune")),
    "gansvc.generate": (6, ("gansvc.tune",)),
    "gansvc.translate": (6, ("gansvc.tune",)),
    "gansvc.evaluate": (6, ("gansvc.tune",)),
    "gansvc.demo": (6, ("gansvc.tune",)),
    "gansvc.local": (6, ("gansvc.tune",)),
    "gansvc.cli": (6, ("gansvc.tune",)),
}


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    where: str  # file:line
    type_only: bool  # under `if TYPE_CHECKING:`

    def __str__(self) -> str:
        return f"{self.where}: {self.source} -> {self.target}"


def modules() -> dict[str, Path]:
    """Module name -> file of every module under gansvc/ (a package is named by its __init__)."""
    out = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _targets(node: ast.Import | ast.ImportFrom, module: str, is_package: bool, known: dict[str, Path]) -> list[str]:
    """The gansvc modules an import statement loads (its own module excluded)."""
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    else:
        base = node.module or ""
        if node.level:  # relative: from the module's package, one level up per extra dot
            package = module.split(".") if is_package else module.split(".")[:-1]
            package = package[: len(package) - node.level + 1]
            base = ".".join(package + ([base] if base else []))
        names = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
    out = []
    for name in names:
        while name and name not in known:  # `import gansvc.x.y` of a name inside a module: that module
            name = name.rpartition(".")[0]
        if name.startswith("gansvc") and name != module and name not in out:
            out.append(name)
    return out


def edges() -> list[Edge]:
    known = modules()
    found: list[Edge] = []
    for module, path in known.items():
        is_package = path.name == "__init__.py"
        rel = path.relative_to(ROOT.parent)

        def visit(
            node: ast.AST, type_only: bool, module: str = module, is_package: bool = is_package, rel: Path = rel
        ) -> None:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.Import | ast.ImportFrom):
                    for target in _targets(child, module, is_package, known):
                        found.append(Edge(module, target, f"{rel}:{child.lineno}", type_only))
                visit(child, type_only or (isinstance(child, ast.If) and _is_type_checking(child)))

        visit(ast.parse(path.read_text(), str(path)), False)
    return found


def layer_of(module: str) -> tuple[int, tuple[str, ...]] | None:
    """The LAYERS entry of the longest key naming the module or a package above it ("gansvc" only itself)."""
    keys = [k for k in LAYERS if module == k or (k != "gansvc" and module.startswith(k + "."))]
    return LAYERS[max(keys, key=len)] if keys else None


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def layer_violations(graph: list[Edge]) -> list[str]:
    out = []
    for e in graph:
        src, dst = layer_of(e.source), layer_of(e.target)
        if e.target.endswith(".__main__"):
            out.append(f"{e}: a __main__ module is a command line, not a library: import from the module it uses")
        elif src is None or dst is None:
            out.append(f"{e}: {e.source if src is None else e.target} is in no layer: add it to LAYERS")
        elif any(_within(e.target, p) for p in src[1]):
            out.append(f"{e}: {e.source} may never import {e.target}")
        elif dst[0] > src[0]:
            out.append(f"{e}: layer {src[0]} imports layer {dst[0]}")
    return out


def circles(graph: list[Edge]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), over the imports that run."""
    succ: dict[str, set[str]] = defaultdict(set)
    for e in graph:
        if not e.type_only:
            succ[e.source].add(e.target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(succ[v]):
            if w not in index:
                connect(w)
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

    for v in sorted(set(succ) | {t for ts in succ.values() for t in ts}):
        if v not in index:
            connect(v)
    return found


def test_the_graph_is_read() -> None:
    """The reader sees the imports this test relies on (a broken reader would pass every check below)."""
    graph = {(e.source, e.target) for e in edges()}
    assert ("gansvc.train.__main__", "gansvc.strict") in graph
    assert ("gansvc.tune.sweep", "gansvc.train.run") in graph  # a module-level import
    assert ("gansvc.train.run", "gansvc.train.loop") in graph  # a function-local import
    assert ("gansvc.config", "gansvc.families") in graph  # `from gansvc.families import get_family`: the package
    assert circles([Edge("a", "b", "a:1", False), Edge("b", "a", "b:1", False)]) == [["a", "b"]]
    assert not circles([Edge("a", "b", "a:1", False), Edge("b", "a", "b:1", True)]), "type-only edges never run"
    assert layer_violations([Edge("gansvc.config", "gansvc.train.run", "x:1", False)])
    assert layer_violations([Edge("gansvc.serve.app", "gansvc.train", "x:1", False)])
    assert not layer_violations([Edge("gansvc.generate", "gansvc.serve.api", "x:1", False)])
    assert layer_violations([Edge("gansvc.tune.sweep", "gansvc.train.__main__", "x:1", False)])


def test_no_import_circles() -> None:
    graph = edges()
    found = circles(graph)
    report = []
    for component in found:
        inside = [str(e) for e in graph if e.source in component and e.target in component and not e.type_only]
        report.append(f"circle {' <-> '.join(component)}:\n    " + "\n    ".join(inside))
    assert not found, "imports between gansvc modules form circles:\n" + "\n".join(report)


def test_imports_follow_the_layers() -> None:
    bad = layer_violations(edges())
    assert not bad, "imports against the layer order (see LAYERS in tests/unit/test_imports.py):\n" + "\n".join(bad)
