-- renew: extends the leases this worker still holds.
-- KEYS: leases
-- ARGV: lease_until, then triples job_key, job_id, token
-- Returns: {lost, cancelled}: the (1-based) positions of the triples whose lease it has lost, and
--   of those whose job was cancelled (the run must stop: the durable way a worker learns of a
--   cancel whose message it missed).
-- A lease whose time ran out but that nobody reclaimed is still its holder's (a worker or Redis
-- that froze): renewed on resume. A renewal never shortens a lease, so one that reaches Redis
-- late (it waited out a freeze) cannot undo a newer one.
local lost, cancelled = {}, {}
for i = 2, #ARGV, 3 do
  local h = redis.call('HMGET', ARGV[i], 'state', 'lease', 'lease_until')
  if h[1] == 'running' and h[2] == ARGV[i + 2] then
    if tonumber(h[3] or '0') < tonumber(ARGV[1]) then
      redis.call('HSET', ARGV[i], 'lease_until', ARGV[1])
      redis.call('ZADD', KEYS[1], ARGV[1], ARGV[i + 1])
    end
  elseif h[1] == 'cancelled' then
    table.insert(cancelled, (i + 1) / 3)
  else
    table.insert(lost, (i + 1) / 3)
  end
end
return {lost, cancelled}
