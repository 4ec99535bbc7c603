-- EXPAND_SCRIPT: the topics whose names start with given prefixes (pattern streams), from
-- the directory PUBLISH_SCRIPT keeps (prefix .. 'names'), of one partition or of the one
-- sequence.
-- KEYS: names, floor, position. ARGV: the prefixes ('' = every topic).
-- Returns: Redis time (us), the dataset's floor, a position (as CLOCK_SCRIPT gives it: every
-- topic born up to it is in the directory, every later one is told), then per prefix the
-- list of names in the directory that start with it. A name may be there without a stream
-- (it expired; the directory forgets it with its birth, after the history age).
-- This header ends at the first blank line: _scripts.py reads the script from there on.

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local position = math.max(tonumber(redis.call('GET', KEYS[3]) or '0'), now - 1)
local out = {string.format('%d', now), redis.call('GET', KEYS[2]) or '0',
  string.format('%d', position)}
for i = 1, #ARGV do
  local prefix = ARGV[i]
  if prefix == '' then
    out[#out + 1] = redis.call('ZRANGEBYLEX', KEYS[1], '-', '+')
  else
    out[#out + 1] = redis.call('ZRANGEBYLEX', KEYS[1], '[' .. prefix, '(' .. prefix .. '\255')
  end
end
return out
