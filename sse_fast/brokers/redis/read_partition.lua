-- PARTITION_READ_SCRIPT: READ_SCRIPT for one partition of a partitioned layout, every key
-- declared. KEYS: position, epoch, floor, then the streams to read (P{T}:t:<topic>).
-- ARGV: count, epoch candidate, then per stream: from ('' = the newest ``count`` entries;
-- else those after position from). Returns what READ_SCRIPT returns: position, Redis time
-- (us), epoch, floor, then per stream: max deleted position, stream length, entries
-- (newest first). A new dataset is started as PARTITION_PUBLISH_SCRIPT starts one.
-- This header ends at the first blank line: _scripts.py reads the script from there on.

local count = tonumber(ARGV[1])
local t = redis.call('TIME')
local now = string.format('%d', tonumber(t[1]) * 1000000 + tonumber(t[2]))
if redis.call('EXISTS', KEYS[2]) == 0 then
  local position = math.max(tonumber(redis.call('GET', KEYS[1]) or '0'), tonumber(now))
  redis.call('SET', KEYS[2], ARGV[2])
  redis.call('SET', KEYS[1], string.format('%d', position))
  redis.call('SET', KEYS[3], string.format('%d', position))
end
local out = {redis.call('GET', KEYS[1]) or '0', now, redis.call('GET', KEYS[2]),
  redis.call('GET', KEYS[3]) or '0'}
for k = 4, #KEYS do
  local stream, from = KEYS[k], ARGV[k - 1]
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
    if from == nil or from == '' then
      entries = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', count)
    else
      entries = redis.call('XREVRANGE', stream, '+', '(' .. from .. '-0', 'COUNT', count)
    end
  end
  out[#out + 1] = deleted
  out[#out + 1] = length
  out[#out + 1] = entries
end
return out
