-- The shared counter of the per-user window limit (alerts_deliver.c, "rate
-- limit"). An alert already decided for a user (by another instance, or
-- earlier) keeps its decision, so a user connected to two instances is
-- counted once; the count first rises to the asking instance's own count
-- before this alert (its seed), which covers the alerts it let through by
-- itself.
-- KEYS: rate hash per user; ARGV: max, ttl, then the alert id per key, then
-- the seed per key. Returns 1 (deliver) or 0 (hold) per key.
local out = {}
local max = tonumber(ARGV[1])
for i, key in ipairs(KEYS) do
  local id = ARGV[2 + i]
  local d = redis.call('HGET', key, id)
  if not d then
    local n = tonumber(redis.call('HGET', key, '_n') or '0')
    n = math.max(n, tonumber(ARGV[2 + #KEYS + i])) + 1
    d = n <= max and '1' or '0'
    redis.call('HSET', key, '_n', n, id, d)
    redis.call('EXPIRE', key, ARGV[2])
  end
  out[i] = tonumber(d)
end
return out
