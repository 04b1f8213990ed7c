-- defer: parks a job the caller holds until a durable retry is due, freeing the worker slot.
-- KEYS: job, leases, retries
-- ARGV: token, due, now, job_id, error
-- Returns: ok | cancelled | lease_lost
-- The same token again (a retry whose reply was lost) finds it parked by itself: ok, done once.
local h = redis.call('HMGET', KEYS[1], 'state', 'lease', 'ended_by')
if h[1] == 'retrying' and h[3] == ARGV[1] then return 'ok' end
if h[1] == 'cancelled' then return 'cancelled' end
if h[1] ~= 'running' or h[2] ~= ARGV[1] then return 'lease_lost' end
redis.call('HSET', KEYS[1], 'state', 'retrying', 'lease', '', 'updated', ARGV[3], 'error', ARGV[5],
           'ended_by', ARGV[1])
redis.call('HINCRBY', KEYS[1], 'retries', 1)
redis.call('ZREM', KEYS[2], ARGV[4])
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[4])
return 'ok'
