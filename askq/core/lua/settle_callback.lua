-- settle_callback: settles one callback delivery attempt.
-- KEYS: callbacks_due, callback, stats, dlq_index, dlq_record
-- ARGV: id, token, outcome (delivered | dropped | retry | dead), due, error, record, now, dlq_ttl
-- Returns: ok | gone | lease_lost
-- Delivered (by anyone, lease or not) ends the event; retry and dead need the attempt's own
-- lease. Dead keeps the event (state dead, stamped on Redis's clock for replay's `newer` rule)
-- as long as its dead letter.
local h = redis.call('HMGET', KEYS[2], 'state', 'lease')
if not h[1] then
  redis.call('ZREM', KEYS[1], ARGV[1])
  return 'gone'
end
if ARGV[3] == 'delivered' or ARGV[3] == 'dropped' then
  if h[1] ~= 'pending' then return 'gone' end
  redis.call('DEL', KEYS[2])
  redis.call('ZREM', KEYS[1], ARGV[1])
  redis.call('HINCRBY', KEYS[3], 'callbacks_' .. ARGV[3], 1)
  return 'ok'
end
if h[1] ~= 'pending' or h[2] ~= ARGV[2] then return 'lease_lost' end
redis.call('HSET', KEYS[2], 'error', ARGV[5], 'lease', '')
if ARGV[3] == 'retry' then
  redis.call('ZADD', KEYS[1], ARGV[4], ARGV[1])
  redis.call('HINCRBY', KEYS[3], 'callbacks_retried', 1)
  return 'ok'
end
local t = redis.call('TIME')
redis.call('HSET', KEYS[2], 'state', 'dead', 'dead_at', t[1] + t[2] / 1000000)
redis.call('EXPIRE', KEYS[2], ARGV[8])
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('SET', KEYS[5], ARGV[6], 'EX', ARGV[8])
redis.call('ZADD', KEYS[4], ARGV[7], ARGV[1])
redis.call('HINCRBY', KEYS[3], 'callbacks_failed', 1)
return 'ok'
