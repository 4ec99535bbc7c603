-- ADVANCE_SCRIPT: Redis lacks events a member holds (it lost its data, or failed over to
-- a replica that lagged): raise the dataset's floor above them, and the sequence to the
-- floor, so that no id the member gave out resolves to a new event.
-- KEYS: position, epoch. ARGV: prefix, the newest position the member holds or saw, the
-- epoch it read. Returns the floor; false (nil) when the epoch is no longer the one read
-- (Redis lost its data again: read again).
-- This header ends at the first blank line: _scripts.py reads the script from there on.

if redis.call('GET', KEYS[2]) ~= ARGV[3] then return false end
local floor_key = ARGV[1] .. 'floor'
local floor = math.max(tonumber(redis.call('GET', floor_key) or '0'), tonumber(ARGV[2]) + 1)
local position = math.max(tonumber(redis.call('GET', KEYS[1]) or '0'), floor)
redis.call('SET', floor_key, string.format('%d', floor))
redis.call('SET', KEYS[1], string.format('%d', position))
return string.format('%d', floor)
