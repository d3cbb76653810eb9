"""The pack's shape, from its ``import`` statements: no import cycle, imports point down the layers only, and no test
module imports another (docs/architecture.md draws the layers).

Layers, lowest first: ``gpen_arch`` (the network) < ``face_pipeline`` (the face pipeline) < ``face_jobs`` (batch jobs)
< hosts (``nodes``, ``cli.py``, the pack's ``__init__.py``, ``install.py``). A module may import its own layer and the
layers below it, never one above. ``tests/`` and ``benchmarks/`` sit outside and may import anything.

The graph is read with ``ast``, not by importing: every ``import`` and ``from ... import`` at any depth (inside
functions too), relative imports resolved against the importing module's package, and
``importlib.import_module("literal")``. An edge goes to the most specific module of the repository an import names:
``from face_pipeline import options`` is an edge to ``face_pipeline.options``, ``from face_pipeline import Pipeline``
one to ``face_pipeline`` (its ``__init__``); the parent packages that Python also runs are not edges, or every package
that re-exports its submodules would be a cycle. Imports under ``if TYPE_CHECKING:`` never run, so they count for the
layers but not for cycles.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import REPO_ROOT

#: Top-level package or module -> layer (higher imports lower). The pack's root ``__init__.py`` is the module "".
LAYERS = {"gpen_arch": 0, "face_pipeline": 1, "face_jobs": 2, "nodes": 3, "cli": 3, "": 3, "install": 3}
LAYER_NAMES = {0: "network", 1: "face pipeline", 2: "batch jobs", 3: "hosts"}
PACKAGES = ("gpen_arch", "face_pipeline", "face_jobs", "nodes")  # folders of the layered code
ROOT_MODULES = ("__init__.py", "cli.py", "install.py")  # files at the root that belong to the hosts

# Exceptions allowed to the two rules: none. An entry here must still occur (one that has gone fails the test), so
# the lists only shrink.
KNOWN_CYCLES: set[frozenset[str]] = set()
KNOWN_UPWARD: set[tuple[str, str]] = set()


@dataclass(frozen=True)
class Edge:
    """``source`` imports ``target`` (both module names of the repository) at ``path``:``line``."""

    source: str
    target: str
    path: str
    line: int
    type_only: bool  # under ``if TYPE_CHECKING:``: it never runs


# ---------------------------------------------------------------------------------------------------- the checker
def module_name(root: Path, path: Path) -> str:
    """``face_pipeline/paste/compose.py`` -> ``face_pipeline.paste.compose``; a package's ``__init__.py`` -> the
    package; the root ``__init__.py`` -> ""."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layered_files(root: Path) -> list[Path]:
    """The repository's own modules under the layers (not tests, benchmarks or anything else)."""
    files = [root / name for name in ROOT_MODULES if (root / name).is_file()]
    for package in PACKAGES:
        files += sorted(p for p in (root / package).rglob("*.py") if "__pycache__" not in p.parts)
    return files


def _package_of(module: str, is_package: bool) -> list[str]:
    parts = module.split(".") if module else []
    return parts if is_package else parts[:-1]


def _resolve(module: str | None, level: int, package: list[str]) -> str | None:
    """The absolute name of ``from <level dots><module> import ...`` inside ``package`` (None: above the root)."""
    if level == 0:
        return module
    if level - 1 > len(package):
        return None
    base = package[:len(package) - (level - 1)]
    return ".".join(base + ([module] if module else []))


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    """ids of the import nodes under ``if TYPE_CHECKING:`` (or ``typing.TYPE_CHECKING``)."""
    inside: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and (
                (isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING")
                or (isinstance(node.test, ast.Attribute) and node.test.attr == "TYPE_CHECKING")):
            for statement in node.body:
                inside.update(id(child) for child in ast.walk(statement))
    return inside


def imported_names(tree: ast.AST, module: str, is_package: bool) -> Iterable[tuple[str, int, int]]:
    """(absolute dotted name, line, node id) for every import in ``tree``, at any depth; ``from m import a`` gives
    ``m.a`` (the caller keeps the longest prefix that is a module)."""
    package = _package_of(module, is_package)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno, id(node)
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(node.module, node.level, package)
            if base is None:
                continue
            for alias in node.names:
                yield (f"{base}.{alias.name}" if base else alias.name), node.lineno, id(node)
        elif (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)
              and ((isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
                   or (isinstance(node.func, ast.Name) and node.func.id == "import_module"))):
            name = node.args[0].value
            if name.startswith("."):
                level = len(name) - len(name.lstrip("."))
                resolved = _resolve(name.lstrip(".") or None, level, package)
                if resolved is None:
                    continue
                name = resolved
            yield name, node.lineno, id(node)


def build_graph(root: Path) -> tuple[set[str], list[Edge]]:
    """The modules under the layers of the repository at ``root`` and the import edges between them."""
    files = layered_files(root)
    modules = {module_name(root, path) for path in files}
    edges = []
    for path in files:
        source = module_name(root, path)
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        type_only = _type_checking_nodes(tree)
        for name, line, node_id in imported_names(tree, source, path.name == "__init__.py"):
            parts = name.split(".")
            target = next((".".join(parts[:n]) for n in range(len(parts), 0, -1) if ".".join(parts[:n]) in modules),
                          None)
            if target is not None and target != source:
                edges.append(Edge(source, target, path.relative_to(root).as_posix(), line, node_id in type_only))
    return modules, edges


def layer(module: str) -> int:
    top = module.split(".")[0]
    if top not in LAYERS:
        raise ValueError(f"module {module!r} is in no layer: add its top-level name to LAYERS "
                         f"(tests/test_architecture.py) and to docs/architecture.md")
    return LAYERS[top]


def upward_imports(edges: Iterable[Edge]) -> list[Edge]:
    """The edges from a lower layer to a higher one."""
    return [e for e in edges if layer(e.target) > layer(e.source)]


def cycles(modules: Iterable[str], edges: Iterable[Edge]) -> list[list[Edge]]:
    """One shortest cycle (as its edges) per strongly connected group of modules that import each other at run
    time; imports under ``if TYPE_CHECKING:`` are left out."""
    graph: dict[str, dict[str, Edge]] = {m: {} for m in modules}
    for e in edges:
        if not e.type_only:
            graph[e.source].setdefault(e.target, e)
    # Tarjan's strongly connected components, iteratively (no recursion limit on a deep tree).
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                group = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == node:
                        break
                if len(group) > 1:
                    groups.append(sorted(group))
    found = []
    for group in groups:  # the shortest way back to the group's first module, by breadth-first search inside it
        first, members = group[0], set(group)
        previous: dict[str, Edge] = {}
        frontier = [first]
        while frontier and first not in previous:
            following = []
            for node in frontier:
                for target, edge in sorted(graph[node].items()):
                    if target in members and target not in previous:
                        previous[target] = edge
                        following.append(target)
            frontier = following
        path, node = [], first
        while True:
            path.append(previous[node])
            node = previous[node].source
            if node == first:
                break
        found.append(path[::-1])
    return found


def describe(edge: Edge) -> str:
    return f"{edge.source} -> {edge.target}  ({edge.path}:{edge.line})"


def describe_upward(edge: Edge) -> str:
    return (f"{describe(edge)}: {LAYER_NAMES[layer(edge.source)]} imports {LAYER_NAMES[layer(edge.target)]}, "
            f"a higher layer")


TEST_IMPORT = re.compile(r"^\s*(?:from\s+(?:tests\.|\.)?(test_\w+)\s+import|import\s+(?:tests\.)?(test_\w+))", re.M)


def modules_importing_tests(tests: Path) -> list[str]:
    """``file:line: imports test_x`` for every ``tests/test_*.py`` that imports another test module, in an import
    statement at any depth or in code it hands to a subprocess as a string."""
    found = []
    for path in sorted(tests.glob("test_*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                names = [a or b for a, b in TEST_IMPORT.findall(node.value)]
            for name in names:
                last = name.split(".")[-1]
                if last.startswith("test_"):
                    found.append(f"{path.name}:{node.lineno}: imports {last}")
    return found



# --------------------------------------------------------------------------------------------------- on this tree
@pytest.fixture(scope="module")
def repository() -> tuple[set[str], list[Edge]]:
    return build_graph(REPO_ROOT)


def test_every_module_is_in_a_layer(repository):
    modules, _ = repository
    assert {"gpen_arch", "face_pipeline", "nodes", "cli", ""} <= modules
    for module in modules:
        layer(module)  # raises, naming the module, when one is in no layer


def test_no_import_cycle(repository):
    modules, edges = repository
    found = {frozenset(e.source for e in cycle): cycle for cycle in cycles(modules, edges)}
    report = "\n".join(
        ("KNOWN " if key in KNOWN_CYCLES else "") + "cycle:\n" + "\n".join(f"    {describe(e)}" for e in cycle)
        for key, cycle in sorted(found.items(), key=lambda item: sorted(item[0])))
    print(report or "no import cycle")
    new = [key for key in found if key not in KNOWN_CYCLES]
    gone = [sorted(key) for key in KNOWN_CYCLES if key not in found]
    assert not new, f"import cycles (each a shortest loop, with where each import is):\n{report}"
    assert not gone, f"these cycles are gone: remove them from KNOWN_CYCLES (tests/test_architecture.py): {gone}"


def test_imports_point_down_the_layers(repository):
    _, edges = repository
    upward = upward_imports(edges)
    print("\n".join(("KNOWN " if (e.source, e.target) in KNOWN_UPWARD else "") + describe_upward(e) for e in upward)
          or "no upward import")
    new = [describe_upward(e) for e in upward if (e.source, e.target) not in KNOWN_UPWARD]
    gone = sorted(KNOWN_UPWARD - {(e.source, e.target) for e in upward})
    assert not new, "imports from a lower layer to a higher one (network < face pipeline < batch jobs < hosts):\n" + \
        "\n".join(new)
    assert not gone, f"these upward imports are gone: remove them from KNOWN_UPWARD: {gone}"


def test_no_test_module_imports_another():
    found = modules_importing_tests(REPO_ROOT / "tests")
    assert not found, ("test modules import other test modules; move what they share to tests/conftest.py (fixtures) "
                       "or tests/helpers.py (functions, tables):\n" + "\n".join(found))


# -------------------------------------------------------------------------------------------- the checker itself
def write_tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_checker_finds_a_cycle_through_relative_and_function_level_imports(tmp_path):
    root = write_tree(tmp_path, {
        "gpen_arch/__init__.py": "from .model import GPEN\n",
        "gpen_arch/model.py": "from . import memory\n",
        "gpen_arch/memory.py": "def estimate():\n    from .model import GPEN\n    return GPEN\n",
        "gpen_arch/ops/__init__.py": "",
        "gpen_arch/ops/conv.py": "from ..model import GPEN\n",  # the package re-exports model: not a cycle
        "face_pipeline/__init__.py": "import gpen_arch.ops.conv\n",
    })
    modules, edges = build_graph(root)
    assert modules == {"gpen_arch", "gpen_arch.model", "gpen_arch.memory", "gpen_arch.ops", "gpen_arch.ops.conv",
                       "face_pipeline"}
    assert {(e.source, e.target, e.line) for e in edges} == {
        ("gpen_arch", "gpen_arch.model", 1), ("gpen_arch.model", "gpen_arch.memory", 1),
        ("gpen_arch.memory", "gpen_arch.model", 2), ("gpen_arch.ops.conv", "gpen_arch.model", 1),
        ("face_pipeline", "gpen_arch.ops.conv", 1)}
    found = cycles(modules, edges)
    assert [[(e.source, e.target) for e in cycle] for cycle in found] == [
        [("gpen_arch.memory", "gpen_arch.model"), ("gpen_arch.model", "gpen_arch.memory")]]
    assert describe(found[0][0]) == "gpen_arch.memory -> gpen_arch.model  (gpen_arch/memory.py:2)"
    assert upward_imports(edges) == []


def test_checker_finds_an_upward_import_by_importlib(tmp_path):
    root = write_tree(tmp_path, {
        "__init__.py": "from .nodes import MAPPINGS\n",
        "cli.py": "from face_jobs.engines import local\n",
        "nodes/__init__.py": "from ..face_pipeline import Pipeline\nMAPPINGS = {}\n",
        "face_pipeline/__init__.py": "class Pipeline: ...\n",
        "face_pipeline/files.py": ("import importlib\n"
                                   "from typing import TYPE_CHECKING\n"
                                   "if TYPE_CHECKING:\n"
                                   "    from face_jobs.engines.local import run\n"
                                   "def job():\n"
                                   "    return importlib.import_module('cli')\n"),
        "face_jobs/__init__.py": "",
        "face_jobs/engines/__init__.py": "",
        "face_jobs/engines/local.py": "from ... import face_pipeline\nfrom face_pipeline.files import job\n",
    })
    modules, edges = build_graph(root)
    assert "" in modules and "install" not in modules
    upward = sorted(describe_upward(e) for e in upward_imports(edges))
    assert upward == [
        "face_pipeline.files -> cli  (face_pipeline/files.py:6): face pipeline imports hosts, a higher layer",
        "face_pipeline.files -> face_jobs.engines.local  (face_pipeline/files.py:4): face pipeline imports batch "
        "jobs, a higher layer"]
    # the TYPE_CHECKING import does not close a run-time cycle; the importlib one does
    assert [sorted(e.source for e in cycle) for cycle in cycles(modules, edges)] == [
        ["cli", "face_jobs.engines.local", "face_pipeline.files"]]


def test_checker_names_a_module_outside_the_layers():
    with pytest.raises(ValueError, match="module 'utils' is in no layer"):
        layer("utils")


def test_checker_finds_a_test_module_importing_another(tmp_path):
    t = "test_"  # spelt apart, so that this file's own strings hold no test-module import
    write_tree(tmp_path, {
        f"{t}a.py": "import pytest\nfrom helpers import x\n",
        f"{t}b.py": f"from {t}a import thing\n\ndef test_x():\n    import tests.{t}c\n",
        f"{t}c.py": f"CODE = '''\nfrom {t}a import load\nprint(1)\n'''\n",
        "helpers.py": f"from {t}a import y\n",  # support modules are not checked
    })
    assert modules_importing_tests(tmp_path) == [
        "test_b.py:1: imports test_a", "test_b.py:4: imports test_c", "test_c.py:1: imports test_a"]
