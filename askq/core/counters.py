"""Every counter askq keeps, declared once: its name, labels, help and Prometheus metric.

A counter is a field of the stats hash (keys.STATS): `name` when plain, `name:value[:value]`
when labelled (`attempts:primary`, `errors:primary:rate_limited`). Workers and Lua scripts
add to them; `askq stats`, the Prometheus collector (askq/core/metrics.py) and the demo read
them through this table. A Lua script cannot import it, so a script writes the field name as
a literal and tests/test_counters.py checks every such literal is declared here; its Python
caller passes the label values. A counter without a metric of its own is exposed as
`askq_events{name="..."}` (the label is the field name).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Count:
    """One counter: a plain field, or a family of fields told apart by their label values."""

    name: str
    help: str
    labels: tuple[str, ...] = ()
    # The Prometheus family it is exposed as; None: askq_events{name=<field>}.
    metric: str | None = None

    def field(self, *values: str) -> str:
        """The stats-hash field for these label values (none for a plain counter)."""
        if len(values) != len(self.labels):
            raise ValueError(f"counter {self.name} takes labels {self.labels}, got {values}")
        return ":".join((self.name, *values))


EVENTS_METRIC = "askq_events"

# Jobs.
SUBMITTED = Count("submitted", "jobs created by producers", metric="askq_jobs_submitted")
SUCCEEDED = Count("succeeded", "jobs that stored a result", metric="askq_jobs_succeeded")
DEAD = Count("dead", "jobs dead-lettered", metric="askq_jobs_dead")
DEAD_BY_REASON = Count("dead", "jobs dead-lettered, by reason", ("reason",), metric="askq_dead_letters")
CANCELLED = Count("cancelled", "jobs cancelled by a producer before they ended (no result, not dead)",
                  metric="askq_jobs_cancelled")
EXPIRED = Count("expired", "jobs not started by their expires_at (never run, not dead)", metric="askq_jobs_expired")
SOURCE = Count("source", "answered jobs by the tier that answered", ("tier",), metric="askq_jobs_answered")
LATE_WRITES = Count("late_writes", "result writes refused: the run no longer held the job",
                    metric="askq_late_writes_refused")
PAYLOAD_MISMATCHES = Count("payload_mismatches", "messages whose payload differed from the stored job's")
UNKNOWN_JOB_MESSAGES = Count("unknown_job_messages", "messages for a job with no record (skipped)")

# The ladder (askq/workers/ladder.py).
ATTEMPTS = Count("attempts", "LLM calls made, by provider", ("provider",), metric="askq_attempts")
RETRIES = Count("retries", "LLM calls that were retries, by provider", ("provider",), metric="askq_retries")
ERRORS = Count("errors", "failed LLM calls by provider and error class", ("provider", "error_class"),
               metric="askq_errors")
SKIPPED = Count("skipped", "tiers skipped without a call (breaker, rate limit)", ("provider", "why"),
                metric="askq_tier_skipped")
FALLBACKS = Count("fallbacks", "times a job moved on to the next tier", metric="askq_fallbacks")
CACHE_HITS = Count("cache_hits", "answers served from the cache", metric="askq_cache_hits")
DEFAULT_ANSWERS = Count("default_answers", "jobs given the default answer")
INTERNAL_ERRORS = Count("internal_errors", "jobs stopped by an error in askq's code or the job's data")

# The circuit breaker (askq/workers/breaker.py).
BREAKER_OPENED = Count("breaker_opened", "times a provider's breaker opened", ("provider",),
                       metric="askq_breaker_opened")
BREAKER_CLOSED = Count("breaker_closed", "times a provider's breaker closed again", ("provider",),
                       metric="askq_breaker_closed")
BREAKER_PROBES = Count("breaker_probes", "half-open probes sent", ("provider",), metric="askq_breaker_probes")

# Completion callbacks (askq/workers/callbacks.py).
CALLBACKS_DELIVERED = Count("callbacks_delivered", "completion callbacks delivered")
CALLBACKS_DROPPED = Count("callbacks_dropped", "completion callbacks dropped (nothing left to send)")
CALLBACKS_RETRIED = Count("callbacks_retried", "completion callback attempts to be retried")
CALLBACKS_FAILED = Count("callbacks_failed", "completion callbacks given up (dead-lettered)")

ALL = (SUBMITTED, SUCCEEDED, DEAD, DEAD_BY_REASON, CANCELLED, EXPIRED, SOURCE, LATE_WRITES, PAYLOAD_MISMATCHES,
       UNKNOWN_JOB_MESSAGES, ATTEMPTS, RETRIES, ERRORS, SKIPPED, FALLBACKS, CACHE_HITS, DEFAULT_ANSWERS,
       INTERNAL_ERRORS, BREAKER_OPENED, BREAKER_CLOSED, BREAKER_PROBES, CALLBACKS_DELIVERED, CALLBACKS_DROPPED,
       CALLBACKS_RETRIED, CALLBACKS_FAILED)
PLAIN = {c.name: c for c in ALL if not c.labels}
LABELLED = {c.name: c for c in ALL if c.labels}


def parse(field: str) -> tuple[Count, list[str]] | None:
    """The declared counter a stats-hash field belongs to, with its label values; None if undeclared."""
    name, _, rest = field.partition(":")
    if not rest:
        plain = PLAIN.get(name)
        return (plain, []) if plain is not None else None
    count = LABELLED.get(name)
    if count is None:
        return None
    values = rest.split(":", len(count.labels) - 1)
    return (count, values) if len(values) == len(count.labels) else None
