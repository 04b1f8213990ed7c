-- release: lets a parked job out: due for a retry now (the reaper's retry sweep re-enqueues it).
-- KEYS: probation, probation_running, retries, job
-- ARGV: job_id, now, apart ('1' or '0')
-- Returns: ok | changed
-- One let out to run apart is remembered, so the next is let out only once it has ended; one
-- cleared (the job it always died with proved the poison) is not.
redis.call('ZREM', KEYS[1], ARGV[1])
if redis.call('HGET', KEYS[4], 'state') ~= 'retrying' then return 'changed' end
redis.call('HSET', KEYS[4], 'probation', 'released')
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[1])
if ARGV[3] == '1' then redis.call('SET', KEYS[2], ARGV[1]) end
return 'ok'
