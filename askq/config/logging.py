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


# Loggers of the servers askq runs, whose info lines an operator wants (startup, connections).
_SERVER_LOGGERS = ("celery", "flower", "tornado", "kombu")


def _stdlib_fields(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor for standard-library records: the logger's name, and uvicorn's
    access-log arguments as fields (a request's method, path and status are what one filters on)."""
    record = event.get("_record")
    args = event.pop("positional_args", ())
    if record is not None:
        event["logger"] = record.name
        if record.name == "uvicorn.access" and isinstance(args, tuple) and len(args) == 5:
            event.update(zip(("client", "method", "path", "http_version", "status"), args, strict=True))
    return event


def configure_logging(level: str = "info", json: bool = False) -> None:
    """Configure structlog once per process; events carry contextvars (job_id, task_id, attempt).

    The standard library's logging goes through the same processors and renderer: Celery's and
    kombu's loggers, uvicorn's access and error logs, Flower (tornado) and Python warnings look
    like askq's own events (with json, one JSON object per line on stderr), scrubbed the same way.
    """
    renderer: Any = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    )
    stamped: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*stamped, structlog.processors.format_exc_info, SecretScrubber(), renderer],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper())),
        # One write per line (message and newline together), so lines from threads never interleave.
        logger_factory=structlog.WriteLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*stamped, _stdlib_fields],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    structlog.processors.format_exc_info, SecretScrubber(), renderer],
        pass_foreign_args=True,
    ))
    root = logging.getLogger()
    # Replaces whatever handler a library installed first (tornado's, Celery's): one format per process.
    root.handlers = [handler]
    # Libraries speak at warning and above (httpx would log every LLM call at info); the servers
    # askq runs keep askq's level for their own loggers (uvicorn's are set by uvicorn itself, and
    # a worker sets Celery's from its --loglevel).
    root.setLevel(logging.WARNING)
    for name in _SERVER_LOGGERS:
        logging.getLogger(name).setLevel(getattr(logging, level.upper()))
    logging.captureWarnings(True)
