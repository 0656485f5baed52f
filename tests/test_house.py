"""The house's rules, checked on the source: no import circle, rooms that stay torch-free,
modules short enough to read in one sitting, functions short enough to see whole.

The import graph counts imports inside functions too (a lazy import is still a
dependency); only `if TYPE_CHECKING:` blocks are left out.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Folder on disk → the package name it is imported under.
PACKAGES = {"caat_app": "caat_app", "storage": "caat_storage", "screens": "caat_screens"}
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 60

TORCH_FREE = [
    "caat_app.config",
    "caat_app.present",
    "caat_app.presets",
    "caat_app.registry",
    "caat_app.attacks",
    "caat_app.attacks.registry",
    "caat_app.models",
    "caat_app.data",
    "caat_app.training.schedule",
    "caat_app.training.resume_point",
    "caat_app.cli.resume",
    "caat_app.method.registry",
    "caat_app.evaluation.plan",
    "caat_app.evaluation.tables",
    "caat_app.evaluation.masking",
    "caat_app.analysis.front",
    "caat_app.analysis.points",
    "caat_app.analysis.compare",
    "caat_app.analysis.layers",
    "caat_app.lab.conflict_report",
    "caat_app.lab.synth_view",
    "caat_app.cli.conflict",
    "caat_app.cli.lab",
    "caat_storage.lab",
    "caat_app.cli.layers",
    "caat_app.cli.paper_list",
    "caat_app.cli.paper_slurm",
    "caat_app.runs.service",
    "caat_app.runs.manage",
    "caat_app.runs.launcher",
    "caat_app.runs.sweep",
    "caat_app.runs.grid",
    "caat_app.runs.stored",
    "caat_app.bench.startup",
    "caat_app.paper.budget_view",
    "caat_app.paper.catalogue",
    "caat_app.paper.estimate",
    "caat_app.paper.report",
    "caat_app.paper.run",
    "caat_app.paper.scale",
    "caat_app.paper.table1",
    "caat_app.cli",
    "caat_screens.budget",
    "caat_screens.conflict",
    "caat_storage",
    "caat_storage.firstpage",
    "caat_screens.app",
]


def _modules() -> dict[str, Path]:
    found = {}
    for folder, package in PACKAGES.items():
        for path in (ROOT / folder).rglob("*.py"):
            parts = path.relative_to(ROOT / folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join((package, *parts))] = path
    return found


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(sub) for sub in ast.walk(node))
    return skip


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The project's modules that `name` imports, resolved to the deepest known module."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip = _type_checking_nodes(tree)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*up, base] if base else up)
            targets.add(base)
            targets.update(f"{base}.{alias.name}" for alias in node.names)
    out = set()
    for target in targets:
        while target and target not in known:
            target = target.rpartition(".")[0]
        if target and target != name and not name.startswith(target + "."):
            out.add(target)
    return out


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
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

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_no_import_circle() -> None:
    modules = _modules()
    known = set(modules)
    graph = {name: _imports(name, path, known) for name, path in modules.items()}
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_modules_and_functions_stay_short() -> None:
    long_modules, long_functions = [], []
    for name, path in _modules().items():
        text = path.read_text(encoding="utf-8")
        if text.count("\n") > MAX_MODULE_LINES:
            long_modules.append(name)
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                assert node.end_lineno is not None
                if node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES:
                    long_functions.append(f"{name}:{node.name}")
    assert long_modules == []
    assert long_functions == []


def test_torch_free_rooms_do_not_import_torch() -> None:
    code = (
        "import importlib, sys\n"
        "for name in sys.argv[1:]:\n"
        "    importlib.import_module(name)\n"
        "    if 'torch' in sys.modules:\n"
        "        sys.exit(f'{name} imported torch')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, *TORCH_FREE], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
