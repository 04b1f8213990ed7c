-- breaker_record: counts one call's outcome; a probe's decides the half-open breaker.
-- KEYS: breaker, window, stats
-- ARGV: now, ok ('1' or '0'), was_probe ('1' or '0'), window_s, min_requests, failure_rate, provider
-- Returns: the state after it (closed | open | half_open), with '!' appended when this outcome
--   changed it (closed! | open!).
local now = tonumber(ARGV[1])
local state = redis.call('HGET', KEYS[1], 'state') or 'closed'
if ARGV[3] == '1' then
  if state ~= 'half_open' then return state end
  if ARGV[2] == '1' then
    redis.call('HSET', KEYS[1], 'state', 'closed')
    redis.call('DEL', KEYS[2])
    redis.call('HINCRBY', KEYS[3], 'breaker_closed:' .. ARGV[7], 1)
    return 'closed!'
  end
  redis.call('HSET', KEYS[1], 'state', 'open', 'opened_at', now)
  redis.call('HINCRBY', KEYS[3], 'breaker_opened:' .. ARGV[7], 1)
  return 'open!'
end
if state ~= 'closed' then return state end
local sec = math.floor(now)
redis.call('HINCRBY', KEYS[2], sec .. (ARGV[2] == '1' and ':ok' or ':fail'), 1)
redis.call('EXPIRE', KEYS[2], math.ceil(tonumber(ARGV[4])) + 1)
if ARGV[2] == '1' then return 'closed' end
local oldest = sec - tonumber(ARGV[4])
local flat = redis.call('HGETALL', KEYS[2])
local ok, fail = 0, 0
for i = 1, #flat, 2 do
  local field = flat[i]
  local at = tonumber(string.match(field, '^(%d+)'))
  if at <= oldest then
    redis.call('HDEL', KEYS[2], field)
  elseif string.sub(field, -3) == ':ok' then
    ok = ok + tonumber(flat[i + 1])
  else
    fail = fail + tonumber(flat[i + 1])
  end
end
local total = ok + fail
if total >= tonumber(ARGV[5]) and fail / total >= tonumber(ARGV[6]) then
  redis.call('HSET', KEYS[1], 'state', 'open', 'opened_at', now)
  redis.call('HINCRBY', KEYS[3], 'breaker_opened:' .. ARGV[7], 1)
  return 'open!'
end
return 'closed'
