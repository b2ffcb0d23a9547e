-- history_add: records an alert. Shared by process.lua and fair_due.lua
-- (through fair_wave.lua); the build puts history_base.lua in front of it.
--
-- The history: every alert is an entry of <prefix>alerts and a member
-- "<product id>:<hist_pad(alert id)>" of the lexically sorted set
-- <prefix>alerts:index, so a user's history reads only the alerts of the
-- user's own products, in order.
--
-- <prefix>alerts:start is where the history begins: whenever this finds the
-- stream, the index or the marker missing (Redis restarted empty, a key was
-- evicted or deleted), or the stream's newest entry without its index member
-- (an older version recorded it), it moves the marker to the new alert,
-- since nothing before it can be vouched for. Trimming removes a
-- prefix of the stream (MINID ~, or an operator's XTRIM), and the index
-- drops a product's members only below the stream's first entry, so an
-- alert still in the stream has every later alert in both. Dropping stale
-- members only saves memory (a read skips a member whose entry is gone), so
-- it is done for one alert in ten (its id's millisecond ends in 0): the
-- alert's own product, and one other product, round robin from
-- <prefix>alerts:index:sweep, so a product that stops alerting leaves
-- nothing behind for long.
local function history_add(prefix, pid, minid, ...)
  local s, idx = prefix .. 'alerts', prefix .. 'alerts:index'
  local mark = prefix .. 'alerts:start'
  local whole = redis.call('EXISTS', s, idx, mark) == 3 and hist_indexed(s, idx)
  local id = redis.call('XADD', s, 'MINID', '~', minid, '*', ...)
  if not whole then redis.call('SET', mark, id) end
  redis.call('ZADD', idx, 0, pid .. ':' .. hist_pad(id))
  if string.byte(id, string.find(id, '-', 1, true) - 1) ~= 48 then return id end
  local low = hist_pad(redis.call('XRANGE', s, '-', '+', 'COUNT', 1)[1][1])
  redis.call('ZREMRANGEBYLEX', idx, '[' .. pid .. ':', '(' .. pid .. ':' .. low)
  local sk = prefix .. 'alerts:index:sweep'
  local cur = redis.call('GET', sk)
  local nxt = cur and redis.call('ZRANGEBYLEX', idx, '(' .. cur .. ':\255', '+', 'LIMIT', 0, 1)[1]
  nxt = nxt or redis.call('ZRANGEBYLEX', idx, '-', '+', 'LIMIT', 0, 1)[1]
  local q = string.match(nxt, '^(.*):')
  redis.call('ZREMRANGEBYLEX', idx, '[' .. q .. ':', '(' .. q .. ':' .. low)
  redis.call('SET', sk, q)
  return id
end
