"""Imports flow one way: producers and workers depend on core and config, never on each other.

Each part is a subpackage of the one installed name `askq` (`askq.core`, `askq.workers`, ...); the
modules directly in `askq/` (the CLI, the demo, the local stack) are the application layer `app`.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

PARTS = ("config", "broker", "core", "producers", "workers", "sim", "bench")
# part -> parts it must never import
FORBIDDEN = {
    # config may use core.errors (the one exception root) and nothing else of core; checked below.
    "config": {"broker", "producers", "workers", "app", "sim", "bench"},
    # broker (kombu's and Celery's wire format and internals) sits under core: the job store
    # enqueues. Like config, it may use core.errors and nothing else of core; checked below.
    "broker": {"producers", "workers", "app", "sim", "bench"},
    "core": {"producers", "workers", "app", "sim", "bench"},
    "producers": {"workers", "app", "bench"},
    "workers": {"producers", "app", "bench"},
    "sim": {"config", "core", "producers", "workers", "app", "bench"},
}


KEY_LITERAL = re.compile(
    r"askq:(job|leases|retries|pending|dlq|workers?|reaper|breaker|rate|cache|stats|health|metrics|callbacks?)\b"
)


def part_of(module: str) -> str:
    """`askq.core.keys` -> `core`; `askq.cli` or `askq` -> `app`; anything else -> its top-level name."""
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


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_imports_flow_one_way(package: str) -> None:
    offenders = []
    for path in sorted((ROOT / "askq" / package).rglob("*.py")):
        bad = imported_parts(path) & FORBIDDEN[package]
        if bad:
            offenders.append(f"{path.relative_to(ROOT)} imports {sorted(bad)}")
    assert offenders == []


def test_config_uses_only_the_error_root_of_core() -> None:
    for path in sorted((ROOT / "askq" / "config").rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("askq.core"):
                assert node.module == "askq.core.errors", f"{path.name} imports {node.module}"


def test_broker_uses_only_the_error_root_of_core() -> None:
    for path in sorted((ROOT / "askq" / "broker").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("askq.core"):
                assert node.module == "askq.core.errors", f"{path.name} imports {node.module}"
            if isinstance(node, ast.ImportFrom) and node.module == "askq.core":
                raise AssertionError(f"{path.name} imports from askq.core")


def test_kombu_is_imported_only_by_the_broker_package() -> None:
    """kombu's internals change between minor releases: one package knows them (askq/broker/)."""
    offenders = []
    for path in sorted([*(ROOT / "askq").rglob("*.py")]):
        if "kombu" in top_level_imports(path) and path.parent != ROOT / "askq" / "broker":
            offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []


def test_kombu_unacked_keys_are_named_only_by_the_broker_package() -> None:
    """kombu's own Redis keys (its unacked bookkeeping) are spelled out in askq/broker/keys.py only."""
    literal = re.compile(r"""["'](unacked|unacked_index|unacked_mutex|_kombu\.binding\.)["']""")
    offenders = [str(path.relative_to(ROOT)) for path in sorted((ROOT / "askq").rglob("*.py"))
                 if path != ROOT / "askq" / "broker" / "keys.py" and literal.search(path.read_text())]
    assert offenders == []


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
