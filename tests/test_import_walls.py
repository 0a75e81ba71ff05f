"""The walls between the stages, read from the source with ``ast`` (imports inside functions included).

- ``dropnet.core`` imports only the standard library, numpy and itself;
- ``dropnet.server`` — and everything it imports — reaches neither torch (nor any module of the
  ``[train]`` extra) nor the trainer or the exporter;
- the embedded engine (``dropnet.server.predictor`` and everything it imports) reaches no grpc;
- ``dropnet.trainer`` and everything it imports reaches neither the exporter nor the server;
- only the ties — the CLI (``dropnet.cli``, ``dropnet.__main__``, ``dropnet.demo``) and the public API (``dropnet/__init__.py``)
  — join the stages: no other module imports them (or the public API's names), and ``import dropnet``
  itself imports only the standard library;
- nothing anywhere in the repository imports the folders ``trainer``, ``exporter``, ``server``,
  ``protos`` by their un-prefixed names (installed, they are ``dropnet.<folder>``).

Each violation names file, line, the import and — for walls that hold for everything a module
imports — the chain of imports that reaches it.
"""

from __future__ import annotations

import ast
import sys
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

import dropnet
from dropnet.extras import TRAIN_MODULES
from tests.sources import PACKAGE_FOLDERS, REPO, module_name, python_files

TIES = {"dropnet", "dropnet.__main__", "dropnet.cli", "dropnet.demo"}
PUBLIC_API = {f"dropnet.{name}" for name in dropnet.__all__ if name != "__version__"}
GRPC = {"grpc", "grpc_health", "grpc_reflection", "grpc_tools"}
ENGINE = "dropnet.server.predictor"


@dataclass(frozen=True)
class Import:
    """One import statement (or ``import_module("...")`` call) and the module names it may load."""

    path: Path
    line: int
    modules: tuple[str, ...]
    """``from a import b, c`` gives ``a``, ``a.b``, ``a.c``: a name imported from a package may be a module."""
    eager: bool
    """Runs when the importing module is imported: at module level and outside ``if TYPE_CHECKING:``."""


@dataclass(frozen=True)
class Wall:
    """Modules for which ``applies`` holds must not import a module for which ``forbidden`` holds.

    ``transitive``: nor may anything they import, directly or not (ties are not followed).
    """

    name: str
    applies: Callable[[str], bool]
    forbidden: Callable[[str], bool]
    transitive: bool = True


def within(module: str, *packages: str) -> bool:
    return any(module == package or module.startswith(package + ".") for package in packages)


def top(module: str) -> str:
    return module.partition(".")[0]


WALLS = [
    Wall("core imports only the standard library, numpy and itself", lambda m: within(m, "dropnet.core"),
         lambda m: not (top(m) in sys.stdlib_module_names or within(m, "numpy", "dropnet.core"))),
    Wall("server ↛ torch, trainer, exporter", lambda m: within(m, "dropnet.server"),
         lambda m: top(m) in TRAIN_MODULES or within(m, "dropnet.trainer", "dropnet.exporter")),
    Wall("embedded engine ↛ grpc", lambda m: m == ENGINE, lambda m: top(m) in GRPC),
    Wall("trainer ↛ exporter, server", lambda m: within(m, "dropnet.trainer"),
         lambda m: within(m, "dropnet.exporter", "dropnet.server", "dropnet.protos")),
    Wall("only the ties (the CLI, the public API) join the stages", lambda m: within(m, "dropnet") and m not in TIES,
         lambda m: m in PUBLIC_API or m in TIES - {"dropnet"}, transitive=False),
    Wall("un-prefixed stage folders are never imported", lambda m: True,
         lambda m: top(m) in PACKAGE_FOLDERS and top(m) != "dropnet", transitive=False),
]


def imports_of(root: Path, relative: Path) -> list[Import]:
    """Every import in a file, wherever it is written, with relative imports made absolute."""
    tree = ast.parse((root / relative).read_text(encoding="utf-8"), filename=str(relative))
    name = module_name(relative)
    package = name if relative.name == "__init__.py" else name.rpartition(".")[0]
    found: list[Import] = []

    def visit(node: ast.AST, eager: bool) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            eager = False
        elif isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                visit(child, False)
            for child in node.orelse:
                visit(child, eager)
            return
        if modules := _imported(node, package):
            found.append(Import(relative, node.lineno, modules, eager))
        for child in ast.iter_child_nodes(node):
            visit(child, eager)

    visit(tree, True)
    return found


def _imported(node: ast.AST, package: str) -> tuple[str, ...]:
    if isinstance(node, ast.Import):
        return tuple(alias.name for alias in node.names)
    if isinstance(node, ast.ImportFrom):
        base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package if node.level else ""
        module = ".".join(part for part in (base, node.module) if part)
        return (module, *(f"{module}.{alias.name}" for alias in node.names if alias.name != "*"))
    if (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str) and ast.unparse(node.func).endswith(("import_module", "__import__"))):
        return (node.args[0].value,)  # importlib.import_module("literal") / __import__("literal")
    return ()


def violations(root: Path) -> list[str]:
    """Every wall breach in the repository at ``root``, as ``path:line: message``."""
    graph = {module_name(relative): imports_of(root, relative) for relative in python_files(root)}
    found = [
        f"{i.path}:{i.line}: `import dropnet` imports {i.modules[0]} (only the standard library is allowed)"
        for i in graph.get("dropnet", []) if i.eager and top(i.modules[0]) not in sys.stdlib_module_names
    ]
    for wall in WALLS:
        roots = [module for module in graph if wall.applies(module)]
        for module, chain in (_reach(graph, roots) if wall.transitive else {m: [m] for m in roots}).items():
            via = f" (reached via {' → '.join(chain)})" if len(chain) > 1 else ""
            for i in graph[module]:
                if breach := next((name for name in i.modules if wall.forbidden(name)), None):
                    found.append(f"{i.path}:{i.line}: {module} imports {breach}: {wall.name}{via}")
    return sorted(found)


def _reach(graph: dict[str, list[Import]], roots: list[str]) -> dict[str, list[str]]:
    """Each module reachable from ``roots`` through imports (and the packages they sit in), with a shortest chain.

    Ties are left out: a stage importing one breaches a wall of its own, and ``dropnet/__init__.py``,
    the parent of every module, is checked for what it imports eagerly.
    """
    chains = {root: [root] for root in roots if root not in TIES}
    queue = deque(chains)
    while queue:
        module = queue.popleft()
        for imported in graph[module]:
            for target in (parent for name in imported.modules for parent in _with_parents(name)):
                if target in graph and target not in chains and target not in TIES:
                    chains[target] = [*chains[module], target]
                    queue.append(target)
    return chains


def _with_parents(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:end]) for end in range(len(parts), 0, -1)]


# --- the tests --------------------------------------------------------------------------------


def test_the_repository_keeps_every_wall() -> None:
    assert violations(REPO) == []


def test_the_checker_finds_the_engine_and_the_walls() -> None:
    graph = {module_name(relative) for relative in python_files(REPO)}
    assert {ENGINE, "dropnet.core.errors", "dropnet.server.app", "dropnet.trainer.loop", "dropnet.cli"} <= graph
    assert PUBLIC_API >= {"dropnet.Predictor", "dropnet.export_package", "dropnet.train"}


CORE = "core imports only the standard library, numpy and itself"
BREACHES = {
    "an import inside a function, and relative imports": (
        {
            "dropnet/__init__.py": "",
            "dropnet/core/__init__.py": "",
            "dropnet/core/bad.py": "import json\n\n\ndef f():\n    import torch\n    from ..core import other\n",
            "dropnet/core/other.py": "from dropnet.server import app\n",
        },
        [f"dropnet/core/bad.py:5: dropnet.core.bad imports torch: {CORE}",
         f"dropnet/core/other.py:1: dropnet.core.other imports dropnet.server: {CORE}"],
    ),
    "grpc reached by the engine through another module, by import_module": (
        {
            "server/__init__.py": "",
            "server/predictor.py": "from dropnet.server.helper import run\n",
            "server/helper.py": "def run():\n    import importlib\n    return importlib.import_module('grpc.aio')\n",
        },
        ["server/helper.py:3: dropnet.server.helper imports grpc.aio: embedded engine ↛ grpc "
         "(reached via dropnet.server.predictor → dropnet.server.helper)"],
    ),
    "stage crossings, un-prefixed names and a heavy root package": (
        {
            "dropnet/__init__.py": "import numpy\nfrom typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import torch\n",
            "trainer/loop.py": "from dropnet import export_package\n",
            "server/app.py": "from dropnet.exporter.package import export_package\n",
            "exporter/package.py": "",
            "tests/test_x.py": "from server.app import main\n",
        },
        ["dropnet/__init__.py:1: `import dropnet` imports numpy (only the standard library is allowed)",
         "server/app.py:1: dropnet.server.app imports dropnet.exporter.package: server ↛ torch, trainer, exporter",
         "tests/test_x.py:1: tests.test_x imports server.app: un-prefixed stage folders are never imported",
         "trainer/loop.py:1: dropnet.trainer.loop imports dropnet.export_package: "
         "only the ties (the CLI, the public API) join the stages"],
    ),
}
"""Synthetic repositories, each with the breaches the checker must report (file and line)."""


@pytest.mark.parametrize(("files", "expected"), BREACHES.values(), ids=BREACHES)
def test_the_checker_catches_a_breach_with_file_and_line(
    tmp_path: Path, files: dict[str, str], expected: list[str]
) -> None:
    for relative, text in files.items():
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_text(text)
    assert violations(tmp_path) == expected
