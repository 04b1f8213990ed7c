"""Readable tables of askq's counters for `askq stats`: jobs, tiers, providers, queue."""

from __future__ import annotations

from collections import defaultdict

from rich.table import Table

from askq.core import counters as c

PROVIDER_COLUMNS = tuple(count.name for count in (c.ATTEMPTS, c.RETRIES, c.ERRORS, c.SKIPPED, c.BREAKER_OPENED,
                                                  c.BREAKER_CLOSED))
# The plain counters the jobs table shows, with their row labels.
JOB_ROWS = ((c.SUBMITTED, "submitted"), (c.SUCCEEDED, "succeeded"), (c.DEAD, "dead"), (c.CANCELLED, "cancelled"),
            (c.EXPIRED, "expired"), (c.FALLBACKS, "fallbacks"), (c.CACHE_HITS, "cache hits"),
            (c.LATE_WRITES, "late writes refused"), (c.UNKNOWN_JOB_MESSAGES, "messages for expired jobs (skipped)"))


def provider_rows(counters: dict[str, int]) -> dict[str, dict[str, int]]:
    """Per-provider totals from counter names like attempts:<p>, errors:<p>:<class>, skipped:<p>:<why>."""
    rows: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(PROVIDER_COLUMNS, 0))
    for name, value in counters.items():
        declared = c.parse(name)
        if declared is not None and declared[0].name in PROVIDER_COLUMNS:
            count, labels = declared
            rows[labels[0]][count.name] += value
    return dict(rows)


def jobs_table(counters: dict[str, int], pending: int, queue_depth: int, dead_letters: int) -> Table:
    table = Table("jobs", "count", title="askq stats")
    for count, label in JOB_ROWS:
        table.add_row(label, str(counters.get(count.field(), 0)))
    for name in sorted(counters):
        declared = c.parse(name)
        if declared is not None and declared[0] is c.SOURCE:
            table.add_row(f"answered by {declared[1][0]}", str(counters[name]))
        elif declared is not None and declared[0] is c.DEAD_BY_REASON:
            table.add_row(f"dead: {declared[1][0]}", str(counters[name]))
    table.add_row("pending (not yet terminal)", str(pending))
    table.add_row("queue depth", str(queue_depth))
    table.add_row("dead letters kept", str(dead_letters))
    return table


def providers_table(counters: dict[str, int], states: dict[str, str]) -> Table:
    table = Table("provider", "breaker", *PROVIDER_COLUMNS, title="providers")
    rows = provider_rows(counters)
    for provider in sorted(set(rows) | set(states)):
        row = rows.get(provider, dict.fromkeys(PROVIDER_COLUMNS, 0))
        table.add_row(provider, states.get(provider, "closed"), *(str(row[c]) for c in PROVIDER_COLUMNS))
    return table
