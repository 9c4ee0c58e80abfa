-- presence_register.lua: a hub connection registered for a queued request (Register).
-- KEYS[1] registered HASH request id -> time of its first Register
-- KEYS[2] seen       HASH request id -> last time a live hub connection was confirmed for it
-- KEYS[3] abandoned  HASH request id -> time the reaper took it out of the queue
-- ARGV[1] now (caller clock, seconds)
-- ARGV[2] request id
-- Returns 1 when recorded, 0 when the reaper already abandoned the request (the caller refuses the
-- Register). Checking the abandonment mark here, in the same script that records presence, is what
-- makes "reaper removes" and "client comes back" exclusive: exactly one of them wins.
local now, rid = ARGV[1], ARGV[2]
if redis.call('HEXISTS', KEYS[3], rid) == 1 then
  return 0
end
redis.call('HSETNX', KEYS[1], rid, now)
redis.call('HSET', KEYS[2], rid, now)
return 1
