"""Imports flow one way: producers and workers depend on core and config, never on each other."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# package -> top-level packages it must never import
FORBIDDEN = {
    # config may use core.errors (the one exception root) and nothing else of core; checked below.
    "config": {"producers", "workers", "askq", "sim", "bench"},
    "core": {"producers", "workers", "askq", "sim", "bench"},
    "producers": {"workers", "askq", "bench"},
    "workers": {"producers", "askq", "bench"},
    "sim": {"config", "core", "producers", "workers", "askq", "bench"},
}


KEY_LITERAL = re.compile(
    r"askq:(job|leases|retries|pending|dlq|workers?|reaper|breaker|rate|cache|stats|health|metrics|callbacks?)\b"
)


def imported_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_imports_flow_one_way(package: str) -> None:
    offenders = []
    for path in sorted((ROOT / package).rglob("*.py")):
        bad = imported_packages(path) & FORBIDDEN[package]
        if bad:
            offenders.append(f"{path.relative_to(ROOT)} imports {sorted(bad)}")
    assert offenders == []


def test_config_uses_only_the_error_root_of_core() -> None:
    for path in sorted((ROOT / "config").rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("core"):
                assert node.module == "core.errors", f"{path.name} imports {node.module}"


def test_redis_key_names_live_in_keys_module() -> None:
    """Key prefixes are spelled out only in core/keys.py."""
    offenders = []
    for package in ("core", "workers", "producers", "askq", "bench"):
        for path in (ROOT / package).rglob("*.py"):
            if path.name == "keys.py":
                continue
            if KEY_LITERAL.search(path.read_text()):
                offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []
