"""Readable tables of askq's counters for `askq stats`: jobs, tiers, providers, queue."""

from __future__ import annotations

from collections import defaultdict

from rich.table import Table

PROVIDER_COLUMNS = ("attempts", "retries", "errors", "skipped", "breaker_opened", "breaker_closed")


def provider_rows(counters: dict[str, int]) -> dict[str, dict[str, int]]:
    """Per-provider totals from counter names like attempts:<p>, errors:<p>:<class>, skipped:<p>:<why>."""
    rows: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(PROVIDER_COLUMNS, 0))
    for name, value in counters.items():
        head, _, rest = name.partition(":")
        if head in PROVIDER_COLUMNS and rest:
            provider = rest.split(":", 1)[0]
            rows[provider][head] += value
    return dict(rows)


def jobs_table(counters: dict[str, int], pending: int, queue_depth: int, dead_letters: int) -> Table:
    table = Table("jobs", "count", title="askq stats")
    for label, key in (("submitted", "submitted"), ("succeeded", "succeeded"), ("dead", "dead"),
                       ("cancelled", "cancelled"), ("expired", "expired"), ("fallbacks", "fallbacks"),
                       ("cache hits", "cache_hits"), ("late writes refused", "late_writes"),
                       ("messages for expired jobs (skipped)", "unknown_job_messages")):
        table.add_row(label, str(counters.get(key, 0)))
    for name in sorted(counters):
        if name.startswith("source:"):
            table.add_row(f"answered by {name.split(':', 1)[1]}", str(counters[name]))
        elif name.startswith("dead:"):
            table.add_row(f"dead: {name.split(':', 1)[1]}", str(counters[name]))
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
