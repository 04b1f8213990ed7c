-- park: holds back a job whose lease expired at the poison cap without being the proven culprit.
-- KEYS: job, leases, probation
-- ARGV: expected dispatch, now, job_id, new delivery, losses, error
-- Returns: ok | changed | alive
-- The job always died alongside the same other job: it stays `retrying`, in no queue and no
-- retry schedule, until the reaper lets it out to run apart from the other parked jobs (release).
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
