"""A small `askq chaos` run: its phases lose nothing, change no seen answer and kill no worker.

The run is the real thing in miniature (real Redis, simulator, worker processes; short
leases, a 5 s Redis freeze, a 10 s worker freeze), every phase included. The other tests pin
the parts a run relies on: the fault mix, the malformed entries and their matching, the phase
list.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import pytest

from askq.bench.chaos import parse_phases, run_chaos
from askq.bench.malformed import malformed_entries, records_per_entry
from askq.bench.simcontrol import CLASSIC_FAULT_KINDS, mix
from askq.bench.verdict import check
from askq.core.deadletter import DeadLetter, DeadReason
from askq.sim.faults import FAULT_KINDS

ALWAYS_CHECKED = {"lost", "duplicates", "not_exactly_one_terminal", "replaced_results", "recovery_max_s",
                  "innocent_poison", "worker_deaths", "phases_incomplete"}


@pytest.mark.timeout(300)
def test_small_chaos_run_passes_every_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = run_chaos(jobs=200, deadline_s=240, as_json=True, workers=2, concurrency=20, every_s=3.0,
                     latency_s=0.2, lease_s=3.0, var_dir=tmp_path,
                     redis_freeze_s=5.0, worker_freeze_s=10.0)
    out = json.loads(capsys.readouterr().out)
    checks = out["checks"]
    assert ALWAYS_CHECKED | {"malformed_not_dead_lettered_once", "redis_freeze_jobs_running",
                             "late_worker_held_seen_degraded", "slow_provider_run_max_s"} <= set(checks)
    assert all(set(c) == {"value", "bound", "passed"} for c in checks.values())
    # Each phase did what it is there for: otherwise its checks prove nothing.
    kinds = {e["event"] for e in out["events"]}
    assert {"killed", "froze", "resumed", "redis_restarted", "redis_frozen", "redis_resumed",
            "providers_failing", "providers_healthy", "malformed_burst"} <= kinds
    assert out["invalid_sent"] == len(malformed_entries("askq", "x"))
    failed = {name: c for name, c in checks.items() if not c["passed"]}
    assert failed == {}, (failed, out["states"], out["phases"], out.get("malformed_wrong"))
    assert out["passed"] is True and code == 0
    assert out["lost"] == 0 and out["duplicates"] == 0 and out["jobs"] >= 200 + 20 + 4 * 20 + 20 + 50


def test_a_check_fails_above_its_bound_and_minimums_below_theirs() -> None:
    assert check("recovery_max_s", 39.87, 30.0) == {"value": 39.87, "bound": 30.0, "passed": False}
    assert check("recovery_max_s", 30.0, 30.0)["passed"] is True
    assert check("late_worker_held_seen_degraded", 0, 1)["passed"] is False


def test_the_random_fault_mix_is_the_classic_kinds_only() -> None:
    # Hostile kinds added to the simulator (trickle, oversize, ...) must not enter the mix.
    assert set(CLASSIC_FAULT_KINDS) <= FAULT_KINDS
    assert {f["kind"] for f in mix()["faults"]} == set(CLASSIC_FAULT_KINDS)
    assert len(CLASSIC_FAULT_KINDS) == 14


def test_malformed_entries_cover_issue_9_kinds_each_tagged() -> None:
    entries = malformed_entries("askq", "run1")
    names = {e.name for e in entries}
    assert {"no_content_type", "content_type_data", "content_type_text", "task_a_list", "body_null", "body_42",
            "body_object", "body_two_items", "timelimit_abc", "no_id_header", "created_yesterday",
            "lone_surrogate"} <= names
    assert len(entries) == 22 and len({e.tag for e in entries}) == 22
    assert all(e.tag.isalnum() and e.tag.encode() in e.data for e in entries)
    surrogate = json.loads(next(e for e in entries if e.name == "lone_surrogate").data)
    assert "\ud800" in json.loads(base64.b64decode(surrogate["body"]))[1]["job"]["question"]


def _record(job_id: str | None, raw: str | None = None) -> DeadLetter:
    return DeadLetter(id="r", job_id=job_id, reason=DeadReason.INVALID_PAYLOAD, error="bad", raw=raw, dead_at=0.0)


def test_records_are_matched_to_entries_exactly() -> None:
    entries = malformed_entries("askq", "run1")
    records = [_record(e.tag) for e in entries[1:]] + [_record(entries[2].tag), _record(None, "untagged")]
    counts, surplus = records_per_entry(entries, records)
    # The untagged record goes to the entry no record named; the second record of entry 2 shows.
    assert counts[entries[0].name] == 1 and counts[entries[2].name] == 2 and surplus == 0
    counts, surplus = records_per_entry(entries, [_record(None), _record(None)])
    assert surplus == 0 and sum(counts.values()) == 2
    counts, surplus = records_per_entry(entries[:1], [_record(None), _record(None)])
    assert counts[entries[0].name] == 1 and surplus == 1


def test_phases_are_chosen_in_order_and_a_bad_name_is_refused() -> None:
    assert parse_phases("burst,mix") == ("mix", "burst")
    assert parse_phases(None, "slow_provider") == ("mix", "redis_freeze", "late_worker", "burst")
    with pytest.raises(ValueError, match="unknown chaos phase"):
        parse_phases("mix,nope")
    with pytest.raises(ValueError, match="no chaos phase left"):
        parse_phases("burst", "burst")
    proc = subprocess.run([sys.executable, "-m", "askq", "chaos", "--phases", "nope"], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2 and "unknown chaos phase(s) ['nope']" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(("argv", "message"), [
    (["--redis-freeze", "0"], "argument --redis-freeze: must be a positive number of seconds, got '0'"),
    (["--worker-freeze", "soon"], "argument --worker-freeze: not a number: 'soon'"),
    (["--deadline", "inf"], "argument --deadline: must be a positive number of seconds, got 'inf'"),
    (["--skip", "mix,redis_freeze,late_worker,slow_provider,burst"], "no chaos phase left to run"),
])
def test_bad_chaos_options_get_a_clear_error(argv: list[str], message: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "askq", "chaos", *argv], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
