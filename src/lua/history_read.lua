-- One page of a history, read at once. The build puts history_base.lua in
-- front of it (alerts_history.c runs it). With check = '1', after must be a
-- point of this history from which nothing is missing: the marker says the
-- history began at or before it, the alert after still is in the stream (so
-- no trimming reached past it) and no XDEL removed anything newer.
-- KEYS: stream, index, start marker.
-- ARGV: after ('' = from the beginning), check, count, then the product ids,
--       or '*' for every product (read from the stream itself).
-- Returns {0} when the check fails, else {1, entries (oldest first), last
-- id read ('' = none), 1 if there may be more}. Once count candidates are
-- in hand, the next products are read only up to the newest of them, so a
-- page costs about count index reads however many products there are.
local s, idx, after, count = KEYS[1], KEYS[2], ARGV[1], tonumber(ARGV[3])
if ARGV[2] == '1' then
  local start = redis.call('GET', KEYS[3])
  if not start or redis.call('EXISTS', idx) == 0 or hist_pad(after) < hist_pad(start) or
     #redis.call('XRANGE', s, after, after) == 0 or not hist_indexed(s, idx) then
    return {0}
  end
  local info = redis.call('XINFO', 'STREAM', s)
  for i = 1, #info, 2 do
    if info[i] == 'max-deleted-entry-id' and hist_pad(info[i + 1]) > hist_pad(after) then
      return {0}
    end
  end
end
if ARGV[4] == '*' then
  local lo = after == '' and '-' or '(' .. after
  local e = redis.call('XRANGE', s, lo, '+', 'COUNT', count)
  return {1, e, #e > 0 and e[#e][1] or '', #e == count and 1 or 0}
end
local ids, low, high = {}, after == '' and '' or hist_pad(after), '\255'
for i = 4, #ARGV do
  local p = ARGV[i] .. ':'
  local m = redis.call('ZRANGEBYLEX', idx, (low == '' and '[' or '(') .. p .. low,
    '[' .. p .. high, 'LIMIT', 0, count)
  for _, v in ipairs(m) do ids[#ids + 1] = string.sub(v, #p + 1) end
  if #ids > count then
    table.sort(ids)
    for j = #ids, count + 1, -1 do ids[j] = nil end
    high = ids[count]
  end
end
table.sort(ids)
local out, last = {}, ''
for i = 1, math.min(count, #ids) do
  local n = string.byte(ids[i]) - 63
  last = string.sub(ids[i], 2, n) .. '-' .. string.sub(ids[i], n + 2)
  out[#out + 1] = redis.call('XRANGE', s, last, last)[1]
end
return {1, out, last, #ids >= count and 1 or 0}
