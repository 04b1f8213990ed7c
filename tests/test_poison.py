"""Poison and bystanders: the job that kills its worker is poison, the jobs that shared its
process are not (`[[askq:crash]]` kills the worker that claims it, with chaos hooks on)."""

from __future__ import annotations

import redis

from askq.config.settings import Settings
from askq.core import keys
from askq.core.deadletter import DeadReason
from askq.core.job import JobState
from askq.producers.client import Client
from askq.stack import Stack
from askq.workers.reaper import is_culprit
from tests.conftest import Sim, wait_for, wait_workers

CHAOS = {"ASKQ_CHAOS_HOOKS": "true"}


def test_culprit_is_poison_and_the_bystanders_of_its_crashes_succeed(
    stack: Stack, r: redis.Redis, settings: Settings, sim: Sim
) -> None:
    sim.configure({"latency_s": 1.5})  # slow answers: the bystanders are mid-call at each crash
    stack.start_worker(concurrency=50, **CHAOS)
    wait_workers(r, 1)
    client = Client(settings)
    bystanders = [client.submit(f"Where is order {i}?") for i in range(19)]
    wait_for(lambda: all(v and v.state is JobState.RUNNING for v in client.store.get_many(bystanders).values()),
             30, what="bystanders running")
    culprit = client.submit("Please crash [[askq:crash]]")

    def settled() -> bool:
        if all(p.poll() is not None for p in stack.workers):
            stack.start_worker(concurrency=50, **CHAOS)
        views = client.store.get_many([culprit, *bystanders])
        return all(v is not None and v.state.terminal for v in views.values())

    wait_for(settled, 150, interval=0.2, what="culprit and bystanders terminal")
    view = client.get(culprit)
    assert view.state is JobState.DEAD and view.reason is DeadReason.POISON
    states = {job_id: v.state for job_id, v in client.store.get_many(bystanders).items() if v}
    assert set(states.values()) == {JobState.SUCCEEDED}, states
    assert [d.id for d in client.dead_letters()] == [culprit]
    record = client.dead_letter(culprit)
    losses = [h for h in record.history if h.get("outcome") == "lost"]
    assert len(losses) == record.deliveries >= settings.max_deliveries
    # The record names who was running alongside each time its worker died.
    assert set(bystanders) & {j for loss in losses for j in loss["running_with"]}
    assert all(int(r.hget(keys.job(j), "result_writes") or 0) == 1 for j in bystanders)


def test_the_poison_rule_names_the_common_factor_only() -> None:
    def loss(*ids: str) -> dict[str, object]:
        return {"outcome": "lost", "running_with": list(ids)}

    assert is_culprit([loss("a", "b"), loss(), loss("a")])  # died alone once
    assert is_culprit([loss("a", "b"), loss("c"), loss("b", "d")])  # nobody else every time
    assert not is_culprit([loss("a", "b"), loss("a"), loss("a", "c")])  # always with "a"
    assert is_culprit([])
