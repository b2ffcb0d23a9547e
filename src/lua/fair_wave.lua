-- fair_wave: the next wave of a product's fair-release cycle
-- (conf/README.md, Fair release). Shared by process.lua and fair_due.lua;
-- the build puts history_base.lua and history_add.lua in front of it.
--
-- The cycle's state is in <prefix>fair:{pid} (offset = subscribers alerted
-- so far, the first alert's fields); the schedule is the sorted set
-- <prefix>fair:due, so exactly one instance runs each wave and a crash loses
-- nothing. The first wave is the event's own alert; each later wave is a
-- history entry of its own, so its id sorts by when it was delivered and
-- resume finds it. The wave's users are recorded in
-- <prefix>fair:rel:{alert id} (for resume and the history) and published on
-- <prefix>fair:waves for every instance to deliver to its own sockets.
-- Returns the number of users released.
local function fair_wave(prefix, pid, factor, stock, now, interval, ttl, first)
  local fk = prefix .. 'fair:' .. pid
  local subs = prefix .. 'product:' .. pid .. ':subs'
  local f = redis.call('HMGET', fk, 'offset', 'id', 'prev', 'name', 'event_id', 'ts')
  local offset = tonumber(f[1] or '0')
  local total = redis.call('ZCARD', subs)
  local w = math.ceil(factor * stock)
  local users = {}
  if w > 0 and offset < total then
    users = redis.call('ZRANGE', subs, offset, offset + w - 1)
  end
  offset = offset + #users
  redis.call('HSET', fk, 'offset', offset)
  local id, ts = f[2], f[6]
  if not first and #users > 0 then
    ts = tostring(now)
    id = history_add(prefix, pid, now - ttl * 1000, 'kind', 'back_in_stock', 'product_id', pid, 'stock', stock, 'prev', f[3], 'thr', '0', 'name', f[4], 'event_id', f[5], 'ts', ts, 'fair', '1', 'wave_of', f[2])
  end
  local rel = prefix .. 'fair:rel:' .. id
  for i = 1, #users, 500 do
    redis.call('SADD', rel, unpack(users, i, math.min(i + 499, #users)))
  end
  redis.call('EXPIRE', rel, ttl)
  if offset < total then
    redis.call('ZADD', prefix .. 'fair:due', now + interval, pid)
  else
    redis.call('ZREM', prefix .. 'fair:due', pid)
    redis.call('HSET', fk, 'active', '0')
  end
  if #users > 0 then
    redis.call('PUBLISH', prefix .. 'fair:waves', cjson.encode({product_id = pid, id = id, stock = tostring(stock), prev = f[3], name = f[4], event_id = f[5], ts = ts, users = users}))
  end
  return #users
end
