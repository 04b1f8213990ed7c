-- expire: ends a job not started by its expires_at (Redis's clock): queued or retrying -> expired.
-- KEYS: job, pending, retries, probation, expiries, stats, health bucket
-- ARGV: job_id, now, result ttl, health bucket ttl
-- Returns: expired | running | early | gone
-- Includes: callback_hook
-- A running job is not interrupted: looked at again once its lease would end (reclaimed, it is
-- not started again). One not due yet (another host's clock ran ahead) keeps its entry; one that
-- ended or is gone loses it.
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
