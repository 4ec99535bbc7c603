-- CLOCK_SCRIPT: a position of a sequence that every event published from now on is above:
-- its newest position, or Redis time less one microsecond if later (an event's position is
-- at least the Redis time of its publish; pattern streams: everything born up to it has
-- been told, brokers/redis/_new_topics.py, even in a partition where nothing is published).
-- Nothing is written: a position behind what a node saw stays visible (a failover to a
-- replica that lagged). KEYS: position. Returns the position.
-- This header ends at the first blank line: _scripts.py reads the script from there on.

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
return string.format('%d', math.max(tonumber(redis.call('GET', KEYS[1]) or '0'), now - 1))
