"""The layout's import rules (docs/design.md, Layout), checked by walking every import of
``streams/`` (function-local ones too) with :mod:`ast`."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2] / "streams"

GROUND = {"streams.settings", "streams.topics", "streams.topology", "streams.errors",
          "streams.metrics", "streams.events", "streams.dedupe", "streams.xp.fold",
          "streams.actions.fold", "streams.grant.decide", "streams.policies"}
"""Modules that decide and describe; they do no I/O."""
IO_LIBRARIES = ("aiokafka", "psycopg", "faust", "mode", "socket", "subprocess", "asyncio",
                "urllib.request", "http", "requests", "tenacity")
IO_ALLOWED = {"aiokafka.partitioner"}
"""Pure helpers inside I/O libraries (Kafka's default partitioner: murmur2)."""
STREAMS = ("streams.xp", "streams.actions", "streams.grant")
HARNESS = ("streams.lab", "streams.dev")
HARNESS_USERS = ("streams.lab", "streams.dev", "streams.cli")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node of ``tree`` except those under ``if TYPE_CHECKING:`` (annotations only)."""
    nodes: list[ast.AST] = []
    todo = [tree]
    while todo:
        node = todo.pop()
        nodes.append(node)
        if isinstance(node, ast.If) and ast.unparse(node.test).endswith("TYPE_CHECKING"):
            todo.extend(node.orelse)
            continue
        todo.extend(ast.iter_child_nodes(node))
    return nodes


def imports() -> dict[str, set[str]]:
    """Module -> every module it imports at run time (``from a import b`` counts as ``a`` and
    ``a.b``)."""
    found: dict[str, set[str]] = defaultdict(set)
    for path in ROOT.rglob("*.py"):
        name = module_name(path)
        for node in runtime_nodes(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found[name].update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found[name].add(node.module)
                found[name].update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def within(module: str, packages: tuple[str, ...] | set[str]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


GRAPH = imports()


def test_the_walk_sees_the_package() -> None:
    assert {"streams.worker.app", "streams.xp.fold", "streams.sink",
            "streams.lab.chaos"} <= set(GRAPH)


def test_only_the_worker_touches_faust() -> None:
    offenders = {m: sorted(i for i in imported if within(i, ("faust", "mode"))
                           or i.endswith("faust_internals"))
                 for m, imported in GRAPH.items() if not within(m, ("streams.worker",))}
    assert not {m: i for m, i in offenders.items() if i}


def test_the_stream_packages_do_not_import_each_other() -> None:
    for m, imported in GRAPH.items():
        for own in STREAMS:
            if within(m, (own,)):
                others = sorted(i for i in imported
                                if within(i, STREAMS) and not within(i, (own,)))
                assert not others, (m, others)


@pytest.mark.parametrize("module", sorted(GROUND))
def test_ground_modules_do_no_io(module: str) -> None:
    imported = GRAPH[module]
    io = sorted(i for i in imported if within(i, IO_LIBRARIES) and i not in IO_ALLOWED
                and not any(i.startswith(a + ".") for a in IO_ALLOWED))
    assert not io, io
    product = sorted(i for i in imported if within(i, ("streams",)) and i not in GROUND
                     and i.rsplit(".", 1)[0] not in GROUND and i != "streams")
    assert not product, f"{module} imports non-ground modules {product}"


def test_the_product_never_imports_the_harness() -> None:
    offenders = {m: sorted(i for i in imported if within(i, HARNESS))
                 for m, imported in GRAPH.items() if not within(m, HARNESS_USERS)}
    assert not {m: i for m, i in offenders.items() if i}


def test_no_import_cycle_between_packages() -> None:
    def package(m: str) -> str:
        parts = m.split(".")
        return ".".join(parts[:2]) if len(parts) > 1 else m

    edges: dict[str, set[str]] = defaultdict(set)
    for m, imported in GRAPH.items():
        for i in imported:
            if within(i, ("streams",)) and i in GRAPH and package(i) != package(m):
                edges[package(m)].add(package(i))

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        for nxt in edges[start]:
            if nxt == goal or (nxt not in seen and reaches(nxt, goal, seen | {nxt})):
                return True
        return False

    cycles = sorted(p for p in list(edges) if reaches(p, p, {p}))
    assert not cycles, {p: sorted(edges[p]) for p in cycles}


def test_the_wheel_lists_every_package() -> None:
    """pyproject.toml names the packages (schemas/ and sql/ are mapped in as package data):
    a package left out would be missing from the image."""
    import tomllib

    config = tomllib.loads((ROOT.parent / "pyproject.toml").read_text())["tool"]["setuptools"]
    found = {module_name(p) for p in ROOT.rglob("__init__.py")}
    assert found | {"streams.schemas", "streams.sql"} == set(config["packages"])
    assert config["package-dir"] == {"streams.schemas": "schemas", "streams.sql": "sql"}
