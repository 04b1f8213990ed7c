-- restore_submission: settles an unacked submission from another service (a Celery send_task).
-- KEYS: job, queue, unacked, unacked_index
-- ARGV: delivery tag, the message envelope (JSON)
-- Returns: restored | dropped | gone
-- Such a message creates its job when a worker runs it. Its job exists: the worker created it
-- (with its own message) and died or froze before acking, so the entry is dropped. No job yet:
-- the worker never got that far, so the message goes back on its queue now, not after kombu's
-- visibility timeout. A copy run twice is one job (submit).
if redis.call('HEXISTS', KEYS[3], ARGV[1]) == 0 then
  redis.call('ZREM', KEYS[4], ARGV[1])
  return 'gone'
end
redis.call('HDEL', KEYS[3], ARGV[1])
redis.call('ZREM', KEYS[4], ARGV[1])
if redis.call('EXISTS', KEYS[1]) == 1 then return 'dropped' end
redis.call('RPUSH', KEYS[2], ARGV[2])
return 'restored'
