"""The layout's import rules (docs/design.md, Layout), checked by walking every import of
``streams/`` (function-local ones too) with :mod:`ast`.

Two graphs: the run-time imports (what a process loads), and every dependency, which adds the
imports under ``if TYPE_CHECKING:`` and the module names written as strings (``"streams.xp.
stream:XpStream"``, the shape an ``importlib`` lookup takes). Cycles and floors are checked on
the second: a dependency hidden from the interpreter is still one for a reader and for mypy.

``python tests/contract/test_layout.py [ROOT]`` prints the floors and the upward edges of the
tree at ROOT (default: this one).
"""

from __future__ import annotations

import ast
import re
import sys
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
FLOORS = (
    ("ground", ("streams", "streams.settings", "streams.topics", "streams.topology",
                "streams.errors", "streams.metrics", "streams.events", "streams.dedupe",
                "streams.policies")),
    ("clients", ("streams.kafka", "streams.db", "streams.lag", "streams.health", "streams.sink",
                 "streams.policy_feed", "streams.logs")),
    ("framework", ("streams.worker",)),
    ("streams", ("streams.xp", "streams.actions", "streams.grant", "streams.publish")),
    ("audits", ("streams.audit",)),
    ("operations", ("streams.status", "streams.monitor", "streams.offsets")),
    ("harness", ("streams.dev", "streams.lab")),
    ("commands", ("streams.cli", "streams.__main__")),
)
"""The floors of docs/design.md, "Layout", bottom up, by package: a module imports only from
its own floor's packages or lower ones (the ground modules inside the stream packages, such as
``streams.xp.fold``, import only ground modules: :func:`test_ground_modules_do_no_io`)."""
DOTTED = re.compile(r"streams(\.[A-Za-z_]\w*)+(:[A-Za-z_]\w*)?")
"""A module of ours named in a string constant, optionally with an attribute."""


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def runtime_nodes(tree: ast.AST, type_checking: bool = False) -> list[ast.AST]:
    """Every node of ``tree``; those under ``if TYPE_CHECKING:`` (annotations only) only when
    ``type_checking``."""
    nodes: list[ast.AST] = []
    todo = [tree]
    while todo:
        node = todo.pop()
        nodes.append(node)
        if (not type_checking and isinstance(node, ast.If)
                and ast.unparse(node.test).endswith("TYPE_CHECKING")):
            todo.extend(node.orelse)
            continue
        todo.extend(ast.iter_child_nodes(node))
    return nodes


def imports(root: Path = ROOT, every_dependency: bool = False) -> dict[str, set[str]]:
    """Module -> every module it imports at run time (``from a import b`` counts as ``a`` and
    ``a.b``); with ``every_dependency`` also under ``TYPE_CHECKING`` and named in strings."""
    found: dict[str, set[str]] = defaultdict(set)
    for path in root.rglob("*.py"):
        name = module_name(path, root)
        for node in runtime_nodes(ast.parse(path.read_text(), str(path)), every_dependency):
            if isinstance(node, ast.Import):
                found[name].update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found[name].add(node.module)
                found[name].update(f"{node.module}.{alias.name}" for alias in node.names)
            elif (every_dependency and isinstance(node, ast.Constant)
                  and isinstance(node.value, str) and DOTTED.fullmatch(node.value)):
                found[name].add(node.value.partition(":")[0])
    return found


def package(m: str) -> str:
    """``streams.x`` of a module ``streams.x[.y...]``."""
    parts = m.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 else m


def package_edges(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """Package -> the other packages of ours its modules import."""
    edges: dict[str, set[str]] = defaultdict(set)
    for m, imported in graph.items():
        for i in imported:
            if within(i, ("streams",)) and i in graph and package(i) != package(m):
                edges[package(m)].add(package(i))
    return edges


def cycles(edges: dict[str, set[str]]) -> list[str]:
    """The packages that reach themselves."""
    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        for nxt in edges.get(start, ()):
            if nxt == goal or (nxt not in seen and reaches(nxt, goal, seen | {nxt})):
                return True
        return False

    return sorted(p for p in list(edges) if reaches(p, p, {p}))


def floor_of(pkg: str) -> int:
    for level, (_, members) in enumerate(FLOORS):
        if pkg in members:
            return level
    raise KeyError(f"{pkg} is on no floor of FLOORS")


def upward_edges(edges: dict[str, set[str]]) -> list[tuple[str, str]]:
    """(importer, imported) pairs whose imported package sits on a higher floor."""
    return sorted((a, b) for a, targets in edges.items() for b in targets
                  if floor_of(b) > floor_of(a))


def within(module: str, packages: tuple[str, ...] | set[str]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


GRAPH = imports()
DEPENDENCIES = imports(every_dependency=True)


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
    edges = package_edges(DEPENDENCIES)
    found = cycles(edges)
    assert not found, {p: sorted(edges[p]) for p in found}


def test_every_package_imports_only_its_floor_and_below() -> None:
    assert {package(m) for m in DEPENDENCIES} <= {p for _, ps in FLOORS for p in ps}
    assert upward_edges(package_edges(DEPENDENCIES)) == []


def test_a_cycle_hidden_in_a_string_or_under_type_checking_is_found(tmp_path: Path) -> None:
    """The checks see through both hiding places (the topology once reached the stream
    classes through ``importlib`` strings: worker -> topology -> xp -> worker)."""
    root = tmp_path / "streams"
    (root / "worker").mkdir(parents=True)
    (root / "xp").mkdir()
    for pkg in (root, root / "worker", root / "xp"):
        (pkg / "__init__.py").write_text("")
    (root / "topology.py").write_text('STREAM = "streams.xp.stream:XpStream"\n')
    (root / "worker" / "app.py").write_text("from streams import topology\n")
    (root / "xp" / "stream.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
        "    from streams.worker.app import App\n")
    assert cycles(package_edges(imports(root))) == []  # what the interpreter sees
    edges = package_edges(imports(root, every_dependency=True))
    assert cycles(edges) == ["streams.topology", "streams.worker", "streams.xp"]
    assert upward_edges(edges) == [("streams.topology", "streams.xp")]


def test_the_wheel_lists_every_package() -> None:
    """pyproject.toml names the packages (schemas/ and sql/ are mapped in as package data):
    a package left out would be missing from the image."""
    import tomllib

    config = tomllib.loads((ROOT.parent / "pyproject.toml").read_text())["tool"]["setuptools"]
    found = {module_name(p) for p in ROOT.rglob("__init__.py")}
    assert found | {"streams.schemas", "streams.sql"} == set(config["packages"])
    assert config["package-dir"] == {"streams.schemas": "schemas", "streams.sql": "sql"}


def test_the_cli_wires_every_stage_of_the_topology() -> None:
    """Each sink command has its writer, and the worker's streams read the topology's source
    topics in order (the worker checks this too when it starts)."""
    from streams.cli.pipeline import fold_streams, writers
    from streams.metrics import Metrics
    from streams.settings import Settings
    from streams.topology import sink_commands, source_topics
    from streams.worker.app import create_app

    settings = Settings().with_(table_store="memory://")
    assert list(writers()) == sink_commands(settings)
    app = create_app(settings)
    assert [make(app, settings, Metrics()).topic for make in fold_streams()] == source_topics(
        settings)


def main(root: Path) -> None:
    """Print the floors and the upward edges of the tree at ``root`` (its ``streams/``)."""
    edges = package_edges(imports(root / "streams", every_dependency=True))
    for level, (name, members) in enumerate(FLOORS):
        present = [m for m in members if m in edges or any(m in t for t in edges.values())]
        print(f"floor {level} {name}: {', '.join(present)}")
    up = upward_edges(edges)
    print(f"upward edges: {len(up)}")
    for a, b in up:
        print(f"  {a} (floor {floor_of(a)}) -> {b} (floor {floor_of(b)})")
    print(f"package cycles: {cycles(edges) or 'none'}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT.parent)


def test_no_module_spells_a_variable_name_outside_the_settings_declaration() -> None:
    """A variable is read through its declaration in ``streams/settings.py`` (``setting()``,
    ``Variable``), never by a name written elsewhere (docstrings and messages aside)."""
    from streams.settings import known_names

    names = set(known_names())
    offenders = []
    for path in ROOT.rglob("*.py"):
        if path.name == "settings.py" and path.parent == ROOT:
            continue
        tree = ast.parse(path.read_text(), str(path))
        docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                      if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef,
                                        ast.AsyncFunctionDef))
                      and n.body and isinstance(n.body[0], ast.Expr)}
        offenders += [f"{module_name(path)}:{n.lineno} {n.value}" for n in ast.walk(tree)
                      if isinstance(n, ast.Constant) and n.value in names
                      and id(n) not in docstrings]
    assert offenders == []
