-- Runs an event exactly once across every instance and tells each instance
-- whether it has delivered it yet. The build puts history_base.lua,
-- history_add.lua and fair_wave.lua in front of it (alerts.c runs it).
-- KEYS: event hash, stock state, history stream, custom thresholds zset,
--       delivered-by set, history start marker (the history keys are
--       written by history_add)
-- ARGV: instance, product, stock, prev ("" = from the shared state),
--       fallback prev ("" = unknown), default threshold, name, event id, ts,
--       trim MINID, ttl s, prefix, fair factor, fair interval ms, now ms,
--       stock state ttl s
-- Returns {kind, alert id, prev, first, mine, ts, name, released}: the
-- outcome the first instance decided, the same for everyone.
local first, released = 0, -1
local prefix, factor = ARGV[12], tonumber(ARGV[13])
if redis.call('EXISTS', KEYS[1]) == 0 then
  local prev = ARGV[4]
  if prev == '' then prev = redis.call('GET', KEYS[2]) or ARGV[5] end
  redis.call('SET', KEYS[2], ARGV[3], 'EX', ARGV[16])
  local kind, id = 'none', ''
  -- The classification: events_classify in src/events.c is its twin (who
  -- hears of the alert); this one also finds a low_stock that crosses only a
  -- subscriber's own threshold (KEYS[4]). tests/integration/it_classify.c
  -- runs both over tests/cases/classify.txt.
  if prev ~= '' then
    local p, s, t = tonumber(prev), tonumber(ARGV[3]), tonumber(ARGV[6])
    if p <= 0 and s > 0 then kind = 'back_in_stock'
    elseif p > 0 and s <= 0 then kind = 'sold_out'
    elseif s > 0 and p > s then
      if (p > t and t >= s) or
         #redis.call('ZRANGEBYSCORE', KEYS[4], s, p - 1, 'LIMIT', 0, 1) > 0 then
        kind = 'low_stock'
      end
    end
  end
  local fair = (kind == 'back_in_stock' and factor > 0) and '1' or '0'
  if kind ~= 'none' then
    id = history_add(prefix, ARGV[2], ARGV[10], 'kind', kind,
      'product_id', ARGV[2], 'stock', ARGV[3], 'prev', prev, 'thr', ARGV[6],
      'name', ARGV[7], 'event_id', ARGV[8], 'ts', ARGV[9], 'fair', fair)
  end
  local fk = prefix .. 'fair:' .. ARGV[2]
  if fair == '1' then
    local offset = tonumber(redis.call('HGET', fk, 'offset') or '0')
    if offset >= redis.call('ZCARD', prefix .. 'product:' .. ARGV[2] .. ':subs') then
      offset = 0
    end
    redis.call('HSET', fk, 'offset', offset, 'id', id, 'prev', prev,
      'name', ARGV[7], 'event_id', ARGV[8], 'ts', ARGV[9], 'active', '1')
    released = fair_wave(prefix, ARGV[2], factor, tonumber(ARGV[3]), tonumber(ARGV[15]),
      tonumber(ARGV[14]), tonumber(ARGV[11]), true)
  elseif kind == 'sold_out' and redis.call('HGET', fk, 'active') == '1' then
    redis.call('HSET', fk, 'active', '0')
    redis.call('ZREM', prefix .. 'fair:due', ARGV[2])
    released = -2
  end
  redis.call('HSET', KEYS[1], 'kind', kind, 'id', id, 'prev', prev, 'ts', ARGV[9],
    'name', ARGV[7])
  redis.call('EXPIRE', KEYS[1], ARGV[11])
  first = 1
end
local mine = redis.call('SADD', KEYS[5], ARGV[1])
redis.call('EXPIRE', KEYS[5], ARGV[11])
local r = redis.call('HMGET', KEYS[1], 'kind', 'id', 'prev', 'ts', 'name')
return {r[1], r[2], r[3], first, mine, r[4], r[5], released}
