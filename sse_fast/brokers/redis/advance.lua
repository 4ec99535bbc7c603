-- ADVANCE_SCRIPT: move the sequence to at least ARGV[1] (after Redis lost its
-- data, so that new positions stay above what nodes hold).
-- KEYS: position. ARGV: at least. Returns the new position.
-- This header ends at the first blank line: scripts.py reads the script from there on.

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local position = math.max(tonumber(redis.call('GET', KEYS[1]) or '0'), tonumber(ARGV[1]) + 1, now)
redis.call('SET', KEYS[1], string.format('%d', position))
return string.format('%d', position)
