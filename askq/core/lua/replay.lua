-- replay: puts a dead job back on the queue.
-- KEYS: job, queue, pending, dlq_record, dlq_index
-- ARGV: expected dispatch, message (carrying dispatch + 1), now, job_id, payload, created, queue,
--   asked at (Redis clock; '' = any)
-- Returns: ok | not_dead | newer | changed
-- One that is no longer dead (already replayed) is left alone, and so is one that died again
-- after the replay was asked for: replaying a death replays that death only, however many
-- replays of it run at once ('newer').
local h = redis.call('HMGET', KEYS[1], 'state', 'dispatch', 'dead_at')
if h[1] and h[1] ~= 'dead' then return 'not_dead' end
if ARGV[8] ~= '' and tonumber(h[3] or '0') > tonumber(ARGV[8]) then return 'newer' end
if tonumber(h[2] or '0') ~= tonumber(ARGV[1]) then return 'changed' end
redis.call('HSET', KEYS[1], 'state', 'queued', 'dispatch', tonumber(ARGV[1]) + 1, 'delivery', 1,
           'updated', ARGV[3], 'reason', '', 'payload', ARGV[5])
redis.call('HDEL', KEYS[1], 'attempts', 'losses', 'probation')
redis.call('HSETNX', KEYS[1], 'created', ARGV[6])
redis.call('HSETNX', KEYS[1], 'queue', ARGV[7])
redis.call('PERSIST', KEYS[1])
redis.call('ZADD', KEYS[3], ARGV[6], ARGV[4])
redis.call('DEL', KEYS[4])
redis.call('ZREM', KEYS[5], ARGV[4])
redis.call('LPUSH', KEYS[2], ARGV[2])
return 'ok'
