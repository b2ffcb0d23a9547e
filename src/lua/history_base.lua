-- Shared by the scripts that write or read the history (history_add.lua,
-- history_read.lua); the build puts it in front of them.
--
-- hist_pad: an alert id (canonical: no leading zeros, as Redis writes
-- them and alerts_history passes them) as a short string whose byte order
-- is the ids' order: each part as a letter telling its length ('A' + digits
-- - 1), then its digits.
-- hist_indexed: whether the newest entry of stream s has its index member
-- (an alert recorded without one, by an older version, is invisible to a
-- history read through the index).
local function hist_pad(id)
  local k = string.find(id, '-', 1, true)
  local ms, seq = string.sub(id, 1, k - 1), string.sub(id, k + 1)
  return string.char(64 + #ms) .. ms .. string.char(64 + #seq) .. seq
end
local function hist_indexed(s, idx)
  local e = redis.call('XREVRANGE', s, '+', '-', 'COUNT', 1)[1]
  if not e then return true end
  for i = 1, #e[2], 2 do
    if e[2][i] == 'product_id' then
      return redis.call('ZSCORE', idx, e[2][i + 1] .. ':' .. hist_pad(e[1])) ~= false
    end
  end
  return false
end
