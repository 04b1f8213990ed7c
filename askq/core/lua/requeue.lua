-- requeue: re-enqueues a job whose lease expired, whose durable retry is due or whose message is gone.
-- KEYS: job, leases, queue, retries
-- ARGV: expected dispatch, message, now, job_id, new delivery, expected state ('running' with an
--   expired lease, 'retrying' when due, or 'queued' when its message was lost in flight), losses
--   (JSON, '' = unchanged)
-- Returns: ok | changed | alive
-- Bumps dispatch. A job that changed meanwhile only loses index entries that no longer apply.
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
