"""The package's import graph: no cycles, and imports only point left in the flow the README draws.

Every import counts, at module level or inside a function: a lazy import still ties the two
modules together. A module missing from LAYERS fails the test, so a new module is placed on
purpose (a new task module falls under ``runassist.tasks``).
"""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import REPO

PACKAGE = REPO / "runassist"

# Left to right, as in the README's "Layout" section. A module may import its own layer and any
# layer to its left, never one to its right.
LAYERS: list[tuple[str, ...]] = [
    ("runassist", "runassist.errors", "runassist.atomic", "runassist.env", "runassist.heap", "runassist.plots", "runassist.htmlparts",
     "runassist.data_profile"),
    ("runassist.config",),
    ("runassist.data",),
    ("runassist.assets",),
    ("runassist.metrics",),
    ("runassist.tasks",),
    ("runassist.cache", "runassist.inference", "runassist.runs", "runassist.registry", "runassist.feedback"),
    ("runassist.train",),
    ("runassist.onnx_runtime", "runassist.openvino_runtime", "runassist.predict", "runassist.predict_input", "runassist.predict_output",
     "runassist.predict_progress", "runassist.predict_workers"),
    ("runassist.predict_ray", "runassist.predict_accelerate"),
    ("runassist.evaluate", "runassist.export", "runassist.export_text", "runassist.node_js", "runassist.compare", "runassist.report", "runassist.agent",
     "runassist.init_config", "runassist.mcp_stdio", "runassist.chat_session", "runassist.gate", "runassist.retrain", "runassist.label_queue", "runassist.drift",
     "runassist.search"),
    ("runassist.serve",),
    ("runassist.cli_output", "runassist.cli_lifecycle", "runassist.cli", "runassist.__main__"),
]


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports(path: Path, name: str, known: set[str]) -> set[str]:
    """The runassist modules ``path`` imports (``from runassist import runs`` names the module runs)."""
    found: set[str] = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.split(".")[0] == "runassist"}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, *([base] if base else [])])
            if base.split(".")[0] != "runassist":
                continue
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
    return {m for m in found if m in known} - {name}


def layer_of(name: str) -> int:
    best = None
    for rank, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if name == prefix or (prefix != "runassist" and name.startswith(prefix + ".")):
                if best is None or len(prefix) > best[1]:
                    best = (rank, len(prefix))
    assert best is not None, f"{name} is in no layer of LAYERS: place it there (and in the README's layout)"
    return best[0]


def packages() -> set[str]:
    """Every package, with an __init__.py or without one (a namespace package imports all the same)."""
    return {module_name(d / "__init__.py") for d in [PACKAGE, *PACKAGE.rglob("*")] if d.is_dir()
            and d.name != "__pycache__" and any(d.glob("*.py"))}


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods) | packages()
    edges = {name: imports(path, name, known) for name, path in mods.items()}
    for name in known - set(mods):
        edges[name] = set()
    return edges


def test_every_module_has_a_layer():
    for name in modules():
        layer_of(name)


def test_imports_only_point_left():
    wrong = [f"{a} (layer {layer_of(a)}) imports {b} (layer {layer_of(b)})"
             for a, targets in sorted(graph().items()) for b in sorted(targets) if layer_of(b) > layer_of(a)]
    assert not wrong, "\n".join(wrong)


def test_no_import_cycles():
    edges = graph()
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                cycles.append(path[path.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)
    assert not cycles, "\n".join(" -> ".join(c) for c in cycles)


def test_the_checker_sees_lazy_imports_and_cycles(tmp_path, monkeypatch):
    """The walk must find an import inside a function, or a cycle made that way would pass."""
    source = "def f():\n    from runassist import runs\n    from runassist.tasks.base import Feature\n"
    (tmp_path / "x.py").write_text(source)
    known = {"runassist.runs", "runassist.tasks.base", "runassist.tasks"}
    assert imports(tmp_path / "x.py", "runassist.x", known) == {"runassist.runs", "runassist.tasks.base"}
