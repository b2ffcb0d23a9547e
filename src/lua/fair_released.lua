-- Did a fair-release wave of each alert reach the user? (the history:
-- alerts_history.c). KEYS: none; ARGV: prefix, user, alert ids.
-- Returns 1/0 per id.
local out = {}
for i = 3, #ARGV do
  out[i - 2] = redis.call('SISMEMBER', ARGV[1] .. 'fair:rel:' .. ARGV[i], ARGV[2])
end
return out
