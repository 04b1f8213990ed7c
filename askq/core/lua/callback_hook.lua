-- callback_hook: the Lua function `enqueue_callback(job key, job id, now)`, not a script of its own.
-- KEYS: none (its keys are named inside: <SEQ>, <CALLBACK>, <DUE>, from askq/core/keys.py)
-- ARGV: none (it takes its arguments as a Lua function)
-- Returns: nothing; it adds the job's completion callback delivery when the job has a callback_url.
-- Every script that makes a job terminal includes it (`-- Includes: callback_hook`) and calls it
-- once after the terminal write, so the callback is enqueued in the same atomic step and a
-- worker dying right after the write cannot lose it. The job as it is now (hash fields) is kept
-- with the delivery: the receiver is sent the terminal view even if the job moves on (replayed)
-- or expires before the callback gets through. A plain search first: a job without a callback
-- costs no JSON decode, no write. The key appears unescaped only as an object key; a false match
-- (e.g. a metadata key) is dropped by the worker.
local function enqueue_callback(job_key, job_id, now)
  local payload = redis.call('HGET', job_key, 'payload')
  if not payload or not string.find(payload, '"callback_url"', 1, true) then return end
  local all = redis.call('HGETALL', job_key)
  local job = {}
  for i = 1, #all, 2 do job[all[i]] = all[i + 1] end
  local id = 'msg_' .. job_id .. '_' .. redis.call('INCR', '<SEQ>')
  redis.call('HSET', '<CALLBACK>' .. id, 'job_id', job_id, 'job', cjson.encode(job), 'first', now,
             'attempts', 0, 'state', 'pending', 'lease', '')
  redis.call('ZADD', '<DUE>', now, id)
end
