"""Baseline (b), the bare worker: askq's pool type (threads), the openai SDK, no bookkeeping.

Start: `celery -A askq.bench.baselines.bare worker --pool threads --concurrency 200`.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from openai import OpenAI

from askq.bench.baselines import SYSTEM, env, make_app, record

app = make_app("bare")
_client: OpenAI | None = None
_lock = threading.Lock()


def client() -> OpenAI:
    """One SDK client per process, shared by every thread (its httpx pool is thread-safe)."""
    global _client
    with _lock:
        if _client is None:
            _client = OpenAI(base_url=env("BENCH_SIM_URL"), api_key="sk-bench", timeout=10, max_retries=0)
    return _client


@app.task(name="bench.bare")  # type: ignore[untyped-decorator]
def ask(job: dict[str, Any], dispatch: int = 1) -> str:
    started = time.time()
    reply = client().chat.completions.create(
        model="primary",
        messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": job["question"]}],
    )
    record(job, started, ok=bool(reply.choices and reply.choices[0].message.content))
    return "ok"
