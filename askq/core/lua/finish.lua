-- finish: stores a job's result, ending it succeeded.
-- KEYS: job, leases, pending, stats, expiries
-- ARGV: token, result, source, degraded, now, ttl, job_id
-- Returns: ok | late | dead | cancelled | lease_lost | missing
-- Includes: callback_hook
-- A cancelled job never gets a result: the write is refused (not a late write: the run was told
-- to stop, and may not have heard yet).
-- A stored result is final. The upgrade rule is that only the current lease holder may replace
-- a result, and a stored result has no lease holder: a late or resumed worker's answer (even a
-- better one than a stored degraded answer) is refused and counted as a late write, so an answer
-- a reader has seen never changes. The same token again is the writer retrying a write whose
-- reply it lost: ok, counted once.
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
