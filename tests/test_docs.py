"""The README documents every setting, and the commands it shows exist."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel

from askq.cli import build_parser
from askq.config.settings import ProviderSettings, Settings

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


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
