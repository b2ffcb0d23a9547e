-- Runs the fair-release waves that are due. Atomic, so of all instances
-- polling, exactly one runs each wave. The build puts history_base.lua,
-- history_add.lua and fair_wave.lua in front of it (alerts_fair.c runs it).
-- ARGV: prefix, factor, now ms, interval ms, ttl s.
-- Returns {waves run, users released, cycles stopped}.
local prefix, factor, now = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local due = redis.call('ZRANGEBYSCORE', prefix .. 'fair:due', '-inf', now, 'LIMIT', 0, 20)
local waves, released, stopped = 0, 0, 0
for _, pid in ipairs(due) do
  local fk = prefix .. 'fair:' .. pid
  local stock = tonumber(redis.call('GET', prefix .. 'stock:' .. pid) or '0')
  if redis.call('HGET', fk, 'active') ~= '1' or stock <= 0 then
    redis.call('ZREM', prefix .. 'fair:due', pid)
    redis.call('HSET', fk, 'active', '0')
    stopped = stopped + 1
  else
    released = released + fair_wave(prefix, pid, factor, stock, now, tonumber(ARGV[4]),
      tonumber(ARGV[5]), false)
    waves = waves + 1
  end
end
return {waves, released, stopped}
