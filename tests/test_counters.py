"""Counters are declared once (askq/core/counters.py): every one askq emits is declared, every
declared one is exposed on /metrics, and a job's walk lands in the stats hash under them."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import redis
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from askq.config.settings import Settings
from askq.core import counters, keys
from askq.core.metrics import registry_for
from askq.workers import tasks
from askq.workers.ladder import LadderResult, ProviderCalls
from tests.conftest import Sim
from tests.ladderkit import job, run_ladder, settings_with

ASKQ = Path(__file__).resolve().parent.parent / "askq"
# redis.call('HINCRBY', KEYS[n], 'field' [.. ARGV[k]], ...) in a Lua script.
LUA_HINCRBY = re.compile(r"redis\.call\('HINCRBY', KEYS\[(\d+)\], ('([^']*)'( \.\.)?|[^,]+)")
# A script's contract line above it: "# KEYS: job, leases, pending, stats" (or "-- KEYS: ..." in a .lua file).
KEYS_LINE = re.compile(r"^\s*(?:#|--)\s*KEYS:\s*(.*?)(?:\s{2,}ARGV:.*)?$")
# Counters whose name a script builds from an argument its caller passes: name -> the values it can take.
BUILT_NAMES = {"callbacks_": ("delivered", "dropped")}  # SETTLE_CALLBACK's branch for these outcomes only


def _stats_increments() -> list[tuple[str, str, bool]]:
    """(file:line, field literal, followed by '..') for every HINCRBY a Lua script makes on the stats hash."""
    found = []
    for path in sorted(ASKQ.rglob("*")):
        if path.suffix not in (".py", ".lua"):
            continue
        contract: list[str] | None = None
        for number, line in enumerate(path.read_text().splitlines(), 1):
            header = KEYS_LINE.match(line)
            if header:
                contract = [name.strip() for name in header.group(1).split(",")]
            for match in LUA_HINCRBY.finditer(line):
                where = f"{path.relative_to(ASKQ.parent)}:{number}"
                assert contract is not None, f"{where}: a script with no KEYS contract line above it"
                index = int(match.group(1))
                assert index <= len(contract), f"{where}: KEYS[{index}] is not in its contract {contract}"
                if contract[index - 1] != "stats":
                    continue
                assert match.group(3) is not None, f"{where}: a stats counter whose name is not a literal"
                found.append((where, match.group(3), match.group(4) is not None))
    return found


def test_every_counter_a_lua_script_can_emit_is_declared() -> None:
    increments = _stats_increments()
    # The scan sees the scripts (SUBMIT, FINISH, the breaker's...): it cannot pass by finding nothing.
    assert {"submitted", "succeeded", "breaker_opened:", "dead:"} <= {name for _, name, _ in increments}
    for where, name, built in increments:
        if not built:
            assert counters.parse(name) is not None, f"{where}: counter {name!r} is not declared"
        elif name.endswith(":"):
            assert name[:-1] in counters.LABELLED, f"{where}: labelled counter {name[:-1]!r} is not declared"
        else:
            assert name in BUILT_NAMES, f"{where}: counter name built from {name!r}: list what it can be"
            for value in BUILT_NAMES[name]:
                assert counters.parse(name + value) is not None, f"{where}: {name + value!r} is not declared"


def test_every_counter_python_code_emits_is_declared() -> None:
    literal = re.compile(r"hincrby\(keys\.STATS,\s*\"([^\"]+)\"")
    for path in ASKQ.rglob("*.py"):
        for name in literal.findall(path.read_text()):
            assert counters.parse(name) is not None, f"{path}: counter {name!r} is not declared"
    assert counters.parse(tasks.UNKNOWN_JOB_COUNTER) is not None
    # The ladder counts in typed fields; every one of them maps to a declared counter.
    walk = LadderResult(outcome="answered", fallbacks=1, cache_hits=1, default_answers=1, internal_errors=1,
                        calls={"primary": ProviderCalls(attempts=2, retries=1, errors=Counter({"rate_limited": 1}),
                                                        skipped=Counter({"breaker_open": 1}))})
    counts = walk.counts()
    assert len(counts) == 8
    for name in counts:
        assert counters.parse(name) is not None, f"the ladder's {name!r} is not declared"


def test_every_declared_counter_is_exposed(r: redis.Redis, settings: Settings) -> None:
    fields = {count: count.field(*(f"{label}-x" for label in count.labels)) for count in counters.ALL}
    for n, field in enumerate(fields.values(), 1):
        r.hincrby(keys.STATS, field, n)
    samples = {}
    for family in text_string_to_metric_families(generate_latest(registry_for(r, settings)).decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    for n, (count, field) in enumerate(fields.items(), 1):
        if count.metric is None:
            key = (f"{counters.EVENTS_METRIC}_total", (("name", field),))
        else:
            key = (f"{count.metric}_total", tuple(sorted((label, f"{label}-x") for label in count.labels)))
        assert samples.get(key) == n, f"{field} is not exposed as {key}"


def test_declarations_are_unambiguous() -> None:
    metrics = [c.metric for c in counters.ALL if c.metric is not None]
    assert len(metrics) == len(set(metrics))
    assert len({(c.name, bool(c.labels)) for c in counters.ALL}) == len(counters.ALL)
    assert all(c.help for c in counters.ALL)


def test_a_jobs_walk_lands_in_the_stats_hash(settings: Settings, sim: Sim, r: redis.Redis) -> None:
    sim.configure({"latency_s": 0.02, "faults": [{"kind": "server_error"}]})
    [walk] = run_ladder(settings_with(settings, sim.url), [job("Can I change my address?")])
    stats = {name: int(value) for name, value in r.hgetall(keys.STATS).items()}
    assert {name: stats.get(name) for name in walk.counts()} == dict(walk.counts())
    assert stats[counters.ATTEMPTS.field("primary")] == 3 and stats[counters.FALLBACKS.field()] == 3
    assert stats[counters.SOURCE.field("default")] == 1


def test_the_table_lists_every_declaration() -> None:
    declared = [value for value in vars(counters).values() if isinstance(value, counters.Count)]
    assert set(declared) == set(counters.ALL) and len(counters.ALL) == len(set(counters.ALL))
