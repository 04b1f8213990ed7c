-- recover: settles a message kombu still holds as unacked (reserved by a worker) long after delivery.
-- KEYS: job, queue, unacked, unacked_index
-- ARGV: delivery tag, dispatch of that message, message for dispatch + 1, now
-- Returns: restored | dropped | running | gone
-- A job still queued at that dispatch was never claimed: its worker died or froze holding it,
-- so it is re-enqueued now instead of after kombu's visibility timeout (not a delivery: the
-- poison count is untouched). A job that moved on makes the entry stale: dropped. A job
-- running at that dispatch is left to its lease.
if redis.call('HEXISTS', KEYS[3], ARGV[1]) == 0 then
  redis.call('ZREM', KEYS[4], ARGV[1])
  return 'gone'
end
local h = redis.call('HMGET', KEYS[1], 'state', 'dispatch')
local same = tonumber(h[2] or '0') == tonumber(ARGV[2])
if h[1] == 'running' and same then return 'running' end
redis.call('HDEL', KEYS[3], ARGV[1])
redis.call('ZREM', KEYS[4], ARGV[1])
if h[1] == 'queued' and same and ARGV[3] ~= '' then
  redis.call('HSET', KEYS[1], 'dispatch', tonumber(ARGV[2]) + 1, 'updated', ARGV[4])
  redis.call('RPUSH', KEYS[2], ARGV[3])
  return 'restored'
end
return 'dropped'
