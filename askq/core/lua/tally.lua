-- tally: a job's counters as one command (askq/workers/tally.py records what core.stats would queue).
-- KEYS: the hashes touched
-- ARGV: quadruples op, key index, field, amount; op: i = HINCRBY, f = HINCRBYFLOAT,
--   e = EXPIRE (field unused, amount = seconds)
-- Returns: the number of commands replayed.
for i = 1, #ARGV, 4 do
  local op, key = ARGV[i], KEYS[tonumber(ARGV[i + 1])]
  if op == 'i' then
    redis.call('HINCRBY', key, ARGV[i + 2], ARGV[i + 3])
  elseif op == 'f' then
    redis.call('HINCRBYFLOAT', key, ARGV[i + 2], ARGV[i + 3])
  else
    redis.call('EXPIRE', key, ARGV[i + 3])
  end
end
return #ARGV / 4
