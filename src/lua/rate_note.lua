-- Hands an instance's count of a user's window to the shared counter (it
-- keeps the larger): when the user's last socket there closes, for the
-- instance the user turns up at next, or when another instance joins the
-- user. KEYS: rate hash; ARGV: count, ttl.
if tonumber(redis.call('HGET', KEYS[1], '_n') or '0') < tonumber(ARGV[1]) then
  redis.call('HSET', KEYS[1], '_n', ARGV[1])
  redis.call('EXPIRE', KEYS[1], ARGV[2])
end
return 0
