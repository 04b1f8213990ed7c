"""Whether the configured providers can be reached at all, checked once when a worker starts.

A worker whose every provider is down still answers every job, with the canned default answer
(degraded): without a word, a newcomer who forgot the simulator sees plausible answers and no
error. The check is a TCP connect to each provider's host and port (no request, no key sent):
it cannot tell a healthy provider from a wrong path, only the silence of a missing one.
"""

from __future__ import annotations

import socket
import threading
from urllib.parse import urlsplit

import structlog

from askq.config.settings import ProviderSettings, Settings

log = structlog.get_logger("askq.worker")
CONNECT_TIMEOUT_S = 3.0


def address(provider: ProviderSettings) -> tuple[str, int]:
    parts = urlsplit(provider.base_url)
    return parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)


def unreachable(providers: list[ProviderSettings], timeout_s: float = CONNECT_TIMEOUT_S) -> dict[str, str]:
    """Provider name -> why a connection to it failed, for each provider that cannot be reached."""
    problems: dict[str, str] = {}
    for provider in providers:
        host, port = address(provider)
        try:
            socket.create_connection((host, port), timeout=timeout_s).close()
        except OSError as exc:
            problems[provider.name] = f"{host}:{port}: {exc.strerror or exc}"
    return problems


def warn_if_unreachable(settings: Settings) -> None:
    """Log a warning for each unreachable provider, and a louder one when none can be reached."""
    problems = unreachable(settings.providers)
    if len(problems) == len(settings.providers):
        log.warning("no_provider_reachable", providers=problems,
                    consequence="every job gets the cached or the canned default answer (degraded) until one is",
                    hint="start the provider, or locally the simulator (askq sim --port 8700), or set ASKQ_PROVIDERS")
        return
    for name, problem in problems.items():
        log.warning("provider_unreachable", provider=name, error=problem,
                    consequence="its tier fails and jobs move on to the next one")


def check_in_background(settings: Settings) -> threading.Thread:
    """Run the check on a daemon thread: a slow DNS lookup never delays the worker's start."""
    thread = threading.Thread(target=warn_if_unreachable, args=(settings,), name="askq-provider-check", daemon=True)
    thread.start()
    return thread
