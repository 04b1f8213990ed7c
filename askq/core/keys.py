"""Every Redis key askq uses, in one place: the whole schema on one screen.

Kombu owns the broker keys (the queue list named by `Settings.queue`, `unacked`,
`unacked_index`, `_kombu.binding.*`): they are named in askq/broker/keys.py, with the rest of
what askq knows of kombu. Everything below is askq's own.
"""

from __future__ import annotations

PREFIX = "askq"


# HASH per job — owner: store (producers create, workers advance). Fields: state, payload,
# created, updated, queue (the queue it was submitted to; every requeue goes back there),
# dispatch (enqueue sequence), delivery (deliveries for the poison cap),
# lease, lease_until, worker, started, result, source, degraded, result_writes,
# late_writes (refused writes of runs that no longer held it), ended_by (token of the run whose
# result or durable retry ended its lease: a retried write is recognised),
# reason, error, attempts and dead_at (when dead), losses (JSON: per lost delivery, the worker
# and the jobs running alongside), probation (parked | released). The job id of an idempotency
# key is derived from the key, so this hash is also the idempotency record. TTL: result_ttl_s
# once succeeded, dlq_max_age_s once dead (as long as its dead letter).
def job(job_id: str) -> str:
    return f"{PREFIX}:job:{job_id}"


# ZSET job id -> lease expiry (epoch s) of running jobs — owner: workers (lease), reaper. No TTL.
LEASES = f"{PREFIX}:leases"

# ZSET job id -> due time (epoch s) of jobs waiting for a durable retry — owner: workers, reaper.
RETRIES = f"{PREFIX}:retries"

# ZSET job id -> parked time of jobs at the poison cap that always died alongside the same other
# job(s): each waits (state retrying) to run apart from the others — owner: reaper. No TTL.
PROBATION = f"{PREFIX}:probation"

# STRING id of the parked job now let out to run apart — owner: reaper. No TTL.
PROBATION_RUNNING = f"{PREFIX}:probation:running"

# ZSET job id -> created time of every job not yet terminal — owner: store. Lets `lost` be counted.
PENDING = f"{PREFIX}:pending"

# ZSET dead-letter id -> dead time — owner: deadletter. Trimmed by count and age.
DLQ_INDEX = f"{PREFIX}:dlq"


# STRING (JSON) dead-letter record — owner: deadletter. TTL: dlq_max_age_s.
def dead_letter(dlq_id: str) -> str:
    return f"{PREFIX}:dlq:{dlq_id}"


# ZSET worker name -> last heartbeat (epoch s) — owner: workers (heartbeat). No TTL; entries of
# workers silent past worker_retention_s (1 h) are removed by the reaper, with their hash.
WORKERS = f"{PREFIX}:workers"


# HASH worker details (pid, host, started, inflight, progress) — owner: heartbeat. TTL: 1 h.
def worker(name: str) -> str:
    return f"{PREFIX}:worker:{name}"


# STRING lock holder of the reaper duty — owner: reaper. TTL: a few reaper intervals.
REAPER_LOCK = f"{PREFIX}:reaper:lock"


# HASH breaker state per provider: state, opened_at, probe_until — owner: breaker. No TTL.
def breaker(provider: str) -> str:
    return f"{PREFIX}:breaker:{provider}"


# HASH per-second buckets {sec:ok, sec:fail} of a provider's recent calls — owner: breaker. TTL: window.
def breaker_window(provider: str) -> str:
    return f"{PREFIX}:breaker:{provider}:window"


# ZSET of request times in the last minute per provider — owner: ratelimit. TTL: 2 min.
def rate_requests(provider: str) -> str:
    return f"{PREFIX}:rate:{provider}:requests"


# STRING tokens spent per provider per minute — owner: ratelimit. TTL: 2 min.
def rate_tokens(provider: str, minute: int) -> str:
    return f"{PREFIX}:rate:{provider}:tokens:{minute}"


# STRING (JSON) cached answer — owner: cache. TTL: cache_ttl_s.
def cache(digest: str) -> str:
    return f"{PREFIX}:cache:{digest}"


# HASH named counters (attempts, retries, fallbacks, ...) — owner: stats. No TTL.
STATS = f"{PREFIX}:stats"


# HASH per 10 s bucket of outcome counters for health — owner: stats. TTL: 1 h.
def health_bucket(bucket: int) -> str:
    return f"{PREFIX}:health:{bucket}"


# HASH latency histograms: "<name>:<bucket upper bound>" -> count in that bucket (not cumulative),
# "<name>:sum", "<name>:count"; names queue_wait, run, end_to_end — owner: stats (workers write,
# metrics reads and makes the buckets cumulative at scrape time). No TTL.
LATENCY = f"{PREFIX}:latency"


# ZSET callback event id -> due time (epoch s) of completion callbacks still to deliver; a taken
# delivery's score is its lease expiry, so one whose worker died is due again after it —
# owner: scripts (a job's terminal write adds it), workers/callbacks (take, settle). No TTL.
CALLBACKS_DUE = f"{PREFIX}:callbacks:due"

# STRING counter numbering callback events, so a webhook-id is never reused (not even by a job
# submitted again under an expired idempotency key) — owner: scripts. No TTL.
CALLBACKS_SEQ = f"{PREFIX}:callbacks:seq"


# HASH per callback event (its id is the webhook-id): job_id, url, job (JSON snapshot of the job
# hash when it became terminal), body (the signed JSON, fixed at the first attempt), first
# (enqueue time), attempts, lease, error, state (pending | dead), dead_at — owner: scripts,
# workers/callbacks, deadletter (replay). No TTL while pending; dlq_max_age_s once dead.
def callback(event_id: str) -> str:
    return f"{PREFIX}:callback:{event_id}"

# ZSET job id -> expires_at (epoch s, Redis's clock) of jobs that carry one and are not terminal
# — owner: store (SUBMIT adds), scripts (FINISH, KILL, CANCEL, EXPIRE remove), reaper (sweeps
# due entries: expires queued and retrying jobs; a running one is looked at again when its lease
# ends). No TTL.
EXPIRIES = f"{PREFIX}:expiries"

# PUB/SUB channel: the id of every running job a producer cancelled (published by CANCEL) —
# owner: scripts; every worker listens and aborts its run of that job at once. The job hash's
# state is the durable record: lease renewal reports it to a worker that missed the message.
CANCELS = f"{PREFIX}:cancels"


# LIST (JSON) of console actions, newest first: who (token fingerprint), what, when, which ids
# and their outcomes — owner: producers/console. Trimmed to api.console.audit_records. No TTL.
CONSOLE_AUDIT = f"{PREFIX}:console:audit"


# STRING replays started from the console in one minute (all API processes) — owner:
# producers/console (api.console.replays_per_minute). TTL: 2 min.
def console_replays(minute: int) -> str:
    return f"{PREFIX}:console:replays:{minute}"


# STRING "1": a console session (its cookie's signature) that signed out, so no copy of the cookie
# works any more — owner: producers/console. TTL: the session's remaining time.
def console_signed_out(signature: str) -> str:
    return f"{PREFIX}:console:signedout:{signature}"
