-- presence_abandon.lua: atomically confirm that a queued request is abandoned and mark it so.
-- KEYS[1] registered HASH request id -> time of its first Register
-- KEYS[2] last_seen  ZSET request id -> last time a live hub connection was confirmed (registered ids only)
-- KEYS[3] waiting    ZSET request id -> time the reaper first saw it queued (never-registered ids only)
-- KEYS[4] abandoned  HASH request id -> time the reaper took it out of the queue
-- KEYS[5] the admission queue ZSET
-- ARGV[1] now (caller clock, seconds)
-- ARGV[2] request id
-- ARGV[3] register timeout (seconds)
-- ARGV[4] disconnect grace (seconds)
-- Returns "disconnected" or "unregistered" when the mark was set (the caller then removes the entry),
-- or "" when the request is no longer abandoned (a client came back) or no longer queued. The Python
-- side chose the candidate from a snapshot; this re-check closes the race with a concurrent Register.
-- Complexity: O(log N).
local now, rid = tonumber(ARGV[1]), ARGV[2]
local timeout, grace = tonumber(ARGV[3]), tonumber(ARGV[4])
if redis.call('ZSCORE', KEYS[5], rid) == false then
  return ''
end
local verdict = ''
local registered = redis.call('HGET', KEYS[1], rid)
if registered then
  local seen = tonumber(redis.call('ZSCORE', KEYS[2], rid) or registered)
  if now - seen >= grace then
    verdict = 'disconnected'
  end
else
  local first = redis.call('ZSCORE', KEYS[3], rid)
  if first and now - tonumber(first) >= timeout then
    verdict = 'unregistered'
  end
end
if verdict ~= '' then
  redis.call('HSET', KEYS[4], rid, ARGV[1])
end
return verdict
