"""The checks of a chaos run: every figure with a promise is compared with its bound.

A check is `{value, bound, passed}`; `passed` is `value <= bound`, or `value >= bound` for the
few named in AT_LEAST (a phase that did not create its fault proves nothing). The run passes
when every check does.

The recovery bound follows the settings the run uses: the promise is 30 s with the default
lease (10 s) and reaper interval (2 s), that is 18 s for the new run itself (and its wait behind
the backlog) on top of the lease expiry and the reaper's sweep. With other settings the bound
is lease_s + reaper_interval_s + 18 s.
"""

from __future__ import annotations

import json
from typing import Any

from askq.bench.malformed import records_per_entry
from askq.bench.phases import Run, invalid_records
from askq.core import keys
from askq.core.deadletter import DeadReason
from askq.core.stats import percentile

# askq/workers/execution.py's marker (chaos_hooks); not imported, as importing a worker module has
# side effects (issue 10, A). A poison record whose question lacks it is an innocent job.
CRASH_MARKER = "[[askq:crash]]"
PROMISED_RECOVERY_S = 30.0
DEFAULT_LEASE_S = 10.0
DEFAULT_REAPER_INTERVAL_S = 2.0
RUN_ALLOWANCE_S = PROMISED_RECOVERY_S - DEFAULT_LEASE_S - DEFAULT_REAPER_INTERVAL_S

# Checks that are minimums: the phase must have done what it is there to do.
AT_LEAST = {"late_worker_held_seen_degraded", "redis_freeze_jobs_running"}


def recovery_bound_s(lease_s: float, reaper_interval_s: float) -> float:
    return lease_s + reaper_interval_s + RUN_ALLOWANCE_S


def check(name: str, value: float, bound: float) -> dict[str, Any]:
    passed = value >= bound if name in AT_LEAST else value <= bound
    return {"value": value, "bound": bound, "passed": bool(passed)}


def verdict(run: Run) -> dict[str, Any]:
    """Read the job store after the run and judge every promise."""
    ids = [j for phase_ids in run.ids.values() for j in phase_ids]
    pipe = run.r.pipeline(transaction=False)
    for job_id in ids:
        pipe.hmget(keys.job(job_id), ["state", "result", "result_writes", "updated", "late_writes", "reason"])
        pipe.exists(keys.dead_letter(job_id))
    replies = pipe.execute()
    states: dict[str, int] = {}
    results: dict[str, str | None] = {}
    lost = duplicates = double_terminal = late_writes = 0
    recovery: list[float] = []
    reclaim: list[float] = []
    phase_of = {j: phase for phase, phase_ids in run.ids.items() for j in phase_ids}
    recovery_by_phase: dict[str, list[float]] = {}
    for i, job_id in enumerate(ids):
        (state, result, writes, updated, late, _), has_dlq = replies[2 * i], replies[2 * i + 1]
        states[str(state)] = states.get(str(state), 0) + 1
        results[job_id] = result
        late_writes += int(late or 0)
        if state not in ("succeeded", "dead"):
            lost += 1
            continue
        if int(writes or 0) > 1:
            duplicates += 1
        if (state == "succeeded") != bool(result) or (state == "succeeded" and has_dlq) or (
                state == "dead" and not has_dlq):
            double_terminal += 1
        if job_id in run.crew.struck:
            # The first answer a reader saw ends the recovery; a later replacement does not.
            res = json.loads(result) if result else {}
            first = run.reader.first.get(job_id)
            ended = first[2] if first else float(res.get("finished") or updated or 0)
            recovery.append(max(0.0, ended - run.crew.struck[job_id]))
            recovery_by_phase.setdefault(phase_of[job_id], []).append(recovery[-1])
            if res.get("started"):
                reclaim.append(max(0.0, float(res["started"]) - run.crew.struck[job_id]))
    replaced = run.reader.replaced(results)
    poison = run.client.dlq.list(reason=DeadReason.POISON, limit=100000)
    ours = set(ids)
    innocent = [p.job_id for p in poison if p.job_id in ours
                and CRASH_MARKER not in str((p.payload or {}).get("question", ""))]
    bound = recovery_bound_s(run.lease_s, run.reaper_interval_s)
    checks = {
        "lost": check("lost", lost, 0),
        "duplicates": check("duplicates", duplicates, 0),
        "not_exactly_one_terminal": check("not_exactly_one_terminal", double_terminal, 0),
        "replaced_results": check("replaced_results", len(replaced), 0),
        "recovery_max_s": check("recovery_max_s", round(max(recovery, default=0.0), 2), bound),
        "innocent_poison": check("innocent_poison", len(innocent), 0),
        "worker_deaths": check("worker_deaths", len(run.crew.deaths), 0),
        "phases_incomplete": check("phases_incomplete", sum(not ok for ok in run.on_time.values()), 0),
    }
    out: dict[str, Any] = {
        "jobs": len(ids), "states": states, "lost": lost, "duplicates": duplicates,
        "not_exactly_one_terminal": double_terminal, "late_writes": late_writes, "replaced_results": len(replaced),
        "replaced_jobs": replaced[:20], "innocent_poison": len(innocent),
        # job id -> runs the scenario itself ended (at most max_strikes by design)
        "innocent_poison_jobs": {j: run.crew.strikes.get(str(j), 0) for j in innocent[:20]},
        "reclaimed": len(recovery), "struck_twice": sum(1 for n in run.crew.strikes.values() if n > 1),
        "recovery_p95_s": round(percentile(recovery, 95), 2),
        "recovery_max_s": checks["recovery_max_s"]["value"], "recovery_bound_s": bound,
        "reclaim_p95_s": round(percentile(reclaim, 95), 2), "reclaim_max_s": round(max(reclaim, default=0.0), 2),
        "worker_deaths": run.crew.deaths, "finished_in_time": all(run.on_time.values()),
        "settings": {"lease_s": run.lease_s, "heartbeat_s": run.heartbeat_s,
                     "reaper_interval_s": run.reaper_interval_s},
    }
    if run.entries:
        counts, surplus = records_per_entry(run.entries, invalid_records(run))
        wrong = sorted(n for n, c in counts.items() if c != 1)
        checks["malformed_not_dead_lettered_once"] = check("malformed_not_dead_lettered_once", len(wrong) + surplus, 0)
        out |= {"invalid_sent": len(run.entries), "invalid_dead_lettered": sum(1 for c in counts.values() if c >= 1),
                "malformed_records": counts, "malformed_wrong": wrong, "malformed_surplus_records": surplus}
    if "redis_freeze" in run.figures and "error" not in run.figures["redis_freeze"]:
        fig = run.figures["redis_freeze"]
        checks["redis_freeze_jobs_running"] = check("redis_freeze_jobs_running", fig["running_at_freeze"], 1)
    if "late_worker" in run.figures and "error" not in run.figures["late_worker"]:
        fig = run.figures["late_worker"]
        held = set(fig.pop("held"))
        fig["held_replaced"] = sum(1 for j in replaced if j in held)
        checks["late_worker_held_seen_degraded"] = check("late_worker_held_seen_degraded",
                                                         fig["held_seen_degraded"], 1)
    if "slow_provider" in run.figures and "error" not in run.figures["slow_provider"]:
        fig = run.figures["slow_provider"]
        checks["slow_provider_run_max_s"] = check("slow_provider_run_max_s", fig["run_max_s"], fig["bound_s"])
    for phase, times in recovery_by_phase.items():
        run.figures.setdefault(phase, {}).update(
            reclaimed=len(times), recovery_p95_s=round(percentile(times, 95), 2), recovery_max_s=round(max(times), 2))
    out["checks"] = checks
    out["phases"] = run.figures | {p: run.figures.get(p, {}) | {"on_time": ok} for p, ok in run.on_time.items()}
    out["passed"] = all(c["passed"] for c in checks.values())
    return out
