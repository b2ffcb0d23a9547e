-- A user's subscriptions for the roster (alerts_roster.c): every
-- subscription hash of the user in one call, so the load costs one round
-- trip whatever the count; then the user's count in the current rate window,
-- and how many other instances have the user online.
-- KEYS: subscription hash prefix, rate hash, presence set;
-- ARGV: this instance, then the product ids.
-- The HMGET's fields and their order are what subs_hash_parse() (subs.c, the
-- one reader of the subscription hash) takes.
local out = {}
for i = 2, #ARGV do
  out[i - 1] = redis.call('HMGET', KEYS[1] .. ARGV[i], 'kinds', 'threshold', 'created',
                          'active')
end
out[#ARGV] = redis.call('HGET', KEYS[2], '_n') or ''
out[#ARGV + 1] = redis.call('SCARD', KEYS[3]) - redis.call('SISMEMBER', KEYS[3], ARGV[1])
return out
