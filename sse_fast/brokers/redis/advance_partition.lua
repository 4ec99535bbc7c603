-- PARTITION_ADVANCE_SCRIPT: ADVANCE_SCRIPT for one partition of a partitioned layout, every key
-- declared. KEYS: position, epoch, floor. ARGV: the newest position of this partition the
-- member holds or saw, the epoch it read. Returns the floor; false (nil) when the epoch is no
-- longer the one read (Redis lost its data again: read again).
-- This header ends at the first blank line: _scripts.py reads the script from there on.

if redis.call('GET', KEYS[2]) ~= ARGV[2] then return false end
local floor = math.max(tonumber(redis.call('GET', KEYS[3]) or '0'), tonumber(ARGV[1]) + 1)
local position = math.max(tonumber(redis.call('GET', KEYS[1]) or '0'), floor)
redis.call('SET', KEYS[3], string.format('%d', floor))
redis.call('SET', KEYS[1], string.format('%d', position))
return string.format('%d', floor)
