"""The README documents every setting and the commands it shows exist; the architecture page
names only files, modules and names that exist."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel

from askq.cli import build_parser
from askq.config.settings import ProviderSettings, Settings
from tests.test_architecture import PARTS

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def _names(model: type[BaseModel], prefix: str = "") -> list[str]:
    names = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            names += _names(annotation, f"{prefix}{name}.")
        else:
            names.append(f"{prefix}{name}")
    return names


def test_every_setting_is_in_the_readme() -> None:
    names = _names(Settings) + [f"providers[].{n}" for n in _names(ProviderSettings)]
    missing = [n for n in names if f"`{n}`" not in README]
    assert missing == []


def test_askq_commands_in_the_readme_exist() -> None:
    parser = build_parser()
    commands = set(parser._subparsers._group_actions[0].choices)  # type: ignore[union-attr]
    shown = set(re.findall(r"(?:`|bin/)askq ([a-z]+)", README))
    assert shown, "the README shows no askq command"
    assert shown - commands == set()


ARCHITECTURE = (ROOT / "docs" / "architecture.md").read_text()


def test_every_path_the_architecture_page_names_exists() -> None:
    paths = set(re.findall(r"`((?:askq|tests|docs)/[^`\s]*)`", ARCHITECTURE))
    assert "askq/core/deadletter.py" in paths  # the pattern really reads the page
    # askq/core/lua/<name>.lua stands for every file of that folder: the folder must exist.
    missing = [p for p in sorted(paths) if not (ROOT / p.split("<")[0]).exists()]
    assert missing == []


def test_every_module_lua_script_and_part_the_architecture_page_names_exists() -> None:
    modules = set(re.findall(r"`(askq(?:\.[a-z_]+)+)`", ARCHITECTURE))
    assert "askq.core" in modules
    missing = [m for m in sorted(modules) if not any(
        (ROOT / m.replace(".", "/")).with_suffix(suffix).exists() for suffix in (".py", ".md")
    ) and not (ROOT / m.replace(".", "/") / "__init__.py").exists()]
    assert missing == []
    scripts = set(re.findall(r"`([a-z_]+)\.lua`", ARCHITECTURE))
    assert "finish" in scripts
    assert [s for s in sorted(scripts) if not (ROOT / "askq" / "core" / "lua" / f"{s}.lua").exists()] == []
    assert [p for p in PARTS if f"`askq.{p}`" not in ARCHITECTURE] == []


def test_every_name_the_architecture_page_places_in_a_file_is_defined_there() -> None:
    """`Name` (`path`), `Name` in `path`, `Name` of `path`: each part of a dotted name is defined in the file."""
    placed = re.findall(r"`([A-Za-z_][\w.]*)`(?:\s+\(|\s+in\s+|\s+of\s+)`((?:askq|tests)/[\w/]+\.py)`",
                        ARCHITECTURE)
    assert ("DeadReason", "askq/core/deadletter.py") in placed
    wrong = []
    for name, path in placed:
        text = (ROOT / path).read_text()
        for part in name.split("."):
            if not re.search(rf"^\s*(?:class {part}\b|(?:async )?def {part}\b|{part}\s*[:=])", text, re.MULTILINE):
                wrong.append(f"{name} in {path}")
    assert wrong == []
