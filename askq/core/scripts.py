"""Lua scripts that move a job between states atomically.

Each transition checks what it expects (state, dispatch number, lease token) and does
nothing otherwise, so redelivered, replayed, reclaimed or late work can never write twice.
"""

from __future__ import annotations

from askq.core import keys


# A Lua function every script that makes a job terminal starts with; its one line
# `enqueue_callback(job key, job id, now)` after the terminal write enqueues the job's completion
# callback in the same atomic step, so a worker dying right after the write cannot lose it. The
# job as it is now (hash fields) is kept with the delivery: the receiver is sent the terminal
# view even if the job moves on (replayed) or expires before the callback gets through.
# A plain search first: a job without a callback costs no JSON decode, no write. The key appears
# unescaped only as an object key; a false match (e.g. a metadata key) is dropped by the worker.
def _named(lua: str, **names: str) -> str:
    """Lua with <NAME> placeholders replaced by key names from askq/core/keys.py."""
    for name, value in names.items():
        lua = lua.replace(f"<{name}>", value)
    return lua


CALLBACK_HOOK = _named("""
local function enqueue_callback(job_key, job_id, now)
  local payload = redis.call('HGET', job_key, 'payload')
  if not payload or not string.find(payload, '"callback_url"', 1, true) then return end
  local all = redis.call('HGETALL', job_key)
  local job = {}
  for i = 1, #all, 2 do job[all[i]] = all[i + 1] end
  local id = 'msg_' .. job_id .. '_' .. redis.call('INCR', '<SEQ>')
  redis.call('HSET', '<CALLBACK>' .. id, 'job_id', job_id, 'job', cjson.encode(job), 'first', now,
             'attempts', 0, 'state', 'pending', 'lease', '')
  redis.call('ZADD', '<DUE>', now, id)
end
""", SEQ=keys.CALLBACKS_SEQ, CALLBACK=keys.callback(""), DUE=keys.CALLBACKS_DUE)

# KEYS: job, pending, queue, stats, expiries   ARGV: payload, message, now, job_id, queue name,
#   expires_at ('' = none), ttl_s ('' = none: expires_at is then Redis's clock now + ttl_s)
# Creates the job and enqueues its first message in one step; an existing job is left alone.
# The queue is recorded: every later requeue (reaper, retry, replay) goes back to it.
SUBMIT = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'state', 'queued', 'payload', ARGV[1], 'created', ARGV[3],
           'updated', ARGV[3], 'dispatch', 1, 'delivery', 1, 'queue', ARGV[5])
local expires = ARGV[6] or ''
if (ARGV[7] or '') ~= '' then
  local t = redis.call('TIME')
  expires = string.format('%.6f', t[1] + t[2] / 1000000 + tonumber(ARGV[7]))
end
if expires ~= '' then
  redis.call('HSET', KEYS[1], 'expires_at', expires)
  redis.call('ZADD', KEYS[5], expires, ARGV[4])
end
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4])
redis.call('LPUSH', KEYS[3], ARGV[2])
redis.call('HINCRBY', KEYS[4], 'submitted', 1)
return 1
"""

# KEYS: job, leases   ARGV: dispatch, token, worker, now, lease_until, job_id, payload digest
#   (sha1 of the message's payload text, '' = unchecked), adopt ('1': token is a run of this
#   worker still going, taking back a lease reclaimed from it)
# Returns {status} or, when the message's payload differs from the stored one, {status, stored
# payload}: the worker answers the stored job, never a message's copy of it. Status is
# ok | missing | terminal | cancelled | expired | stale | busy. A job past its expires_at (on
# Redis's clock) is not started: 'expired', and the caller ends it (EXPIRE). Adoption is not a
# start: a run already going is never stopped by its expiry.
CLAIM = """
local h = redis.call('HMGET', KEYS[1], 'state', 'dispatch', 'lease_until', 'lease', 'delivery', 'payload',
                     'expires_at')
local state = h[1]
if not state then return {'missing'} end
if state == 'cancelled' or state == 'expired' then return {state} end
if state == 'succeeded' or state == 'dead' then return {'terminal'} end
if tonumber(h[2]) ~= tonumber(ARGV[1]) or state == 'retrying' then return {'stale'} end
-- The same token again is this caller retrying a claim whose reply it lost: it holds the job.
local mine = h[4] == ARGV[2]
if state == 'running' and not mine and tonumber(h[3] or '0') > tonumber(ARGV[4]) then return {'busy'} end
if h[7] and not mine and ARGV[8] ~= '1' then
  local t = redis.call('TIME')
  if tonumber(h[7]) <= t[1] + t[2] / 1000000 then return {'expired'} end
end
redis.call('HSET', KEYS[1], 'state', 'running', 'lease', ARGV[2], 'lease_until', ARGV[5],
           'worker', ARGV[3], 'updated', ARGV[4])
if ARGV[8] == '1' then
  -- The run never stopped: the delivery that was counted when its lease was reclaimed is
  -- taken back, so a worker's own live run never counts toward the poison cap.
  if state == 'queued' and tonumber(h[5] or '1') > 1 then redis.call('HINCRBY', KEYS[1], 'delivery', -1) end
else
  redis.call('HSET', KEYS[1], 'started', ARGV[4])
end
redis.call('ZADD', KEYS[2], ARGV[5], ARGV[6])
if ARGV[7] ~= '' and h[6] and redis.sha1hex(h[6]) ~= ARGV[7] then return {'ok', h[6]} end
return {'ok'}
"""

# KEYS: job, leases, pending, stats, expiries   ARGV: token, result, source, degraded, now, ttl, job_id
# Returns ok | late | dead | cancelled | lease_lost | missing. A cancelled job never gets a
# result: the write is refused (not a late write: the run was told to stop, and may not have
# heard yet).
# A stored result is final. The upgrade rule is that only the current lease holder may replace
# a result, and a stored result has no lease holder: a late or resumed worker's answer (even a
# better one than a stored degraded answer) is refused and counted as a late write, so an answer
# a reader has seen never changes. The same token again is the writer retrying a write whose
# reply it lost: ok, counted once.
FINISH = CALLBACK_HOOK + """
local h = redis.call('HMGET', KEYS[1], 'state', 'lease', 'ended_by', 'expires_at')
local state = h[1]
if not state then return 'missing' end
if state == 'succeeded' and h[3] == ARGV[1] then return 'ok' end
if state == 'cancelled' then return 'cancelled' end
if state ~= 'running' or h[2] ~= ARGV[1] then
  redis.call('HINCRBY', KEYS[1], 'late_writes', 1)
  redis.call('HINCRBY', KEYS[4], 'late_writes', 1)
  if state == 'succeeded' then return 'late' end
  if state == 'dead' then return 'dead' end
  return 'lease_lost'
end
redis.call('HSET', KEYS[1], 'state', 'succeeded', 'result', ARGV[2], 'source', ARGV[3],
           'degraded', ARGV[4], 'updated', ARGV[5], 'lease', '', 'ended_by', ARGV[1])
redis.call('HINCRBY', KEYS[1], 'result_writes', 1)
redis.call('ZREM', KEYS[2], ARGV[7])
redis.call('ZREM', KEYS[3], ARGV[7])
redis.call('EXPIRE', KEYS[1], ARGV[6])
redis.call('HINCRBY', KEYS[4], 'succeeded', 1)
redis.call('HINCRBY', KEYS[4], 'source:' .. ARGV[3], 1)
if h[4] and KEYS[5] then redis.call('ZREM', KEYS[5], ARGV[7]) end
enqueue_callback(KEYS[1], ARGV[7], ARGV[5])
return 'ok'
"""

# KEYS: job, leases, pending, dlq_index, dlq_record, stats
# ARGV: token ('' = any holder), record, reason, error, now, ttl, job_id, dlq_ttl,
#   expected state ('' = any), expected dispatch ('' = any)
# Dead-letters a job the caller holds, or (token '') a job still in the state and dispatch the
# caller saw; expecting 'running' also requires its lease to have expired, so the reaper never
# kills a fresh claim or a worker that came back and renewed. Returns ok | terminal | lease_lost
# | changed. A cancelled or expired job is terminal: it never becomes a dead letter.
# The job hash keeps the counts its view shows, taken from the record itself so the two agree:
# attempts = the calls in the record's history (skipped tiers are not calls).
KILL = CALLBACK_HOOK + """
local h = redis.call('HMGET', KEYS[1], 'state', 'lease', 'dispatch', 'lease_until')
local state = h[1]
if state == 'succeeded' or state == 'dead' or state == 'cancelled' or state == 'expired' then return 'terminal' end
if ARGV[1] ~= '' and (state ~= 'running' or h[2] ~= ARGV[1]) then return 'lease_lost' end
if ARGV[9] ~= '' and state ~= ARGV[9] then return 'changed' end
if ARGV[10] ~= '' and tonumber(h[3] or '0') ~= tonumber(ARGV[10]) then return 'changed' end
if ARGV[9] == 'running' and tonumber(h[4] or '0') > tonumber(ARGV[5]) then return 'changed' end
if state then
  local attempts = 0
  local decoded, record = pcall(cjson.decode, ARGV[2])
  if decoded and type(record) == 'table' and type(record.history) == 'table' then
    for _, entry in ipairs(record.history) do
      -- Calls only: a provider's attempt, not a skipped tier nor a lost delivery (poison).
      if type(entry) == 'table' and entry.provider and entry.outcome ~= 'skipped' then
        attempts = attempts + 1
      end
    end
  end
  -- The moment of death on Redis's clock, one clock for every host: a replay asked for
  -- before it must not replay this newer death (REPLAY).
  local t = redis.call('TIME')
  redis.call('HSET', KEYS[1], 'state', 'dead', 'reason', ARGV[3], 'error', ARGV[4],
             'updated', ARGV[5], 'lease', '', 'attempts', attempts,
             'dead_at', t[1] + t[2] / 1000000)
  -- A dead job lives exactly as long as its dead letter (not result_ttl): until then its
  -- idempotency key names this dead job, and list, show, status and replay agree about it.
  redis.call('EXPIRE', KEYS[1], ARGV[8])
  enqueue_callback(KEYS[1], ARGV[7], ARGV[5])
end
redis.call('ZREM', KEYS[2], ARGV[7])
redis.call('ZREM', KEYS[3], ARGV[7])
redis.call('SET', KEYS[5], ARGV[2], 'EX', ARGV[8])
redis.call('ZADD', KEYS[4], ARGV[5], ARGV[7])
redis.call('HINCRBY', KEYS[6], 'dead', 1)
redis.call('HINCRBY', KEYS[6], 'dead:' .. ARGV[3], 1)
return 'ok'
"""

# KEYS: job, dlq_record, dlq_index, callback   ARGV: record id
# Drops a dead letter (trimmed or purged) and, while it is still dead, its job (or, for a
# callback_failed record, its callback event): the two come and go together, so no id is dead in
# one view and unknown in the other.
DROP = """
redis.call('DEL', KEYS[2])
redis.call('ZREM', KEYS[3], ARGV[1])
if redis.call('HGET', KEYS[1], 'state') == 'dead' then redis.call('DEL', KEYS[1]) end
if KEYS[4] and redis.call('HGET', KEYS[4], 'state') == 'dead' then redis.call('DEL', KEYS[4]) end
return 1
"""

# KEYS: job, leases, queue, retries   ARGV: expected dispatch, message, now, job_id, new delivery,
#   expected state ('running' with an expired lease, 'retrying' when due, or 'queued' when its
#   message was lost in flight), losses (JSON, '' = unchanged)
# Re-enqueues a job whose lease expired, whose durable retry is due or whose message is gone;
# bumps dispatch. A job that changed meanwhile only loses index entries that no longer apply.
REQUEUE = """
local h = redis.call('HMGET', KEYS[1], 'state', 'dispatch', 'lease_until')
if h[1] ~= ARGV[6] or tonumber(h[2]) ~= tonumber(ARGV[1]) then
  if h[1] ~= 'running' then redis.call('ZREM', KEYS[2], ARGV[4]) end
  if h[1] ~= 'retrying' then redis.call('ZREM', KEYS[4], ARGV[4]) end
  return 'changed'
end
if h[1] == 'running' and tonumber(h[3] or '0') > tonumber(ARGV[3]) then return 'alive' end
redis.call('HSET', KEYS[1], 'state', 'queued', 'dispatch', tonumber(ARGV[1]) + 1,
           'delivery', ARGV[5], 'updated', ARGV[3], 'lease', '')
if ARGV[7] and ARGV[7] ~= '' then redis.call('HSET', KEYS[1], 'losses', ARGV[7]) end
redis.call('ZREM', KEYS[2], ARGV[4])
redis.call('ZREM', KEYS[4], ARGV[4])
if ARGV[6] == 'retrying' then
  redis.call('LPUSH', KEYS[3], ARGV[2])
else
  -- A reclaimed or lost job already waited its turn: it goes to the end served next (BRPOP).
  redis.call('RPUSH', KEYS[3], ARGV[2])
end
return 'ok'
"""

# KEYS: job, leases, probation   ARGV: expected dispatch, now, job_id, new delivery, losses, error
# Parks a job whose lease expired at the poison cap without being the proven culprit (it always
# died alongside the same other job): `retrying`, in no queue and no retry schedule, until the
# reaper lets it out to run apart from the other parked jobs (RELEASE). Returns ok | changed | alive.
PARK = """
local h = redis.call('HMGET', KEYS[1], 'state', 'dispatch', 'lease_until')
if h[1] ~= 'running' or tonumber(h[2]) ~= tonumber(ARGV[1]) then
  if h[1] ~= 'running' then redis.call('ZREM', KEYS[2], ARGV[3]) end
  return 'changed'
end
if tonumber(h[3] or '0') > tonumber(ARGV[2]) then return 'alive' end
redis.call('HSET', KEYS[1], 'state', 'retrying', 'delivery', ARGV[4], 'losses', ARGV[5],
           'updated', ARGV[2], 'lease', '', 'error', ARGV[6], 'probation', 'parked')
redis.call('ZREM', KEYS[2], ARGV[3])
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[3])
return 'ok'
"""

# KEYS: probation, probation_running, retries, job   ARGV: job_id, now, apart ('1' or '0')
# Lets a parked job out: due for a retry now (the reaper's retry sweep re-enqueues it). One let
# out to run apart is remembered, so the next is let out only once it has ended; one cleared
# (the job it always died with proved the poison) is not.
RELEASE = """
redis.call('ZREM', KEYS[1], ARGV[1])
if redis.call('HGET', KEYS[4], 'state') ~= 'retrying' then return 'changed' end
redis.call('HSET', KEYS[4], 'probation', 'released')
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[1])
if ARGV[3] == '1' then redis.call('SET', KEYS[2], ARGV[1]) end
return 'ok'
"""

# KEYS: job, leases, retries   ARGV: token, due, now, job_id, error
# Parks a job the caller holds until a durable retry is due, freeing the worker slot. The same
# token again (a retry whose reply was lost) finds it parked by itself: ok, done once. Returns
# ok | cancelled | lease_lost.
DEFER = """
local h = redis.call('HMGET', KEYS[1], 'state', 'lease', 'ended_by')
if h[1] == 'retrying' and h[3] == ARGV[1] then return 'ok' end
if h[1] == 'cancelled' then return 'cancelled' end
if h[1] ~= 'running' or h[2] ~= ARGV[1] then return 'lease_lost' end
redis.call('HSET', KEYS[1], 'state', 'retrying', 'lease', '', 'updated', ARGV[3], 'error', ARGV[5],
           'ended_by', ARGV[1])
redis.call('HINCRBY', KEYS[1], 'retries', 1)
redis.call('ZREM', KEYS[2], ARGV[4])
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[4])
return 'ok'
"""

# KEYS: job, queue, pending, dlq_record, dlq_index
# ARGV: expected dispatch, message (carrying dispatch + 1), now, job_id, payload, created, queue,
#   asked at (Redis clock; '' = any)
# Puts a dead job back on the queue; one that is no longer dead (already replayed) is left alone,
# and so is one that died again after the replay was asked for: replaying a death replays that
# death only, however many replays of it run at once (returns 'newer').
REPLAY = """
local h = redis.call('HMGET', KEYS[1], 'state', 'dispatch', 'dead_at')
if h[1] and h[1] ~= 'dead' then return 'not_dead' end
if ARGV[8] ~= '' and tonumber(h[3] or '0') > tonumber(ARGV[8]) then return 'newer' end
if tonumber(h[2] or '0') ~= tonumber(ARGV[1]) then return 'changed' end
redis.call('HSET', KEYS[1], 'state', 'queued', 'dispatch', tonumber(ARGV[1]) + 1, 'delivery', 1,
           'updated', ARGV[3], 'reason', '', 'payload', ARGV[5])
redis.call('HDEL', KEYS[1], 'attempts', 'losses', 'probation')
redis.call('HSETNX', KEYS[1], 'created', ARGV[6])
redis.call('HSETNX', KEYS[1], 'queue', ARGV[7])
redis.call('PERSIST', KEYS[1])
redis.call('ZADD', KEYS[3], ARGV[6], ARGV[4])
redis.call('DEL', KEYS[4])
redis.call('ZREM', KEYS[5], ARGV[4])
redis.call('LPUSH', KEYS[2], ARGV[2])
return 'ok'
"""

# KEYS: job, queue, unacked, unacked_index   ARGV: delivery tag, dispatch of that message,
#   message for dispatch + 1, now
# Settles a message kombu still holds as unacked (reserved by a worker) long after delivery.
# A job still queued at that dispatch was never claimed: its worker died or froze holding it,
# so it is re-enqueued now instead of after kombu's visibility timeout (not a delivery: the
# poison count is untouched). A job that moved on makes the entry stale: dropped. A job
# running at that dispatch is left to its lease. Returns restored | dropped | running | gone.
RECOVER = """
if redis.call('HEXISTS', KEYS[3], ARGV[1]) == 0 then
  redis.call('ZREM', KEYS[4], ARGV[1])
  return 'gone'
end
local h = redis.call('HMGET', KEYS[1], 'state', 'dispatch')
local same = tonumber(h[2] or '0') == tonumber(ARGV[2])
if h[1] == 'running' and same then return 'running' end
redis.call('HDEL', KEYS[3], ARGV[1])
redis.call('ZREM', KEYS[4], ARGV[1])
if h[1] == 'queued' and same and ARGV[3] ~= '' then
  redis.call('HSET', KEYS[1], 'dispatch', tonumber(ARGV[2]) + 1, 'updated', ARGV[4])
  redis.call('RPUSH', KEYS[2], ARGV[3])
  return 'restored'
end
return 'dropped'
"""

# KEYS: job, queue, unacked, unacked_index   ARGV: delivery tag, the message envelope (JSON)
# Settles a submission from another service (a Celery send_task, which creates its job when a
# worker runs it) that kombu still holds as unacked long after delivery. Its job exists: the
# worker created it (with its own message) and died or froze before acking, so the entry is
# dropped. No job yet: the worker never got that far, so the message goes back on its queue now,
# not after kombu's visibility timeout. A copy run twice is one job (SUBMIT). Returns restored |
# dropped | gone.
RESTORE_SUBMISSION = """
if redis.call('HEXISTS', KEYS[3], ARGV[1]) == 0 then
  redis.call('ZREM', KEYS[4], ARGV[1])
  return 'gone'
end
redis.call('HDEL', KEYS[3], ARGV[1])
redis.call('ZREM', KEYS[4], ARGV[1])
if redis.call('EXISTS', KEYS[1]) == 1 then return 'dropped' end
redis.call('RPUSH', KEYS[2], ARGV[2])
return 'restored'
"""

# KEYS: callbacks_due   ARGV: now, lease_until, token, limit
# Takes up to `limit` due callback deliveries under a lease: each is pushed to lease_until in
# the due set (so no other worker takes it meanwhile; one whose worker died is due again then)
# and its attempt counted. Returns {id, job_id, job snapshot, first, attempts} per delivery.
TAKE_CALLBACKS = _named("""
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[4]))
local taken = {}
for _, id in ipairs(ids) do
  local key = '<CALLBACK>' .. id
  local h = redis.call('HMGET', key, 'state', 'job_id', 'job', 'first')
  if h[1] ~= 'pending' then
    redis.call('ZREM', KEYS[1], id)
  else
    redis.call('ZADD', KEYS[1], ARGV[2], id)
    redis.call('HSET', key, 'lease', ARGV[3])
    local attempts = redis.call('HINCRBY', key, 'attempts', 1)
    table.insert(taken, {id, h[2], h[3], h[4], attempts})
  end
end
return taken
""", CALLBACK=keys.callback(""))

# KEYS: callbacks_due, callback, stats, dlq_index, dlq_record
# ARGV: id, token, outcome (delivered | dropped | retry | dead), due, error, record, now, dlq_ttl
# Settles one attempt. Delivered (by anyone, lease or not) ends the event; retry and dead need
# the attempt's own lease. Dead keeps the event (state dead, stamped on Redis's clock for
# replay's `newer` rule) as long as its dead letter. Returns ok | gone | lease_lost.
SETTLE_CALLBACK = """
local h = redis.call('HMGET', KEYS[2], 'state', 'lease')
if not h[1] then
  redis.call('ZREM', KEYS[1], ARGV[1])
  return 'gone'
end
if ARGV[3] == 'delivered' or ARGV[3] == 'dropped' then
  if h[1] ~= 'pending' then return 'gone' end
  redis.call('DEL', KEYS[2])
  redis.call('ZREM', KEYS[1], ARGV[1])
  redis.call('HINCRBY', KEYS[3], 'callbacks_' .. ARGV[3], 1)
  return 'ok'
end
if h[1] ~= 'pending' or h[2] ~= ARGV[2] then return 'lease_lost' end
redis.call('HSET', KEYS[2], 'error', ARGV[5], 'lease', '')
if ARGV[3] == 'retry' then
  redis.call('ZADD', KEYS[1], ARGV[4], ARGV[1])
  redis.call('HINCRBY', KEYS[3], 'callbacks_retried', 1)
  return 'ok'
end
local t = redis.call('TIME')
redis.call('HSET', KEYS[2], 'state', 'dead', 'dead_at', t[1] + t[2] / 1000000)
redis.call('EXPIRE', KEYS[2], ARGV[8])
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('SET', KEYS[5], ARGV[6], 'EX', ARGV[8])
redis.call('ZADD', KEYS[4], ARGV[7], ARGV[1])
redis.call('HINCRBY', KEYS[3], 'callbacks_failed', 1)
return 'ok'
"""

# KEYS: callback, callbacks_due, dlq_record, dlq_index   ARGV: id, now, asked at (Redis clock; '' = any)
# Replays a callback_failed dead letter: the same event (same webhook-id, same body) is due
# again at once with a fresh give-up window; the job is not touched. Like REPLAY, a replay
# replays the failure it was asked about, never a newer one. Returns ok | not_dead | newer | gone.
REDELIVER = """
local h = redis.call('HMGET', KEYS[1], 'state', 'dead_at')
if not h[1] then return 'gone' end
if h[1] ~= 'dead' then return 'not_dead' end
if ARGV[3] ~= '' and tonumber(h[2] or '0') > tonumber(ARGV[3]) then return 'newer' end
redis.call('HSET', KEYS[1], 'state', 'pending', 'attempts', 0, 'first', ARGV[2], 'lease', '')
redis.call('PERSIST', KEYS[1])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
redis.call('DEL', KEYS[3])
redis.call('ZREM', KEYS[4], ARGV[1])
return 'ok'
"""

# KEYS: job, pending, leases, retries, probation, expiries, stats, health bucket
# ARGV: job_id, now, result ttl, health bucket ttl, cancels channel
# Cancels a job that has not ended: its state becomes cancelled at once (durable, seen by every
# worker), it leaves every index, so no run starts (CLAIM refuses it, the reaper drops its retry)
# and none stores a result (FINISH refuses it). A running job's id is published, so the worker
# running it aborts its provider call now. Returns cancelled, or already_<state> for a job that
# ended first (a cancel that lost the race with a result says so), or missing.
CANCEL = CALLBACK_HOOK + """
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return 'missing' end
if state == 'succeeded' or state == 'dead' or state == 'cancelled' or state == 'expired' then
  return 'already_' .. state
end
local t = redis.call('TIME')
redis.call('HSET', KEYS[1], 'state', 'cancelled', 'updated', ARGV[2], 'lease', '',
           'ended_at', t[1] + t[2] / 1000000, 'cancelled_from', state)
for i = 2, 6 do redis.call('ZREM', KEYS[i], ARGV[1]) end
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('HINCRBY', KEYS[7], 'cancelled', 1)
redis.call('HINCRBYFLOAT', KEYS[8], 'cancelled', 1)
redis.call('EXPIRE', KEYS[8], ARGV[4])
if state == 'running' then redis.call('PUBLISH', ARGV[5], ARGV[1]) end
enqueue_callback(KEYS[1], ARGV[1], ARGV[2])
return 'cancelled'
"""

# KEYS: job, pending, retries, probation, expiries, stats, health bucket
# ARGV: job_id, now, result ttl, health bucket ttl
# Ends a job not started by its expires_at (Redis's clock): queued or retrying -> expired. A
# running job is not interrupted: looked at again once its lease would end (reclaimed, it is not
# started again). One not due yet (another host's clock ran ahead) keeps its entry; one that
# ended or is gone loses it. Returns expired | running | early | gone.
EXPIRE = CALLBACK_HOOK + """
local h = redis.call('HMGET', KEYS[1], 'state', 'expires_at', 'lease_until')
local state = h[1]
if not h[2] or not (state == 'queued' or state == 'retrying' or state == 'running') then
  redis.call('ZREM', KEYS[5], ARGV[1])
  return 'gone'
end
local t = redis.call('TIME')
local now = t[1] + t[2] / 1000000
if tonumber(h[2]) > now then return 'early' end
if state == 'running' then
  redis.call('ZADD', KEYS[5], math.max(tonumber(h[3] or '0'), now) + 1, ARGV[1])
  return 'running'
end
redis.call('HSET', KEYS[1], 'state', 'expired', 'updated', ARGV[2], 'lease', '', 'ended_at', now,
           'error', 'not started before expires_at')
for i = 2, 5 do redis.call('ZREM', KEYS[i], ARGV[1]) end
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('HINCRBY', KEYS[6], 'expired', 1)
redis.call('HINCRBYFLOAT', KEYS[7], 'expired', 1)
redis.call('EXPIRE', KEYS[7], ARGV[4])
enqueue_callback(KEYS[1], ARGV[1], ARGV[2])
return 'expired'
"""
