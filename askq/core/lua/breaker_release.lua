-- breaker_release: hands back a probe that never reached the provider: the next caller may probe at once.
-- KEYS: breaker
-- ARGV: none
-- Returns: 1 when a half-open probe was handed back, else 0.
if redis.call('HGET', KEYS[1], 'state') == 'half_open' then
  redis.call('HSET', KEYS[1], 'probe_until', 0)
  return 1
end
return 0
