-- claim: a worker takes a delivered job under a lease.
-- KEYS: job, leases
-- ARGV: dispatch, token, worker, now, lease_until, job_id, payload digest (sha1 of the message's
--   payload text, '' = unchecked), adopt ('1': token is a run of this worker still going, taking
--   back a lease reclaimed from it)
-- Returns: {status} or, when the message's payload differs from the stored one, {status, stored
--   payload}: the worker answers the stored job, never a message's copy of it. Status is
--   ok | missing | terminal | cancelled | expired | stale | busy.
-- A job past its expires_at (on Redis's clock) is not started: 'expired', and the caller ends it
-- (expire). Adoption is not a start: a run already going is never stopped by its expiry.
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
