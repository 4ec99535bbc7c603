-- READ_SCRIPT: the sequence and the history of some topics, in one read.
-- KEYS: position, epoch. ARGV: prefix, count, epoch candidate, then pairs:
-- topic, from ('' = the newest ``count`` entries; else those after position from).
-- Returns: position, Redis time (us), epoch, floor (no position at or below it is in
-- this dataset's history), then per topic: max deleted position, stream length,
-- entries (newest first). A new dataset is started as PUBLISH_SCRIPT starts one.
-- This header ends at the first blank line: _scripts.py reads the script from there on.

local prefix, count = ARGV[1], tonumber(ARGV[2])
local t = redis.call('TIME')
local now = string.format('%d', tonumber(t[1]) * 1000000 + tonumber(t[2]))
local floor_key = prefix .. 'floor'
if redis.call('EXISTS', KEYS[2]) == 0 then
  local position = math.max(tonumber(redis.call('GET', KEYS[1]) or '0'), tonumber(now))
  redis.call('SET', KEYS[2], ARGV[3])
  redis.call('SET', KEYS[1], string.format('%d', position))
  redis.call('SET', floor_key, string.format('%d', position))
end
local out = {redis.call('GET', KEYS[1]) or '0', now, redis.call('GET', KEYS[2]),
  redis.call('GET', floor_key) or '0'}
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
