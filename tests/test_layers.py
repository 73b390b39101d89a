"""The shape of ``node/``: no import cycles between its parts, no stage importing a later one, the
ground floor importing nothing above it, no module over 300 lines, and no ``# type: ignore`` without
its error code and reason.

Imports are read from the code with :mod:`ast`: every ``import`` and ``from … import``, lazy ones
inside functions included, except those under ``if TYPE_CHECKING:`` (they never run). A *unit* is a
subpackage ``node/X/`` or a top-level module ``node/X.py``; imports inside one unit are its own affair.
No module imports the test tooling (``node.testing``) but those of :data:`TEST_TOOLING`, each with why; a
test fails when an entry no longer applies, so the list only shrinks.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "node"

#: The stages in the order a study goes through them; a stage imports only earlier ones (and the ground).
STAGES = ("routing", "context", "imaging", "engine", "findings", "reading", "results", "egress", "verdicts")
#: The ground floor: anyone may import it; it imports only itself.
GROUND = ("config", "errors", "durable", "ops", "store", "model", "dicom_files", "implementation", "tls",
          "http_client")

MAX_LINES = 300
#: The modules outside ``node/testing/`` that import ``node.testing``: test and demo tooling by purpose.
TEST_TOOLING = {
    "node/demo.py": "the demo command runs the loopback PACS and EHR on synthetic studies",
    "node/cli/engine.py": "'engine prepare' calibrates FP8 weights on synthetic studies (calibration_study)",
}


def _unit(path: Path) -> str | None:
    """The unit a file of the package belongs to (None for ``node/__init__.py``)."""
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    if parts == ("__init__",):
        return None
    return parts[0]


def _is_type_checking(test: ast.expr) -> bool:
    """Whether an ``if`` tests ``TYPE_CHECKING`` (bare or as ``typing.TYPE_CHECKING``)."""
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _import_statements(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement in ``tree``, at any depth, except in the body of ``if TYPE_CHECKING:``."""
    for child in ast.iter_child_nodes(tree):
        if isinstance(child, ast.If) and _is_type_checking(child.test):
            for statement in child.orelse:
                yield from _import_statements(ast.Module(body=[statement], type_ignores=[]))
        elif isinstance(child, ast.Import | ast.ImportFrom):
            yield child
        else:
            yield from _import_statements(child)


def _imported_modules(path: Path, statement: ast.Import | ast.ImportFrom) -> Iterator[str]:
    """The dotted names a statement imports (``from a import b`` gives ``a`` and ``a.b``, since ``b``
    may be a module); relative imports resolved against ``path``'s package."""
    if isinstance(statement, ast.Import):
        yield from (alias.name for alias in statement.names)
        return
    module = statement.module or ""
    if statement.level:
        package = ("node", *path.relative_to(PACKAGE).parent.parts)
        base = package[: len(package) - statement.level + 1]
        module = ".".join(base + ((module,) if module else ()))
    yield module
    yield from (f"{module}.{alias.name}" for alias in statement.names)


def import_graph() -> dict[tuple[str, str], set[str]]:
    """(importer unit, imported unit) → the files (relative to the repository) making that import."""
    units = {unit for path in PACKAGE.rglob("*.py") if (unit := _unit(path))}
    edges: dict[tuple[str, str], set[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        importer = _unit(path)
        for statement in _import_statements(ast.parse(path.read_text(), filename=str(path))):
            for name in _imported_modules(path, statement):
                parts = name.split(".")
                if len(parts) < 2 or parts[0] != "node" or parts[1] not in units or parts[1] == importer:
                    continue
                if importer is not None:
                    edges.setdefault((importer, parts[1]), set()).add(str(path.relative_to(PACKAGE.parent)))
    return edges


def cycles(edges: dict[tuple[str, str], set[str]]) -> set[tuple[str, ...]]:
    """Every elementary cycle of the graph, each starting at its first unit in sorted order."""
    successors: dict[str, set[str]] = {}
    for importer, imported in edges:
        successors.setdefault(importer, set()).add(imported)
    found: set[tuple[str, ...]] = set()
    for start in sorted(successors):
        paths = [(start,)]
        while paths:
            path = paths.pop()
            for following in successors.get(path[-1], ()):
                if following == start:
                    found.add(path)
                elif following > start and following not in path:
                    paths.append((*path, following))
    return found


def _describe(cycle: tuple[str, ...], edges: dict[tuple[str, str], set[str]]) -> str:
    """A cycle with the files making each of its imports."""
    steps = zip(cycle, cycle[1:] + cycle[:1], strict=True)
    return " -> ".join(cycle + cycle[:1]) + "\n" + "\n".join(
        f"    {importer} -> {imported}: {', '.join(sorted(edges[importer, imported]))}"
        for importer, imported in steps)


def test_the_graph_sees_lazy_imports_and_skips_type_checking_ones(tmp_path: Path) -> None:
    source = ("from typing import TYPE_CHECKING\nimport node.a\nif TYPE_CHECKING:\n    from node.b import B\n"
              "else:\n    import node.c\ndef f():\n    from node.d import e\n    from . import g\n")
    tree = ast.parse(source)
    names = [name for statement in _import_statements(tree)
             for name in _imported_modules(PACKAGE / "engine" / "x.py", statement)]
    assert names == ["typing", "typing.TYPE_CHECKING", "node.a", "node.c", "node.d", "node.d.e",
                     "node.engine", "node.engine.g"]


def test_the_cycle_finder_finds_every_cycle() -> None:
    edges = {("a", "b"): set(), ("b", "a"): set(), ("b", "c"): set(), ("c", "a"): set(), ("c", "d"): set()}
    assert cycles(edges) == {("a", "b"), ("a", "b", "c")}


def test_no_import_cycle() -> None:
    edges = import_graph()
    found = cycles(edges)
    assert not found, "import cycles between node's parts:\n" + "\n".join(_describe(c, edges) for c in sorted(found))


def _later_stage_imports(edges: dict[tuple[str, str], set[str]]) -> set[tuple[str, str]]:
    """(importer, imported) where both are stages and the imported one comes later."""
    return {(importer, imported) for importer, imported in edges
            if importer in STAGES and imported in STAGES and STAGES.index(imported) > STAGES.index(importer)}


def test_no_stage_imports_a_later_one() -> None:
    edges = import_graph()
    later = _later_stage_imports(edges)
    assert not later, "stages importing later ones:\n" + "\n".join(
        f"    {importer} -> {imported}: {', '.join(sorted(edges[importer, imported]))}"
        for importer, imported in sorted(later))


def test_the_ground_imports_only_the_ground() -> None:
    edges = import_graph()
    upward = sorted((importer, imported) for importer, imported in edges
                    if importer in GROUND and imported not in GROUND)
    assert not upward, "the ground floor importing above it:\n" + "\n".join(
        f"    {importer} -> {imported}: {', '.join(sorted(edges[importer, imported]))}"
        for importer, imported in upward)


def _lines(path: Path) -> int:
    return len(path.read_text().splitlines())


def test_no_module_over_300_lines() -> None:
    over = {str(path.relative_to(PACKAGE.parent)): _lines(path) for path in PACKAGE.rglob("*.py")
            if _lines(path) > MAX_LINES}
    assert not over, f"modules over {MAX_LINES} lines (split them): {over}"


def _testing_importers() -> dict[str, set[str]]:
    """Module outside ``node/testing/`` (relative to the repository) → what it imports of ``node.testing``;
    every import statement counts, lazy and ``TYPE_CHECKING`` ones too."""
    found: dict[str, set[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.relative_to(PACKAGE).parts[0] == "testing":
            continue
        for statement in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(statement, ast.Import | ast.ImportFrom):
                for name in _imported_modules(path, statement):
                    if name == "node.testing" or name.startswith("node.testing."):
                        found.setdefault(str(path.relative_to(PACKAGE.parent)), set()).add(name)
    return found


def test_only_test_tooling_imports_node_testing() -> None:
    stray = {module: sorted(names) for module, names in _testing_importers().items() if module not in TEST_TOOLING}
    assert not stray, f"product modules importing the test tooling (node.testing): {stray}"


def test_every_test_tooling_entry_still_imports_it() -> None:
    gone = sorted(set(TEST_TOOLING) - set(_testing_importers()))
    assert not gone, f"no longer import node.testing: remove them from TEST_TOOLING: {gone}"


def test_every_type_ignore_says_which_error_and_why() -> None:
    """mypy runs on ``node/`` (pyproject.toml); where it is told to look away, the comment names the error
    code and gives the reason: ``# type: ignore[code]  # why``."""
    pattern = re.compile(r"# type: ignore\[[a-z-]+(, [a-z-]+)*\]  # \S")
    bare = [f"{path.relative_to(PACKAGE.parent)}:{number}" for path in sorted(PACKAGE.rglob("*.py"))
            for number, line in enumerate(path.read_text().splitlines(), start=1)
            if "type: ignore" in line and not pattern.search(line)]
    assert not bare, f"type: ignore without an error code and a reason: {bare}"
