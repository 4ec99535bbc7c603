-- PUBLISH_SCRIPT: sequence a batch of events, store them and publish them, all or none.
-- KEYS: position, epoch. ARGV: prefix, epoch candidate, history frames, history age
-- (microseconds), event count, then per event: id ('' = its position), frame without
-- the id line, wall ms, topic count, topics. Returns the events' ids.
-- A new dataset (no epoch: a first start, or Redis lost its data) gets the candidate as
-- its epoch and its floor (key prefix .. 'floor') at Redis time: its positions and its
-- history start after it. A topic whose stream is new is born: it enters the directory
-- (prefix .. 'names' by name, prefix .. 'births' by the position of its first event) and
-- '<position> <topic>' goes on prefix .. 'born' before its event (pattern streams:
-- brokers/redis/_new_topics.py). XADD NOMKSTREAM tells a new stream at no cost to the others.
-- RETRY_WINDOW is replaced with the retry window in seconds (brokers/_sequencing.py).
-- This header ends at the first blank line: _scripts.py reads the script from there on.

local prefix, maxlen, age = ARGV[1], ARGV[3], tonumber(ARGV[4])
local count = tonumber(ARGV[5])
local events, i = {}, 6
for e = 1, count do
  local id, frame, wall, n = ARGV[i], ARGV[i + 1], ARGV[i + 2], tonumber(ARGV[i + 3])
  if not n or n < 1 then return redis.error_reply('sse_fast: event ' .. e .. ' has no topic') end
  if string.find(id, '[\r\n%z]') then
    return redis.error_reply('sse_fast: event ' .. e .. ': an id must not contain CR, LF or NUL')
  end
  if string.find(frame, '\r', 1, true) or string.sub(frame, -2) ~= '\n\n'
     or string.find(frame, '\n\n', 1, true) ~= #frame - 1 then
    return redis.error_reply('sse_fast: event ' .. e .. ': the frame must be SSE fields '
      .. '("data: ...\\n" lines, optional "event:"/"retry:") ending with one blank line')
  end
  local topics = {}
  for k = 1, n do
    local topic = ARGV[i + 3 + k]
    if topic == nil or topic == '' then
      return redis.error_reply('sse_fast: event ' .. e .. ' has an empty topic')
    end
    topics[k] = topic
  end
  events[e] = {id, frame, wall, topics}
  i = i + 4 + n
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local position = tonumber(redis.call('GET', KEYS[1]) or '0')
if redis.call('EXISTS', KEYS[2]) == 0 then
  position = math.max(position, now)
  redis.call('SET', KEYS[2], ARGV[2])
  redis.call('SET', prefix .. 'floor', string.format('%d', position))
end
local ttl = math.max(1, math.ceil(age / 1000000))
local minid = string.format('%d-0', math.max(0, now - age))
local ids, born = {}, false
for e = 1, count do
  local event = events[e]
  local given = event[1] ~= ''
  -- a publisher's id seen on these topics within the retry window: a retry, not again
  -- key: the id's length first, so that no other (id, topics) pair can spell it
  if given and not redis.call('SET', prefix .. 'r:' .. #event[1] .. ':' .. event[1] .. ':'
      .. table.concat(event[4], ' '), '1', 'NX', 'EX', RETRY_WINDOW) then
    ids[e] = event[1]
  else
    position = math.max(position + 1, now)
    local pos = string.format('%d', position)
    local id = event[1]
    if id == '' then id = pos end
    local frame = 'id: ' .. id .. '\n' .. event[2]
    local message = pos .. ' ' .. event[3] .. ' ' .. id .. '\n' .. frame
    local fresh = {}
    for _, topic in ipairs(event[4]) do
      if not redis.call('XADD', prefix .. 't:' .. topic, 'NOMKSTREAM', 'MAXLEN', '~', maxlen,
          pos .. '-0', 'f', frame, 'i', id, 'w', event[3]) then
        fresh[#fresh + 1] = topic
      end
    end
    -- new streams: their topics are born (the directory), told before any of the event's
    -- messages, so that a node adopting one holds back the event's other topics' too
    for _, topic in ipairs(fresh) do
      redis.call('ZADD', prefix .. 'names', 0, topic)
      redis.call('ZADD', prefix .. 'births', pos, topic)
      redis.call('PUBLISH', prefix .. 'born', pos .. ' ' .. topic)
      redis.call('XADD', prefix .. 't:' .. topic, 'MAXLEN', '~', maxlen, pos .. '-0', 'f', frame,
        'i', id, 'w', event[3])
      born = true
    end
    for _, topic in ipairs(event[4]) do
      local stream = prefix .. 't:' .. topic
      redis.call('XTRIM', stream, 'MINID', '~', minid)
      redis.call('EXPIRE', stream, ttl)
      redis.call('PUBLISH', prefix .. 'c:' .. topic, message)
    end
    ids[e] = id
  end
end
redis.call('SET', KEYS[1], string.format('%d', position))
if born then
  -- births older than the history age leave the directory, with the names of the topics
  -- whose stream expired (a few per birth: the directory stays about as big as the history)
  local births = prefix .. 'births'
  local old = redis.call('ZRANGEBYSCORE', births, '-inf', '(' .. minid:sub(1, -3), 'LIMIT', 0, 16)
  for _, topic in ipairs(old) do
    redis.call('ZREM', births, topic)
    if redis.call('EXISTS', prefix .. 't:' .. topic) == 0 then
      redis.call('ZREM', prefix .. 'names', topic)
    end
  end
end
return ids
