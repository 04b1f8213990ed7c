-- drop: deletes a dead letter (trimmed or purged) and, while it is still dead, its job.
-- KEYS: job, dlq_record, dlq_index, callback
-- ARGV: record id
-- Returns: 1
-- For a callback_failed record, the callback event goes with it instead of a job: the two come
-- and go together, so no id is dead in one view and unknown in the other.
redis.call('DEL', KEYS[2])
redis.call('ZREM', KEYS[3], ARGV[1])
if redis.call('HGET', KEYS[1], 'state') == 'dead' then redis.call('DEL', KEYS[1]) end
if KEYS[4] and redis.call('HGET', KEYS[4], 'state') == 'dead' then redis.call('DEL', KEYS[4]) end
return 1
