"""`askq chaos`: a bounded run on loopback that kills, freezes and starves askq, then checks its promises.

The phases (askq/bench/phases.py) run one after another on one stack (one Redis, one simulator),
each with its own jobs, workers and simulator faults; a reader polls every job's result as a
user would (askq/bench/reader.py). When the last phase ends, or at the global deadline, the job
store is judged (askq/bench/verdict.py): each promise is a check with a value, a bound and a
verdict, and the run fails (exit 1) when any check does.

Recovery time of a reclaimed job: from the moment its worker was killed or frozen (the job
was `running` under that worker just before; the last such moment for a job struck twice)
to the moment a reader first saw it terminal by another delivery (the result's `finished`,
or `updated` for a dead job). It includes the lease expiry, the reaper's requeue, the wait
behind the queue's backlog and the new run. Reclaim time is the same up to the moment
another worker claimed it (the new run's start).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from askq.bench import phases, simcontrol
from askq.bench.crew import Crew
from askq.bench.phases import PHASES, Options, Run
from askq.bench.reader import FirstResults
from askq.bench.verdict import AT_LEAST, verdict
from askq.config.settings import Settings, load_settings
from askq.core.connection import connect
from askq.producers.client import Client
from askq.stack import Stack, default_providers

console = Console(stderr=True, markup=False)  # "[phase]" prefixes are text, not styles


def parse_phases(names: str | None, skip: str | None = None) -> tuple[str, ...]:
    """Phases from comma lists (`--phases`, `--skip`), in their fixed order; ValueError names a bad one."""
    chosen = [n.strip() for n in names.split(",") if n.strip()] if names else list(PHASES)
    skipped = [n.strip() for n in skip.split(",") if n.strip()] if skip else []
    unknown = sorted(set(chosen + skipped) - set(PHASES))
    if unknown:
        raise ValueError(f"unknown chaos phase(s) {unknown}; phases are {', '.join(PHASES)}")
    left = tuple(p for p in PHASES if p in chosen and p not in skipped)
    if not left:
        raise ValueError("no chaos phase left to run (--skip leaves out every phase chosen)")
    return left


def _fresh_store(stack: Stack) -> None:
    """Start the run's Redis on an empty AOF: the counts are about this run's jobs only."""
    stack.start_redis()
    assert stack.redis is not None
    stack.redis.stop()
    for old in stack.redis.data_dir.glob("*.aof"):
        old.unlink()
    for old in (stack.redis.data_dir / "appendonlydir").glob("*"):
        old.unlink()
    stack.redis.start()


def run_chaos(jobs: int = 5000, deadline_s: float = 900.0, as_json: bool = False, workers: int = 3,
              concurrency: int = 50, every_s: float = 10.0, latency_s: float = 0.3, lease_s: float | None = None,
              var_dir: Path | None = None, phase_names: tuple[str, ...] = PHASES, redis_freeze_s: float = 15.0,
              worker_freeze_s: float = 25.0) -> int:
    """Run the phases and print the checks; 0 when every check passed, 1 otherwise."""
    opts = Options(jobs=jobs, deadline_s=deadline_s, workers=workers, concurrency=concurrency, every_s=every_s,
                   latency_s=latency_s, lease_s=lease_s, redis_freeze_s=redis_freeze_s,
                   worker_freeze_s=worker_freeze_s, phases=phase_names)
    out = _run(opts, var_dir)
    _print(out, as_json)
    return 0 if out["passed"] else 1


def _run(opts: Options, var_dir: Path | None) -> dict[str, Any]:
    stop_at = time.monotonic() + opts.deadline_s
    base = load_settings()
    fields = Settings.model_fields
    # The workers get these explicitly (defaults unless --lease): the bound is derived from them.
    lease = opts.lease_s if opts.lease_s is not None else float(fields["lease_s"].default)
    heartbeat = lease / 6 if opts.lease_s is not None else float(fields["heartbeat_s"].default)
    reaper = lease / 6 if opts.lease_s is not None else float(fields["reaper_interval_s"].default)
    env = {"ASKQ_LOG_LEVEL": "warning", "ASKQ_BREAKER__COOLDOWN_S": "2", "ASKQ_LEASE_S": str(lease),
           "ASKQ_HEARTBEAT_S": str(heartbeat), "ASKQ_REAPER_INTERVAL_S": str(reaper)}
    with Stack(var_dir or base.var_dir / "chaos", env=env) as stack:
        _fresh_store(stack)
        stack.start_sim(simcontrol.healthy(opts.latency_s), latency_s=opts.latency_s, seed=11)
        settings = load_settings(redis_url=stack.redis_url, var_dir=stack.var_dir,
                                 providers=default_providers(stack.sim_url))
        r = connect(settings, stack.redis_url)
        client = Client(settings, r)
        crew = Crew(stack, r, max_strikes=int(fields["max_deliveries"].default) - 1)
        run = Run(opts=opts, stack=stack, settings=settings, r=r, client=client, crew=crew,
                  reader=FirstResults(r), lease_s=lease, heartbeat_s=heartbeat, reaper_interval_s=reaper,
                  tag=f"chaos{int(time.time())}", stop_at=stop_at)
        console.print(f"chaos: phases {', '.join(opts.phases)}; lease {lease} s, deadline {opts.deadline_s} s")
        later = {p: phases.budget_s(opts, p, lease) for p in opts.phases}
        try:
            for i, name in enumerate(opts.phases):
                run.crew.phase = name
                reserve = sum(later[p] for p in opts.phases[i + 1:])
                own = max(later[name], stop_at - time.monotonic() - reserve) if name == "mix" else later[name]
                until = min(stop_at, time.monotonic() + own)
                started = time.monotonic()
                run.crew.event("phase_started")
                try:
                    run.close_breakers()
                    run.on_time[name] = phases.RUNNERS[name](run, until)
                except Exception as exc:  # one broken phase must not hide the others' checks
                    run.on_time[name] = False
                    run.figures.setdefault(name, {})["error"] = f"{type(exc).__name__}: {exc}"
                    console.print(f"[{name}] stopped by an error: {type(exc).__name__}: {exc}")
                console.print(f"[{name}] done in {time.monotonic() - started:.0f} s, on time: {run.on_time[name]}")
            run.crew.phase = "end"
            run.reader.poll(force=True)
            out = verdict(run)
        finally:
            client.close()
        out["events"] = run.crew.events
        out["phases_run"] = list(opts.phases)
        return out


def _print(out: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(out, sort_keys=True, default=str))
        return
    table = Table(title="askq chaos: checks")
    for col in ("check", "value", "bound", "verdict"):
        table.add_column(col)
    for name, c in out["checks"].items():
        rule = "≥" if name in AT_LEAST else "≤"
        table.add_row(name, str(c["value"]), f"{rule} {c['bound']}", "pass" if c["passed"] else "[red]FAIL[/red]")
    table.add_row("passed", "", "", "pass" if out["passed"] else "[red]FAIL[/red]")
    figures = Table(title="askq chaos: figures", show_header=False)
    for key in ("jobs", "states", "late_writes", "reclaimed", "recovery_p95_s", "reclaim_p95_s", "reclaim_max_s",
                "invalid_sent", "invalid_dead_lettered", "settings", "finished_in_time"):
        if key in out:
            figures.add_row(key, str(out[key]))
    for name, fig in out["phases"].items():
        figures.add_row(name, json.dumps(fig, default=str))
    Console().print(table)
    Console().print(figures)

