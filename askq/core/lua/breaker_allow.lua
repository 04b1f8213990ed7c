-- breaker_allow: may a caller call the provider? Decides the one half-open probe in the cluster.
-- KEYS: breaker, stats
-- ARGV: now, cooldown, probe_timeout, provider
-- Returns: closed | open | probe
local st = redis.call('HMGET', KEYS[1], 'state', 'opened_at', 'probe_until')
local state = st[1] or 'closed'
local now = tonumber(ARGV[1])
if state == 'closed' then return 'closed' end
if state == 'open' and now - tonumber(st[2] or '0') < tonumber(ARGV[2]) then return 'open' end
if state == 'half_open' and now < tonumber(st[3] or '0') then return 'open' end
redis.call('HSET', KEYS[1], 'state', 'half_open', 'probe_until', now + tonumber(ARGV[3]))
redis.call('HINCRBY', KEYS[2], 'breaker_probes:' .. ARGV[4], 1)
return 'probe'
