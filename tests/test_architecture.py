"""The parts of askq import one way, and nothing imports in a circle.

Each part is a subpackage (or module) of the one installed name `askq`: `askq.errors` (the one
exception root, below everything), `askq.config`, `askq.core`, `askq.producers`, `askq.workers`,
`askq.sim`, `askq.stack` (the local process stack), `askq.bench`; the rest (`askq.cli`, the demo,
`askq/__init__.py`) is the application layer `app`, on top. Producers and workers depend on
core and config, never on each other.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

PARTS = ("errors", "config", "core", "producers", "workers", "sim", "stack", "bench")
# part -> parts it must never import
FORBIDDEN = {
    "errors": {"config", "core", "producers", "workers", "sim", "stack", "bench", "app"},
    "config": {"core", "producers", "workers", "app", "sim", "stack", "bench"},
    "core": {"producers", "workers", "app", "sim", "stack", "bench"},
    "producers": {"workers", "app", "stack", "bench"},
    "workers": {"producers", "app", "stack", "bench"},
    "sim": {"errors", "config", "core", "producers", "workers", "app", "stack", "bench"},
    "stack": {"producers", "workers", "app", "sim", "bench"},
    "bench": {"app"},
}


KEY_LITERAL = re.compile(
    r"askq:(job|leases|retries|pending|dlq|workers?|reaper|breaker|rate|cache|stats|health|metrics|callbacks?)\b"
)


def part_of(module: str) -> str:
    """`askq.core.keys` -> `core`; `askq.cli.jobs` or `askq` -> `app`; anything else -> its top-level name."""
    names = module.split(".")
    if names[0] != "askq":
        return names[0]
    return names[1] if len(names) > 1 and names[1] in PARTS else "app"


def imported_parts(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {part_of(alias.name) for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(part_of(node.module))
            if node.module == "askq":  # `from askq import workers`
                found |= {alias.name for alias in node.names if alias.name in PARTS}
    return found


def top_level_imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


def test_one_installed_name() -> None:
    """All code lives under `askq/`: nothing imports a bare `core`, `workers`, ... (they are not installed)."""
    offenders = []
    for path in sorted([*(ROOT / "askq").rglob("*.py"), *(ROOT / "tests").rglob("*.py")]):
        bare = top_level_imports(path) & set(PARTS)
        if bare:
            offenders.append(f"{path.relative_to(ROOT)} imports {sorted(bare)}")
    assert offenders == []


def part_files(part: str) -> list[Path]:
    """The source files of a part: a subpackage's tree, a module, or (app) every file of no part."""
    if part != "app":
        folder = ROOT / "askq" / part
        return sorted(folder.rglob("*.py")) if folder.is_dir() else [folder.with_suffix(".py")]
    return sorted(p for p in (ROOT / "askq").rglob("*.py") if part_of(module_name(p)) == "app")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_imports_flow_one_way(package: str) -> None:
    offenders = []
    for path in part_files(package):
        bad = imported_parts(path) & FORBIDDEN[package]
        if bad:
            offenders.append(f"{path.relative_to(ROOT)} imports {sorted(bad)}")
    assert offenders == []


def test_every_file_belongs_to_a_known_part() -> None:
    files = {p for part in (*PARTS, "app") for p in part_files(part)}
    assert files == set((ROOT / "askq").rglob("*.py"))
    assert part_files("stack") == [ROOT / "askq" / "stack.py"]
    assert {p.name for p in part_files("errors")} == {"errors.py"}


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One cycle of the graph (its nodes, the first one again at the end), or [] when it has none."""
    done: set[str] = set()
    path: list[str] = []

    def visit(node: str) -> list[str]:
        if node in path:
            return [*path[path.index(node):], node]
        if node in done:
            return []
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            found = visit(nxt)
            if found:
                return found
        path.pop()
        done.add(node)
        return []

    for start in sorted(graph):
        found = visit(start)
        if found:
            return found
    return []


def part_graph() -> dict[str, set[str]]:
    """part -> the other parts its files import (imports inside functions count too)."""
    graph: dict[str, set[str]] = {}
    for part in (*PARTS, "app"):
        for path in part_files(part):
            graph.setdefault(part, set()).update(imported_parts(path) & {*PARTS, "app"})
        graph[part].discard(part)
    return graph


def module_graph() -> dict[str, set[str]]:
    """askq module -> the askq modules it imports (`from pkg import submodule` names the submodule)."""
    modules = {module_name(p): p for p in (ROOT / "askq").rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                deps |= {alias.name for alias in node.names if alias.name in modules}
            elif isinstance(node, ast.ImportFrom) and node.module in modules and node.level == 0:
                subs = {f"{node.module}.{alias.name}" for alias in node.names}
                deps |= subs & set(modules)
                if subs - set(modules):  # a name defined in the module itself
                    deps.add(node.module)
        graph[name] = deps - {name}
    return graph


def test_the_find_cycle_check_can_fail() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) == []


def test_no_import_cycle_between_parts() -> None:
    graph = part_graph()
    assert graph["app"] >= {"bench", "stack", "producers"}  # the graph is really read
    assert find_cycle(graph) == []


def test_no_import_cycle_between_modules() -> None:
    graph = module_graph()
    assert "askq.core.keys" in graph["askq.core.store"]
    assert find_cycle(graph) == []


def test_the_error_root_imports_nothing_of_askq() -> None:
    assert part_graph()["errors"] == set()


def test_redis_key_names_live_in_keys_module() -> None:
    """Key prefixes are spelled out only in askq/core/keys.py."""
    offenders = []
    for package in ("core", "workers", "producers", "bench"):
        for path in (ROOT / "askq" / package).rglob("*.py"):
            if path.name == "keys.py":
                continue
            if KEY_LITERAL.search(path.read_text()):
                offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []
