"""No import circles among credits_pipeline's modules.

A circle means a piece lives in the wrong module: one side needs the other's helper while the
other needs its caller. Python tolerates a circle as long as one of its imports is deferred into a
function body, so the circles this guards against hid exactly there; the analysis therefore reads
every import statement the module can execute — at module level and inside functions — and only
leaves out `if TYPE_CHECKING:` blocks, which never run. `from package import name` counts as an
import of the submodule `package.name` when there is one.

The same reading keeps the demo generator (`credits_pipeline/source/demo`) independent of the
detection it is there to exercise: it may import neither the analytics nor the ledger's rules.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

import credits_pipeline

PACKAGE_DIR = Path(credits_pipeline.__file__).parent


def modules_of(package_dir: Path) -> dict[str, tuple[Path, bool]]:
    """Dotted module name -> (file, whether it is a package's `__init__`)."""
    root = package_dir.parent
    modules = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts = parts[:-1]
        modules[".".join(parts)] = (path, is_package)
    return modules


def _is_type_checking_only(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _executable_imports(nodes: Iterable[ast.AST]) -> Iterable[ast.Import | ast.ImportFrom]:
    """Every import statement that can run: module level, functions, classes, branches, `try`."""
    for node in nodes:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, ast.If) and _is_type_checking_only(node):
            yield from _executable_imports(node.orelse)
        else:
            yield from _executable_imports(ast.iter_child_nodes(node))


def _longest_known_prefix(name: str, modules: dict) -> str | None:
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in modules:
            return candidate
    return None


def import_graph(package_dir: Path) -> dict[str, set[str]]:
    """Module -> the package's modules it imports (directly, anywhere it can run)."""
    modules = modules_of(package_dir)
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, (path, is_package) in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in _executable_imports(tree.body):
            if isinstance(node, ast.Import):
                targets = [_longest_known_prefix(alias.name, modules) for alias in node.names]
            else:
                if node.level:
                    base_parts = name.split(".") if is_package else name.split(".")[:-1]
                    base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                    base = ".".join([*base_parts, *([node.module] if node.module else [])])
                else:
                    base = node.module or ""
                targets = [
                    f"{base}.{alias.name}"
                    if f"{base}.{alias.name}" in modules
                    else _longest_known_prefix(base, modules)
                    for alias in node.names
                ]
            graph[name].update(t for t in targets if t is not None and t != name)
    return graph


def import_circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for imported in sorted(graph[module]):
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in on_stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == module:
                    break
            if len(group) > 1:
                circles.append(sorted(group))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return sorted(circles)


def test_no_module_of_credits_pipeline_imports_itself_through_others():
    circles = import_circles(import_graph(PACKAGE_DIR))
    assert circles == [], "import circles (move the misplaced piece):\n" + "\n".join(
        " <-> ".join(group) for group in circles
    )


def test_the_analysis_finds_a_circle_closed_by_an_import_inside_a_function(tmp_path):
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("")
    (package / "sub" / "low.py").write_text(
        "def later():\n    from pkg.sub import high\n    return high\n"
    )
    (package / "sub" / "high.py").write_text("from . import low\n")
    (package / "typed.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import hinted\n"
    )
    (package / "hinted.py").write_text("import pkg.typed\n")

    assert import_circles(import_graph(package)) == [["pkg.sub.high", "pkg.sub.low"]]


# -- the demo generator stays independent of what it is generated to test -------------------------

DEMO_PACKAGE = "credits_pipeline.source.demo"
# What the demo's faults and abusers exercise: the usage-risk and churn analytics, and the
# ledger's replay and rules (importing any ledger module runs `credits_pipeline.ledger`'s
# `__init__`, which loads the rules). A generator sharing their code would share their mistakes.
DETECTION_PACKAGES = ("credits_pipeline.analytics", "credits_pipeline.ledger")


def _within(module: str, packages: Iterable[str]) -> bool:
    return any(module == p or module.startswith(f"{p}.") for p in packages)


def import_paths(graph: dict[str, set[str]], start: Iterable[str]) -> dict[str, list[str]]:
    """Every module importing `start` can run -> one chain of imports leading to it. Importing
    `a.b.c` runs `a/__init__` and `a/b/__init__` first, so those are reached on the way."""
    paths: dict[str, list[str]] = {}
    todo: list[str] = []

    def reach(module: str, via: list[str]) -> None:
        parts = module.split(".")
        for end in range(1, len(parts) + 1):
            name = ".".join(parts[:end])
            if name in graph and name not in paths:
                paths[name] = [*via, name]
                todo.append(name)

    for module in sorted(start):
        reach(module, [])
    while todo:
        module = todo.pop(0)
        for imported in sorted(graph[module]):
            reach(imported, paths[module])
    return paths


def test_the_demo_generator_imports_no_detection_code_anywhere_it_can_run():
    graph = import_graph(PACKAGE_DIR)
    demo = [module for module in graph if _within(module, [DEMO_PACKAGE])]
    assert f"{DEMO_PACKAGE}.abuse" in demo
    paths = import_paths(graph, demo)
    leaks = [" -> ".join(p) for m, p in paths.items() if _within(m, DETECTION_PACKAGES)]
    assert leaks == [], "the demo generator imports detection code:\n" + "\n".join(leaks)


def test_importing_the_demo_generator_loads_no_detection_module():
    """The same at run time, in a fresh interpreter: catches what the static reading cannot (an
    `importlib.import_module` of a computed name at import time)."""
    demo = sorted(m for m in modules_of(PACKAGE_DIR) if _within(m, [DEMO_PACKAGE]))
    code = (
        f"import importlib, sys\nfor name in {demo!r}:\n    importlib.import_module(name)\n"
        f"print('\\n'.join(sorted(sys.modules)))\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PACKAGE_DIR.parent), *sys.path])}
    loaded = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout.split()
    assert f"{DEMO_PACKAGE}.abuse" in loaded
    assert [m for m in loaded if _within(m, DETECTION_PACKAGES)] == []


def test_a_detection_module_is_reached_through_a_package_init_and_a_function_body(tmp_path):
    package = tmp_path / "pkg"
    for folder in ("gen", "util", "detect"):
        (package / folder).mkdir(parents=True)
        (package / folder / "__init__.py").write_text("")
    (package / "__init__.py").write_text("")
    (package / "gen" / "make.py").write_text("from pkg.util import dates\n")
    (package / "util" / "__init__.py").write_text("from pkg.util import later\n")
    (package / "util" / "dates.py").write_text("")
    (package / "util" / "later.py").write_text("def f():\n    import pkg.detect.rules\n")
    (package / "detect" / "rules.py").write_text("")

    paths = import_paths(import_graph(package), ["pkg.gen.make"])
    assert paths["pkg.detect.rules"] == [
        "pkg.gen.make",
        "pkg.util",
        "pkg.util.later",
        "pkg.detect.rules",
    ]
