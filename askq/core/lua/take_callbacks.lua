-- take_callbacks: takes up to `limit` due callback deliveries under a lease.
-- KEYS: callbacks_due (each delivery's hash is <CALLBACK> .. id, from askq/core/keys.py)
-- ARGV: now, lease_until, token, limit
-- Returns: {id, job_id, job snapshot, first, attempts} per delivery taken.
-- Each is pushed to lease_until in the due set (so no other worker takes it meanwhile; one whose
-- worker died is due again then) and its attempt counted.
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
