-- submit: creates a job and enqueues its first message in one step.
-- KEYS: job, pending, queue, stats, expiries
-- ARGV: payload, message, now, job_id, queue name, expires_at ('' = none),
--   ttl_s ('' = none: expires_at is then Redis's clock now + ttl_s)
-- Returns: 1 when created, 0 when the job exists (it is left alone).
-- The queue is recorded: every later requeue (reaper, retry, replay) goes back to it.
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
