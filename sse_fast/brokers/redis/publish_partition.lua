-- PARTITION_PUBLISH_SCRIPT: PUBLISH_SCRIPT for one partition of a partitioned layout (shards,
-- a Cluster, or N > 1 on one Redis), every key declared, all in the partition's hash slot.
-- KEYS: position, epoch, floor, names, births (the partition's directory of topics, as
-- PUBLISH_SCRIPT keeps it), then the streams of the batch's topics (P{T}:t:<topic>), then
-- the retry keys of the events that have an id (P{T}:r:<id bytes>:<id>:<topics>).
-- ARGV: the partition's prefix (P{T}:), epoch candidate, history frames, history age
-- (microseconds), the publish command (SPUBLISH on a Cluster, else PUBLISH), event count,
-- then per event: id ('' = its position), frame without the id line, wall ms, its retry
-- key's index in KEYS (0 = none), topic count, the topics' indexes in KEYS (streams).
-- A topic's channel is its stream's key with 'c:' for 't:' (the same slot). A topic whose
-- stream is new is born as with PUBLISH_SCRIPT, told on P{T}:born with the command.
-- Returns the events' ids. RETRY_WINDOW is replaced with the retry window in seconds.
-- This header ends at the first blank line: _scripts.py reads the script from there on.

local prefix, maxlen, age, command = ARGV[1], ARGV[3], tonumber(ARGV[4]), ARGV[5]
local count = tonumber(ARGV[6])
local streams = string.len(prefix) + 3
if KEYS[4] ~= prefix .. 'names' or KEYS[5] ~= prefix .. 'births' then
  return redis.error_reply('sse_fast: KEYS[4] and KEYS[5] must be ' .. prefix .. 'names and '
    .. prefix .. 'births')
end
if command ~= 'SPUBLISH' and command ~= 'PUBLISH' then
  return redis.error_reply('sse_fast: the publish command must be SPUBLISH or PUBLISH')
end
local events, i = {}, 7
for e = 1, count do
  local id, frame, wall = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local retry, n = tonumber(ARGV[i + 3]), tonumber(ARGV[i + 4])
  if not n or n < 1 then return redis.error_reply('sse_fast: event ' .. e .. ' has no topic') end
  if string.find(id, '[\r\n%z]') then
    return redis.error_reply('sse_fast: event ' .. e .. ': an id must not contain CR, LF or NUL')
  end
  if string.find(frame, '\r', 1, true) or string.sub(frame, -2) ~= '\n\n'
     or string.find(frame, '\n\n', 1, true) ~= #frame - 1 then
    return redis.error_reply('sse_fast: event ' .. e .. ': the frame must be SSE fields '
      .. '("data: ...\\n" lines, optional "event:"/"retry:") ending with one blank line')
  end
  if not retry or (id ~= '') ~= (retry > 0) or (retry > 0 and not KEYS[retry]) then
    return redis.error_reply('sse_fast: event ' .. e .. ': an event with an id names its retry '
      .. 'key in KEYS, one without an id names none (0)')
  end
  local topics = {}
  for k = 1, n do
    local key = KEYS[tonumber(ARGV[i + 4 + k]) or 0]
    if not key or #key < streams or string.sub(key, 1, streams - 1) ~= prefix .. 't:' then
      return redis.error_reply('sse_fast: event ' .. e .. ': topic ' .. k
        .. ' is not a stream key of this partition (' .. prefix .. 't:<topic>) in KEYS')
    end
    topics[k] = key
  end
  events[e] = {id, frame, wall, topics, retry}
  i = i + 5 + n
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local position = tonumber(redis.call('GET', KEYS[1]) or '0')
if redis.call('EXISTS', KEYS[2]) == 0 then
  position = math.max(position, now)
  redis.call('SET', KEYS[2], ARGV[2])
  redis.call('SET', KEYS[3], string.format('%d', position))
end
local ttl = math.max(1, math.ceil(age / 1000000))
local minid = string.format('%d-0', math.max(0, now - age))
local ids, born = {}, false
for e = 1, count do
  local event = events[e]
  -- a publisher's id seen on these topics within the retry window: a retry, not again
  if event[5] > 0 and not redis.call('SET', KEYS[event[5]], '1', 'NX', 'EX', RETRY_WINDOW) then
    ids[e] = event[1]
  else
    position = math.max(position + 1, now)
    local pos = string.format('%d', position)
    local id = event[1]
    if id == '' then id = pos end
    local frame = 'id: ' .. id .. '\n' .. event[2]
    local message = pos .. ' ' .. event[3] .. ' ' .. id .. '\n' .. frame
    local fresh = {}
    for _, stream in ipairs(event[4]) do
      if not redis.call('XADD', stream, 'NOMKSTREAM', 'MAXLEN', '~', maxlen, pos .. '-0',
          'f', frame, 'i', id, 'w', event[3]) then
        fresh[#fresh + 1] = stream
      end
    end
    -- new streams: their topics are born, told before any of the event's messages
    for _, stream in ipairs(fresh) do
      local topic = string.sub(stream, streams)
      redis.call('ZADD', KEYS[4], 0, topic)
      redis.call('ZADD', KEYS[5], pos, topic)
      redis.call(command, prefix .. 'born', pos .. ' ' .. topic)
      redis.call('XADD', stream, 'MAXLEN', '~', maxlen, pos .. '-0', 'f', frame, 'i', id,
        'w', event[3])
      born = true
    end
    for _, stream in ipairs(event[4]) do
      redis.call('XTRIM', stream, 'MINID', '~', minid)
      redis.call('EXPIRE', stream, ttl)
      redis.call(command, prefix .. 'c:' .. string.sub(stream, streams), message)
    end
    ids[e] = id
  end
end
redis.call('SET', KEYS[1], string.format('%d', position))
if born then
  -- births older than the history age leave the directory, with the names of the topics
  -- whose stream expired (a few per birth: the directory stays about as big as the history)
  local old = redis.call('ZRANGEBYSCORE', KEYS[5], '-inf', '(' .. minid:sub(1, -3), 'LIMIT', 0, 16)
  for _, topic in ipairs(old) do
    redis.call('ZREM', KEYS[5], topic)
    if redis.call('EXISTS', prefix .. 't:' .. topic) == 0 then
      redis.call('ZREM', KEYS[4], topic)
    end
  end
end
return ids
