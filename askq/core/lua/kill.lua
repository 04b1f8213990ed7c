-- kill: dead-letters a job.
-- KEYS: job, leases, pending, dlq_index, dlq_record, stats
-- ARGV: token ('' = any holder), record, reason, error, now, ttl, job_id, dlq_ttl,
--   expected state ('' = any), expected dispatch ('' = any)
-- Returns: ok | terminal | lease_lost | changed
-- Includes: callback_hook
-- Dead-letters a job the caller holds, or (token '') a job still in the state and dispatch the
-- caller saw; expecting 'running' also requires its lease to have expired, so the reaper never
-- kills a fresh claim or a worker that came back and renewed. A cancelled or expired job is
-- terminal: it never becomes a dead letter.
-- The job hash keeps the counts its view shows, taken from the record itself so the two agree:
-- attempts = the calls in the record's history (skipped tiers are not calls).
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
