"""Structured logging (structlog) for every askq process, with secrets scrubbed."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable, MutableMapping
from typing import Any

import structlog

# Bearer tokens, OpenAI-style keys and passwords inside URLs never reach a log line.
_SECRET_PATTERNS = (
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+"),
    re.compile(r"\bsk-[A-Za-z0-9_-]{6,}"),
    re.compile(r"(redis(?:s)?://[^:/@\s]*:)[^@\s]+(@)"),
)
_SECRET_KEYS = frozenset({"api_key", "password", "token", "authorization", "secret"})


# Secret values this process was configured with (api keys, tokens, passwords): masked
# wherever they appear, whatever their shape. Filled by config.settings.load_settings.
_KNOWN_SECRETS: set[str] = set()
# Shorter values would mask ordinary words; such secrets are too weak to matter here anyway.
_MIN_SECRET_LEN = 6


def register_secrets(values: Iterable[str]) -> None:
    """Remember secret values so scrub() masks them in any text."""
    _KNOWN_SECRETS.update(v for v in values if len(v) >= _MIN_SECRET_LEN)


def scrub(text: str) -> str:
    """Return text with configured secrets, and anything that looks like a credential, replaced by ***."""
    for secret in _KNOWN_SECRETS:
        if secret in text:
            text = text.replace(secret, "***")
    for pattern in _SECRET_PATTERNS:
        if pattern.groups >= 2:
            text = pattern.sub(r"\1***\2", text)
        elif pattern.groups == 1:
            text = pattern.sub(r"\1***", text)
        else:
            text = pattern.sub("***", text)
    return text


class SecretScrubber:
    """structlog processor: masks secret-named keys and credential-shaped strings."""

    def __call__(self, _logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        for key, value in list(event.items()):
            if key.lower() in _SECRET_KEYS:
                event[key] = "***"
            elif isinstance(value, str):
                event[key] = scrub(value)
        return event


def configure_logging(level: str = "info", json: bool = False) -> None:
    """Configure structlog once per process; events carry contextvars (job_id, task_id, attempt)."""
    renderer: Any = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            SecretScrubber(),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
