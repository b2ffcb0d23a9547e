-- Applies one subscription change to Redis (subs.c, redis_apply), when its
-- version is newer than the stored one, and tells every instance (their
-- rosters of connected users follow it).
-- KEYS: user:{u}:subs, product:{p}:subs, sub:{u}:{p}, product:{p}:thr
-- ARGV: user, product, version, active, kinds, threshold ("" = product's),
--       created_ms, tombstone ttl ms, change channel; the numbers are
--       decimal integers written by redis_apply()
-- Returns 1 if applied, 0 if Redis already had this or a newer version.
local v = tonumber(redis.call('HGET', KEYS[3], 'v') or '0')
if tonumber(ARGV[3]) <= v then return 0 end
if ARGV[4] == '1' then
  redis.call('SADD', KEYS[1], ARGV[2])
  redis.call('ZADD', KEYS[2], ARGV[7], ARGV[1])
  redis.call('PERSIST', KEYS[3])
  redis.call('HSET', KEYS[3], 'v', ARGV[3], 'kinds', ARGV[5], 'threshold', ARGV[6], 'created', ARGV[7], 'active', '1')
  if ARGV[6] ~= '' then redis.call('ZADD', KEYS[4], ARGV[6], ARGV[1])
  else redis.call('ZREM', KEYS[4], ARGV[1]) end
else
  redis.call('SREM', KEYS[1], ARGV[2])
  redis.call('ZREM', KEYS[2], ARGV[1])
  redis.call('ZREM', KEYS[4], ARGV[1])
  redis.call('HSET', KEYS[3], 'v', ARGV[3], 'active', '0')
  redis.call('PEXPIRE', KEYS[3], ARGV[8])
end
-- The numbers go into the notice as the decimal text C wrote, never
-- through tonumber and cjson: cjson prints numbers with 14 significant
-- digits, so product 123456789012345 came out as 1.2345678901234e+14
-- and every instance ignored the notice. subs_change_parse() reads it.
local thr = ARGV[6] == '' and 'null' or ARGV[6]
redis.call('PUBLISH', ARGV[9], '{"user":' .. cjson.encode(ARGV[1]) .. ',"product_id":' .. ARGV[2] .. ',"active":' .. (ARGV[4] == '1' and 'true' or 'false') .. ',"kinds":' .. cjson.encode(ARGV[5]) .. ',"threshold":' .. thr .. ',"created":' .. ARGV[7] .. '}')
return 1
