-- cancel: cancels a job that has not ended.
-- KEYS: job, pending, leases, retries, probation, expiries, stats, health bucket
-- ARGV: job_id, now, result ttl, health bucket ttl, cancels channel
-- Returns: cancelled, already_<state> for a job that ended first (a cancel that lost the race
--   with a result says so), or missing.
-- Includes: callback_hook
-- Its state becomes cancelled at once (durable, seen by every worker), it leaves every index, so
-- no run starts (claim refuses it, the reaper drops its retry) and none stores a result (finish
-- refuses it). A running job's id is published, so the worker running it aborts its provider
-- call now.
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
