-- redeliver: replays a callback_failed dead letter.
-- KEYS: callback, callbacks_due, dlq_record, dlq_index
-- ARGV: id, now, asked at (Redis clock; '' = any)
-- Returns: ok | not_dead | newer | gone
-- The same event (same webhook-id, same body) is due again at once with a fresh give-up window;
-- the job is not touched. Like replay, a replay replays the failure it was asked about, never a
-- newer one.
local h = redis.call('HMGET', KEYS[1], 'state', 'dead_at')
if not h[1] then return 'gone' end
if h[1] ~= 'dead' then return 'not_dead' end
if ARGV[3] ~= '' and tonumber(h[2] or '0') > tonumber(ARGV[3]) then return 'newer' end
redis.call('HSET', KEYS[1], 'state', 'pending', 'attempts', 0, 'first', ARGV[2], 'lease', '')
redis.call('PERSIST', KEYS[1])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
redis.call('DEL', KEYS[3])
redis.call('ZREM', KEYS[4], ARGV[1])
return 'ok'
