"""Completion callbacks: POST a terminal job's view, signed, to its callback_url, at least once.

The job's terminal write enqueues the delivery (askq/core/lua/callback_hook.lua). Every worker
process runs one delivery loop on its asyncio loop, beside the jobs and never in a job slot or a
Celery pool thread. A loop takes due deliveries from Redis under a lease (TAKE_CALLBACKS), at
most `callbacks.concurrency` in flight, each attempt cut at `callbacks.timeout_s` whatever the
receiver does; the response body is never read and redirects are never followed. So a slow or
hostile receiver costs a few sockets, not a job.

Outcome of an attempt:
- 2xx: delivered, done.
- 408, 429, 5xx, a timeout or a connection error: retried with full-jitter backoff
  (`retry_base_s` doubling to `retry_cap_s`; a longer Retry-After is honoured up to the cap),
  until `give_up_after_s` after the job ended: then dead-lettered `callback_failed`.
- any other status (3xx: not followed; 4xx: the receiver refused this very request, and the
  same signed request would be refused again): dead-lettered `callback_failed` at once, so an
  operator sees it now and replays it once the receiver is fixed.
- a URL this worker may not call (host outside its `allowed_hosts`) or no secret to sign with:
  dead-lettered at once, no request made.
Every attempt of one event carries the same `webhook-id` and body, with a fresh timestamp.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import uuid
from dataclasses import dataclass
from typing import Any

import aiohttp
import redis
import redis.asyncio as aredis
import structlog

from askq.config.settings import CallbackSettings, Settings, callback_key
from askq.core import clock, keys, scripts, webhook
from askq.core.deadletter import callback_record
from askq.core.deadletterqueue import DeadLetterQueue
from askq.core.job import parse_request
from askq.core.store import view_from_hash
from askq.errors import InvalidJobError

log = structlog.get_logger("askq.callbacks")

# A lease outlives the attempt it covers by this much (the settle write after it included).
LEASE_MARGIN_S = 10.0


@dataclass(frozen=True)
class Delivery:
    """One taken attempt of one callback event."""

    id: str  # the webhook-id
    job_id: str
    job: dict[str, str]  # the job hash as it was when the job became terminal
    first: float
    attempt: int
    token: str  # this attempt's lease


@dataclass(frozen=True)
class Outcome:
    kind: str  # delivered | dropped | retry | dead
    error: str = ""
    retry_after_s: float = 0.0


class Deliverer:
    """One process's delivery loop."""

    def __init__(self, client: aredis.Redis, settings: Settings, dlq: DeadLetterQueue) -> None:
        self.redis = client
        self.settings = settings
        self.config: CallbackSettings = settings.callbacks
        self.dlq = dlq
        self.key = callback_key(self.config.secret) if self.config.secret is not None else None
        self._take = scripts.register(client, "take_callbacks")
        self._settle = scripts.register(client, "settle_callback")
        self.inflight: set[asyncio.Task[None]] = set()

    async def run(self, stop: asyncio.Event) -> None:
        """Take and deliver due callbacks until stop is set; in-flight attempts are then cancelled
        (their leases lapse and another worker delivers them, same webhook-id)."""
        connector = aiohttp.TCPConnector(limit=self.config.concurrency, force_close=True)
        async with aiohttp.ClientSession(
            connector=connector, cookie_jar=aiohttp.DummyCookieJar(), auto_decompress=False,
            timeout=aiohttp.ClientTimeout(total=self.config.timeout_s),
        ) as session:
            try:
                while not stop.is_set():
                    free = self.config.concurrency - len(self.inflight)
                    taken = await self.take(free) if free > 0 else []
                    for delivery in taken:
                        task = asyncio.create_task(self.deliver(session, delivery))
                        self.inflight.add(task)
                        task.add_done_callback(self.inflight.discard)
                    if len(taken) < free or free <= 0:
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(stop.wait(), self.config.poll_s)
            finally:
                for task in list(self.inflight):
                    task.cancel()
                await asyncio.gather(*self.inflight, return_exceptions=True)

    async def take(self, limit: int) -> list[Delivery]:
        now = await clock.aread(self.redis)
        lease_until = now + self.config.timeout_s + LEASE_MARGIN_S
        token = uuid.uuid4().hex
        rows = await self._take(keys=[keys.CALLBACKS_DUE], args=[now, lease_until, token, limit])
        taken = []
        for event_id, job_id, job, first, attempt in rows:
            try:
                snapshot = json.loads(job)
            except ValueError:
                snapshot = {}
            taken.append(Delivery(_text(event_id), _text(job_id), snapshot if isinstance(snapshot, dict) else {},
                                  float(_text(first)), int(attempt), token))
        return taken

    async def deliver(self, session: aiohttp.ClientSession, delivery: Delivery) -> None:
        """One attempt, then its settlement; never raises (a failed settle lets the lease lapse)."""
        url = _url(delivery.job)
        try:
            outcome = await self.attempt(session, delivery, url)
        except Exception as exc:  # askq's own fault building the request: retried like a receiver's
            log.error("callback_internal_error", webhook_id=delivery.id, error=repr(exc), exc_info=True)
            outcome = Outcome("retry", f"askq could not send it: {type(exc).__name__}")
        try:
            await self.settle(delivery, url or "", outcome)
        except redis.RedisError as exc:
            log.warning("callback_settle_failed", webhook_id=delivery.id, error=str(exc))

    async def attempt(self, session: aiohttp.ClientSession, delivery: Delivery, url: str | None) -> Outcome:
        if url is None:
            return Outcome("dropped")  # a false match of the hook's plain search: no callback_url
        problem = _refused(url, self.config)
        if problem:
            return Outcome("dead", problem)
        if self.key is None:
            return Outcome("dead", "callbacks.secret is not set on the workers: nothing to sign with")
        view = view_from_hash(delivery.job_id, delivery.job)
        body = view.model_dump_json().encode()
        sent = webhook.headers(self.key, delivery.id, int(clock.now()), body)
        try:
            async with asyncio.timeout(self.config.timeout_s):
                response = await session.post(url, data=body, headers=sent, allow_redirects=False)
                status, retry_after = response.status, response.headers.get("retry-after")
                response.close()  # the body is never read: a hostile receiver cannot make askq hold it
        except TimeoutError:
            return Outcome("retry", f"no answer within {self.config.timeout_s:g} s")
        except (aiohttp.ClientError, OSError) as exc:
            return Outcome("retry", f"connection failed: {type(exc).__name__}: {str(exc)[:200]}")
        return _by_status(status, retry_after, self.config.retry_cap_s)

    async def settle(self, delivery: Delivery, url: str, outcome: Outcome) -> None:
        now = await clock.aread(self.redis)
        kind, error, due = outcome.kind, outcome.error, 0.0
        if kind == "retry":
            backoff = self.config.retry_base_s * 2 ** min(delivery.attempt - 1, 30)
            wait = random.uniform(0, min(self.config.retry_cap_s, backoff))
            due = now + max(wait, outcome.retry_after_s)
            if due - delivery.first > self.config.give_up_after_s:
                kind = "dead"
                error = (f"gave up after {delivery.attempt} attempts over {now - delivery.first:.0f} s "
                         f"(callbacks.give_up_after_s): {error}")
        record = ""
        if kind == "dead":
            error = f"POST {webhook.where(url)}: {error}" if url else error
            record = callback_record(delivery.id, delivery.job_id, error, url, delivery.attempt, delivery.first, now)
        settled = await self._settle(
            keys=[keys.CALLBACKS_DUE, keys.callback(delivery.id), keys.STATS, keys.DLQ_INDEX,
                  keys.dead_letter(delivery.id)],
            args=[delivery.id, delivery.token, kind, due, error[:2000], record, now,
                  self.settings.dlq_max_age_s])
        event = {"delivered": "callback_delivered", "dropped": "callback_dropped", "retry": "callback_retry",
                 "dead": "callback_failed"}[kind]
        fields: dict[str, Any] = {"webhook_id": delivery.id, "job_id": delivery.job_id, "attempt": delivery.attempt,
                                  "receiver": webhook.where(url) if url else None, "settled": _text(settled)}
        if kind == "retry":
            fields |= {"error": error, "retry_in_s": round(due - now, 2)}
        if kind == "dead":
            log.warning(event, error=error, **fields)
            await asyncio.to_thread(self.dlq.trim)
        else:
            log.info(event, **fields)


async def run(client: aredis.Redis, settings: Settings, dlq: DeadLetterQueue, stop: asyncio.Event) -> None:
    """The delivery loop of one worker process (a supervised duty, see askq/workers/signals.py)."""
    await Deliverer(client, settings, dlq).run(stop)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _url(job: dict[str, str]) -> str | None:
    """The callback_url of the job in a snapshot, or None."""
    try:
        payload = json.loads(job.get("payload") or "{}")
    except ValueError:
        return None
    url = payload.get("callback_url") if isinstance(payload, dict) else None
    return url if isinstance(url, str) else None


def _refused(url: str, config: CallbackSettings) -> str | None:
    """Why this worker will not call the URL (checked again here: producers may be configured
    differently, or a job may have come in another way), or None."""
    try:
        webhook.check_callback(parse_request({"question": "-", "callback_url": url}), config.allowed_hosts)
    except InvalidJobError as exc:
        return f"not called: {exc}"
    return None


def _by_status(status: int, retry_after: str | None, cap_s: float) -> Outcome:
    if 200 <= status < 300:
        return Outcome("delivered")
    if status in (408, 429) or status >= 500:
        wait = 0.0
        if retry_after and retry_after.strip().isdigit():
            wait = min(float(retry_after.strip()), cap_s)
        return Outcome("retry", f"answered {status}", wait)
    if 300 <= status < 400:
        return Outcome("dead", f"answered {status}: redirects are not followed (fix the callback_url or the "
                       "receiver, then replay)")
    return Outcome("dead", f"answered {status}: refused, not retried (fix the receiver, then replay)")
