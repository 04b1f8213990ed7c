-- reaper_lock: takes the reaper lock, or extends it if the caller already holds it.
-- KEYS: lock
-- ARGV: holder, ttl_ms
-- Returns: 1 when the caller holds the lock, 0 when another holder does.
local holder = redis.call('GET', KEYS[1])
if holder == false then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
