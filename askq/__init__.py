"""askq: a resilient LLM job queue on Celery and Redis.

The one installed name. A service that enqueues needs only::

    from askq import Client, HttpClient

Both are imported on first use (PEP 562), so `import askq` itself costs nothing and starts nothing.
The parts live in subpackages: `askq.core` (jobs, keys, scripts, dead letters), `askq.config`
(settings, logging), `askq.producers` (client, CLI, HTTP API), `askq.workers` (Celery app, ladder),
`askq.sim` (the LLM simulator) and `askq.bench` (benchmarks, chaos); the modules here are the CLI.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from askq.core.version import VERSION as __version__

__all__ = ["Client", "HttpClient", "__version__"]

if TYPE_CHECKING:
    from askq.producers.client import Client
    from askq.producers.httpclient import HttpClient


def __getattr__(name: str) -> Any:
    if name == "Client":
        from askq.producers.client import Client

        return Client
    if name == "HttpClient":
        from askq.producers.httpclient import HttpClient

        return HttpClient
    raise AttributeError(f"module 'askq' has no attribute {name!r}")
