-- READ_SCRIPT: the sequence and the history of some topics, in one read.
-- KEYS: position, epoch. ARGV: prefix, count, epoch candidate, then pairs:
-- topic, from ('' = the newest ``count`` entries; else those after position from).
-- Returns: position, Redis time (us), epoch, then per topic: max deleted position,
-- stream length, entries (newest first).
-- This header ends at the first blank line: scripts.py reads the script from there on.

local prefix, count = ARGV[1], tonumber(ARGV[2])
local t = redis.call('TIME')
local now = string.format('%d', tonumber(t[1]) * 1000000 + tonumber(t[2]))
if redis.call('EXISTS', KEYS[2]) == 0 then redis.call('SET', KEYS[2], ARGV[3]) end
local out = {redis.call('GET', KEYS[1]) or '0', now, redis.call('GET', KEYS[2])}
local i = 4
while ARGV[i] do
  local stream, from = prefix .. 't:' .. ARGV[i], ARGV[i + 1]
  local deleted, length, entries = '0', 0, {}
  if redis.call('EXISTS', stream) == 1 then
    local info = redis.call('XINFO', 'STREAM', stream)
    local added, first, removed = 0, nil, 0
    for j = 1, #info, 2 do
      local key = info[j]
      if key == 'max-deleted-entry-id' then
        removed = tonumber(string.match(info[j + 1], '^(%d+)'))
      elseif key == 'entries-added' then
        added = info[j + 1]
      elseif key == 'first-entry' and info[j + 1] then
        first = tonumber(string.match(info[j + 1][1], '^(%d+)'))
      end
    end
    length = redis.call('XLEN', stream)
    -- trimming (by count or age) removed entries older than the first one left
    if first and added > length then removed = math.max(removed, first - 1) end
    deleted = string.format('%d', removed)
    if from == '' then
      entries = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', count)
    else
      entries = redis.call('XREVRANGE', stream, '+', '(' .. from .. '-0', 'COUNT', count)
    end
  end
  out[#out + 1] = deleted
  out[#out + 1] = length
  out[#out + 1] = entries
  i = i + 2
end
return out
