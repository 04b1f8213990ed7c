"""askq's Lua: one file per script in askq/core/lua/, each with its contract on top, each loaded
by some caller, and each runnable on its own against a real Redis."""

from __future__ import annotations

import ast
import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis

from askq.broker import keys as broker_keys
from askq.broker.unacked import settle_keys
from askq.core import keys, scripts

ROOT = Path(__file__).resolve().parent.parent
LUA = ROOT / "askq" / "core" / "lua"
QUEUE = "askq"
JOB = "smokejob"


def included() -> set[str]:
    return {name for script in scripts.names() for name in scripts.includes(script)}


def loaded_by_callers() -> dict[str, list[str]]:
    """Script name -> the modules that load it: `scripts.register(client, "name")` or
    `QueuedScript(client, "name")` with the name as a literal."""
    found: dict[str, list[str]] = {}
    for path in sorted((ROOT / "askq").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call) or len(node.args) != 2:
                continue
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
            name = node.args[1]
            if called in ("register", "QueuedScript") and isinstance(name, ast.Constant):
                found.setdefault(str(name.value), []).append(str(path.relative_to(ROOT)))
    return found


def test_the_lua_folder_holds_every_script_and_nothing_else_holds_lua() -> None:
    assert scripts.names() == sorted(p.stem for p in LUA.glob("*.lua"))
    assert len(scripts.names()) >= 20
    offenders = [str(p.relative_to(ROOT)) for p in (ROOT / "askq").rglob("*.py") if "redis.call(" in p.read_text()]
    assert offenders == [], "Lua belongs in askq/core/lua/<name>.lua"


@pytest.mark.parametrize("name", scripts.names())
def test_every_script_starts_with_its_contract(name: str) -> None:
    head = scripts.header(scripts.text(name))
    lines = head.splitlines()
    assert lines and lines[0].startswith(f"-- {name}: "), f"{name}.lua must start with '-- {name}: what it does'"
    for field in ("KEYS", "ARGV", "Returns"):
        assert any(line.startswith(f"-- {field}: ") for line in lines), f"{name}.lua: no '-- {field}:' line on top"
    # The contract is a header, not all of it: there is code after it (a fragment defines a function).
    assert scripts.text(name)[len(head):].strip()


def test_every_script_is_loaded_by_some_caller() -> None:
    loaded = loaded_by_callers()
    unknown = sorted(set(loaded) - set(scripts.names()))
    assert unknown == [], f"loaded but no such file: {unknown}"
    unused = sorted(set(scripts.names()) - set(loaded) - included())
    assert unused == [], f"no caller loads {unused}"
    assert included() == {"callback_hook"}
    assert not set(loaded) & included(), "an included fragment is not a script of its own"


@pytest.mark.parametrize("name", scripts.names())
def test_key_names_come_from_the_keys_module(name: str) -> None:
    """Placeholders are all filled; no script spells out an askq key name itself."""
    assert not re.search(r"<[A-Z][A-Z_]*>", scripts.source(name))
    assert "askq:" not in scripts.text(name)


def test_a_script_is_loaded_by_name_or_refused_with_a_clear_error() -> None:
    with pytest.raises(LookupError, match=r"no Lua script 'nope': askq/core/lua/nope.lua does not exist"):
        scripts.source("nope")
    with pytest.raises(LookupError, match=r"not a Lua script name: '../keys'"):
        scripts.source("../keys")
    finish = scripts.source("finish")
    # An include comes first, with its key placeholders filled from keys.py.
    assert finish.startswith(scripts.text("callback_hook").replace("<SEQ>", keys.CALLBACKS_SEQ)[:40])
    assert f"'{keys.CALLBACKS_DUE}'" in finish and scripts.text("finish") in finish


# --- Each script run on its own: a smoke call against the real Redis -------------------------------


def run(r: redis.Redis, name: str, keys_: list[str], args: list[Any]) -> Any:
    return scripts.register(r, name)(keys=keys_, args=args)


def submit(r: redis.Redis, payload: dict[str, Any] | None = None, expires_at: str = "") -> None:
    body = json.dumps(payload or {"question": "hi"})
    assert run(r, "submit", [keys.job(JOB), keys.PENDING, QUEUE, keys.STATS, keys.EXPIRIES],
               [body, '{"m": 1}', time.time(), JOB, QUEUE, expires_at, ""]) == 1


def claim(r: redis.Redis, lease_s: float = 10.0) -> None:
    now = time.time()
    assert run(r, "claim", [keys.job(JOB), keys.LEASES], [1, "tok", "w1", now, now + lease_s, JOB, "", "0"]) == ["ok"]


def kill(r: redis.Redis) -> None:
    now = time.time()
    assert run(r, "kill", [keys.job(JOB), keys.LEASES, keys.PENDING, keys.DLQ_INDEX, keys.dead_letter(JOB),
                           keys.STATS], ["tok", '{"history": []}', "poison", "boom", now, 60, JOB, 60, "", ""]) == "ok"


def state(r: redis.Redis) -> str | None:
    return r.hget(keys.job(JOB), "state")  # type: ignore[return-value]


def smoke_submit(r: redis.Redis) -> None:
    submit(r)
    assert state(r) == "queued" and r.llen(QUEUE) == 1
    assert run(r, "submit", [keys.job(JOB), keys.PENDING, QUEUE, keys.STATS, keys.EXPIRIES],
               ["{}", "{}", time.time(), JOB, QUEUE, "", ""]) == 0  # an existing job is left alone


def smoke_claim(r: redis.Redis) -> None:
    assert run(r, "claim", [keys.job(JOB), keys.LEASES], [1, "t", "w", 0, 10, JOB, "", "0"]) == ["missing"]
    submit(r)
    claim(r)
    assert state(r) == "running" and r.zscore(keys.LEASES, JOB)


def smoke_finish(r: redis.Redis) -> None:
    submit(r)
    claim(r)
    assert run(r, "finish", [keys.job(JOB), keys.LEASES, keys.PENDING, keys.STATS, keys.EXPIRIES],
               ["tok", '{"answer": "a"}', "primary", "0", time.time(), 60, JOB]) == "ok"
    assert state(r) == "succeeded" and r.zcard(keys.PENDING) == 0


def smoke_kill(r: redis.Redis) -> None:
    submit(r)
    claim(r)
    kill(r)
    assert state(r) == "dead" and r.get(keys.dead_letter(JOB)) == '{"history": []}'


def smoke_drop(r: redis.Redis) -> None:
    submit(r)
    claim(r)
    kill(r)
    assert run(r, "drop", [keys.job(JOB), keys.dead_letter(JOB), keys.DLQ_INDEX, keys.callback(JOB)], [JOB]) == 1
    assert not r.exists(keys.job(JOB), keys.dead_letter(JOB)) and r.zcard(keys.DLQ_INDEX) == 0


def smoke_replay(r: redis.Redis) -> None:
    submit(r)
    claim(r)
    kill(r)
    r.delete(QUEUE)
    assert run(r, "replay", [keys.job(JOB), QUEUE, keys.PENDING, keys.dead_letter(JOB), keys.DLQ_INDEX],
               [1, '{"m": 2}', time.time(), JOB, '{"question": "hi"}', time.time(), QUEUE, ""]) == "ok"
    assert state(r) == "queued" and r.lrange(QUEUE, 0, -1) == ['{"m": 2}']


def smoke_requeue(r: redis.Redis) -> None:
    submit(r)
    claim(r, lease_s=-1)  # a lease that has run out
    r.delete(QUEUE)
    assert run(r, "requeue", [keys.job(JOB), keys.LEASES, QUEUE, keys.RETRIES],
               [1, '{"m": 2}', time.time(), JOB, 2, "running", ""]) == "ok"
    assert state(r) == "queued" and r.hget(keys.job(JOB), "dispatch") == "2" and r.llen(QUEUE) == 1


def park(r: redis.Redis) -> None:
    submit(r)
    claim(r, lease_s=-1)
    assert run(r, "park", [keys.job(JOB), keys.LEASES, keys.PROBATION],
               [1, time.time(), JOB, 3, "[]", "lost"]) == "ok"


def smoke_park(r: redis.Redis) -> None:
    park(r)
    assert state(r) == "retrying" and r.zscore(keys.PROBATION, JOB)


def smoke_release(r: redis.Redis) -> None:
    park(r)
    assert run(r, "release", [keys.PROBATION, keys.PROBATION_RUNNING, keys.RETRIES, keys.job(JOB)],
               [JOB, time.time(), "1"]) == "ok"
    assert r.zscore(keys.RETRIES, JOB) and r.get(keys.PROBATION_RUNNING) == JOB


def smoke_defer(r: redis.Redis) -> None:
    submit(r)
    claim(r)
    assert run(r, "defer", [keys.job(JOB), keys.LEASES, keys.RETRIES],
               ["tok", time.time() + 5, time.time(), JOB, "429"]) == "ok"
    assert state(r) == "retrying" and r.zscore(keys.RETRIES, JOB)


def smoke_recover(r: redis.Redis) -> None:
    submit(r)
    r.delete(QUEUE)
    r.hset(broker_keys.UNACKED, "tag1", "[...]")
    assert run(r, "recover", settle_keys(keys.job(JOB), QUEUE),
               ["tag1", 1, '{"m": 2}', time.time()]) == "restored"
    assert r.llen(QUEUE) == 1 and not r.hexists(broker_keys.UNACKED, "tag1")


def smoke_restore_submission(r: redis.Redis) -> None:
    r.hset(broker_keys.UNACKED, "tag1", "[...]")
    assert run(r, "restore_submission", settle_keys(keys.job(JOB), QUEUE),
               ["tag1", '{"envelope": 1}']) == "restored"
    assert r.lrange(QUEUE, 0, -1) == ['{"envelope": 1}']


def callback_due(r: redis.Redis) -> str:
    """A job with a callback_url, finished: its delivery is due (the included callback hook)."""
    submit(r, {"question": "hi", "callback_url": "http://127.0.0.1/hook"})
    claim(r)
    assert run(r, "finish", [keys.job(JOB), keys.LEASES, keys.PENDING, keys.STATS, keys.EXPIRIES],
               ["tok", "{}", "primary", "0", time.time(), 60, JOB]) == "ok"
    [event] = r.zrange(keys.CALLBACKS_DUE, 0, -1)
    return str(event)


def smoke_callback_hook(r: redis.Redis) -> None:
    event = callback_due(r)
    assert r.hget(keys.callback(event), "job_id") == JOB
    assert json.loads(r.hget(keys.callback(event), "job") or "{}")["state"] == "succeeded"


def smoke_take_callbacks(r: redis.Redis) -> None:
    event = callback_due(r)
    [taken] = run(r, "take_callbacks", [keys.CALLBACKS_DUE], [time.time() + 1, time.time() + 30, "lease1", 10])
    assert taken[0] == event and taken[1] == JOB and taken[4] == 1


def smoke_settle_callback(r: redis.Redis) -> None:
    event = callback_due(r)
    run(r, "take_callbacks", [keys.CALLBACKS_DUE], [time.time() + 1, time.time() + 30, "lease1", 10])
    assert run(r, "settle_callback", [keys.CALLBACKS_DUE, keys.callback(event), keys.STATS, keys.DLQ_INDEX,
                                      keys.dead_letter(event)],
               [event, "lease1", "delivered", 0, "", "", time.time(), 60]) == "ok"
    assert not r.exists(keys.callback(event)) and r.zcard(keys.CALLBACKS_DUE) == 0


def smoke_redeliver(r: redis.Redis) -> None:
    args = [keys.callback("ev"), keys.CALLBACKS_DUE, keys.dead_letter("ev"), keys.DLQ_INDEX]
    assert run(r, "redeliver", args, ["ev", time.time(), ""]) == "gone"
    r.hset(keys.callback("ev"), mapping={"state": "dead", "dead_at": 1})
    assert run(r, "redeliver", args, ["ev", time.time(), ""]) == "ok"
    assert r.hget(keys.callback("ev"), "state") == "pending" and r.zscore(keys.CALLBACKS_DUE, "ev")


def smoke_cancel(r: redis.Redis) -> None:
    submit(r)
    cancel_keys = [keys.job(JOB), keys.PENDING, keys.LEASES, keys.RETRIES, keys.PROBATION, keys.EXPIRIES,
                   keys.STATS, keys.health_bucket(0)]
    assert run(r, "cancel", cancel_keys, [JOB, time.time(), 60, 60, keys.CANCELS]) == "cancelled"
    assert run(r, "cancel", cancel_keys, [JOB, time.time(), 60, 60, keys.CANCELS]) == "already_cancelled"


def smoke_expire(r: redis.Redis) -> None:
    submit(r, expires_at=f"{time.time() - 1:.6f}")
    assert run(r, "expire", [keys.job(JOB), keys.PENDING, keys.RETRIES, keys.PROBATION, keys.EXPIRIES, keys.STATS,
                             keys.health_bucket(0)], [JOB, time.time(), 60, 60]) == "expired"
    assert state(r) == "expired" and r.zcard(keys.EXPIRIES) == 0


def smoke_rate_acquire(r: redis.Redis) -> None:
    limit_keys = [keys.rate_requests("p"), keys.rate_tokens("p", 0)]
    now = time.time()
    assert run(r, "rate_acquire", limit_keys, [now, 1, 0, 10, "call1"]) == "0"
    assert 0 < float(run(r, "rate_acquire", limit_keys, [now, 1, 0, 10, "call2"])) <= 60  # one a minute


def smoke_breaker_allow(r: redis.Redis) -> None:
    allow_keys = [keys.breaker("p"), keys.STATS]
    assert run(r, "breaker_allow", allow_keys, [time.time(), 30, 5, "p"]) == "closed"
    r.hset(keys.breaker("p"), mapping={"state": "open", "opened_at": 0})
    assert run(r, "breaker_allow", allow_keys, [time.time(), 30, 5, "p"]) == "probe"
    assert run(r, "breaker_allow", allow_keys, [time.time(), 30, 5, "p"]) == "open"  # one probe only


def smoke_breaker_record(r: redis.Redis) -> None:
    record_keys = [keys.breaker("p"), keys.breaker_window("p"), keys.STATS]
    assert run(r, "breaker_record", record_keys, [time.time(), 1, 0, 10, 2, 0.5, "p"]) == "closed"
    assert run(r, "breaker_record", record_keys, [time.time(), 0, 0, 10, 2, 0.5, "p"]) == "open!"


def smoke_breaker_release(r: redis.Redis) -> None:
    assert run(r, "breaker_release", [keys.breaker("p")], []) == 0
    r.hset(keys.breaker("p"), mapping={"state": "half_open", "probe_until": time.time() + 60})
    assert run(r, "breaker_release", [keys.breaker("p")], []) == 1
    assert r.hget(keys.breaker("p"), "probe_until") == "0"


def smoke_tally(r: redis.Redis) -> None:
    assert run(r, "tally", ["h1", "h2"], ["i", 1, "jobs", 2, "f", 2, "secs", "0.5", "e", 2, "", 60]) == 3
    assert r.hget("h1", "jobs") == "2" and r.hget("h2", "secs") == "0.5" and 0 < r.ttl("h2") <= 60


def smoke_renew(r: redis.Redis) -> None:
    submit(r)
    claim(r)
    until = time.time() + 60
    assert run(r, "renew", [keys.LEASES], [until, keys.job(JOB), JOB, "tok"]) == [[], []]
    assert float(r.zscore(keys.LEASES, JOB) or 0) == pytest.approx(until)
    assert run(r, "renew", [keys.LEASES], [until, keys.job(JOB), JOB, "not-mine"]) == [[1], []]


def smoke_reaper_lock(r: redis.Redis) -> None:
    assert run(r, "reaper_lock", [keys.REAPER_LOCK], ["a", 5000]) == 1
    assert run(r, "reaper_lock", [keys.REAPER_LOCK], ["a", 5000]) == 1  # extended
    assert run(r, "reaper_lock", [keys.REAPER_LOCK], ["b", 5000]) == 0


SMOKE: dict[str, Callable[[redis.Redis], None]] = {
    name.removeprefix("smoke_"): fn for name, fn in globals().items() if name.startswith("smoke_")
}


@pytest.mark.parametrize("name", scripts.names())
def test_each_script_runs_on_its_own(name: str, r: redis.Redis) -> None:
    assert name in SMOKE, f"add a smoke call for {name}.lua to tests/test_lua.py"
    SMOKE[name](r)


def test_an_include_line_is_read_whatever_the_line_ends_and_a_bad_one_is_refused() -> None:
    # A checkout with CRLF line ends (git autocrlf on Windows, then a Docker build) or a trailing
    # space must not silently drop callback_hook.lua: the scripts would fail only when a job ends.
    for name in scripts.names():
        lua = scripts.text(name)
        assert scripts.included_by(lua.replace("\n", "\r\n")) == scripts.includes(name), name
        assert scripts.included_by(lua.replace("\n", " \n")) == scripts.includes(name), name
    assert scripts.includes("finish") == ["callback_hook"]
    with pytest.raises(LookupError, match=r"not a Lua script name: 'Callback-Hook'"):
        scripts.included_by("-- KEYS: none\n-- Includes: Callback-Hook\nreturn 1\n")
