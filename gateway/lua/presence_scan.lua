-- presence_scan.lua: the queued requests the abandonment reaper should look at, in one snapshot.
-- KEYS[1] registered HASH request id -> time of its first Register
-- KEYS[2] seen       HASH request id -> last time a live hub connection was confirmed for it
-- KEYS[3] first_seen HASH request id -> time a scan first saw the entry waiting
-- KEYS[4] abandoned  HASH request id -> time the reaper took it out of the queue
-- KEYS[5] the admission queue ZSET (request id -> order score)
-- KEYS[6] the admission entries HASH (queued and dispatching entries)
-- ARGV[1] now (caller clock, seconds)
-- ARGV[2] register timeout (seconds)
-- ARGV[3] disconnect grace (seconds)
-- Returns a flat array, front first, 4 items per request that is past either limit:
--   request id, registered time or "", last seen time or "", first seen time.
-- Only requests past a limit are returned, so a round with thousands of live clients moves almost
-- nothing over the wire; the caller still makes the decision (gateway.abandonment.decide) and
-- presence_abandon.lua re-checks it atomically.
-- Side effects: records first_seen for entries seen for the first time; forgets presence of requests
-- that are neither queued nor being dispatched (served, failed, left) so the hashes stay small.
-- A dispatching entry keeps its presence: it may be requeued at the front if the platform is full.
local now = tonumber(ARGV[1])
local timeout, grace = tonumber(ARGV[2]), tonumber(ARGV[3])
local ids = redis.call('ZRANGE', KEYS[5], 0, -1)
local out = {}
for _, rid in ipairs(ids) do
  redis.call('HSETNX', KEYS[3], rid, ARGV[1])
  local registered = redis.call('HGET', KEYS[1], rid)
  local seen = redis.call('HGET', KEYS[2], rid)
  local first = redis.call('HGET', KEYS[3], rid)
  local due
  if registered then
    due = now - tonumber(seen or registered) >= grace
  else
    due = now - tonumber(first) >= timeout
  end
  if due then
    out[#out + 1] = rid
    out[#out + 1] = registered or ''
    out[#out + 1] = seen or ''
    out[#out + 1] = first
  end
end
for k = 1, 4 do
  for _, rid in ipairs(redis.call('HKEYS', KEYS[k])) do
    if redis.call('ZSCORE', KEYS[5], rid) == false and redis.call('HEXISTS', KEYS[6], rid) == 0 then
      redis.call('HDEL', KEYS[k], rid)
    end
  end
end
return out
