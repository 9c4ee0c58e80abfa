-- presence_register.lua: a hub connection registered for a queued request (Register).
-- KEYS[1] registered HASH request id -> time of its first Register
-- KEYS[2] last_seen  ZSET request id -> last time a live hub connection was confirmed (registered ids only)
-- KEYS[3] waiting    ZSET request id -> time the reaper first saw it queued (never-registered ids only)
-- KEYS[4] abandoned  HASH request id -> time the reaper took it out of the queue
-- ARGV[1] now (caller clock, seconds)
-- ARGV[2] request id
-- Returns 1 when recorded, 0 when the reaper already abandoned the request (the caller refuses the
-- Register). Checking the abandonment mark here, in the same script that records presence, is what
-- makes "reaper removes" and "client comes back" exclusive: exactly one of them wins.
-- The id moves from the waiting index to the last_seen index, so from now on only the disconnect
-- grace applies to it. Complexity: O(log N).
local now, rid = ARGV[1], ARGV[2]
if redis.call('HEXISTS', KEYS[4], rid) == 1 then
  return 0
end
redis.call('HSETNX', KEYS[1], rid, now)
redis.call('ZADD', KEYS[2], now, rid)
redis.call('ZREM', KEYS[3], rid)
return 1
