-- presence_register.lua: a hub connection registered for a request (Register), or its client polled the
-- status: where the request is now and, while it waits, a record that someone waits for it, in one step.
-- Run with the admission prelude (gateway/admission/lua/lib_store.lua, prepended by AdmissionStore.script):
-- KEYS[1..13] the admission store's shared keys (queue, entries, ...), documented there
-- KEYS[14] outcome key of the request
-- KEYS[15] tombstone key of the request
-- KEYS[16] registered HASH request id -> time of its first Register
-- KEYS[17] last_seen  ZSET request id -> last time a live hub connection was confirmed (registered ids only)
-- KEYS[18] waiting    ZSET request id -> time the reaper first saw it queued (never-registered ids only)
-- KEYS[19] abandoned  HASH request id -> time the reaper took it out of the queue
-- ARGV[1] now (caller clock, seconds; the prelude's NOW)
-- ARGV[2] request id
-- Returns {status, position, web_socket_url, message, recorded} (the first four as status.lua), or {} when
-- the id was never seen. recorded is 1 when the presence was recorded, 0 when the request waits (queued or
-- dispatching) but the reaper already abandoned it (the caller refuses the Register), -1 when it does not
-- wait (nothing recorded). Checking the abandonment mark here, in the same script that records presence,
-- is what makes "reaper removes" and "client comes back" exclusive: exactly one of them wins.
-- The id moves from the waiting index to the last_seen index, so from now on only the disconnect grace
-- applies to it. Complexity: O(log N).
local rid = ARGV[2]
local status = request_status(rid, KEYS[14], KEYS[15])
if not status then
  return {}
end
if status[1] ~= 'queued' and status[1] ~= 'dispatching' then
  status[5] = -1
elseif redis.call('HEXISTS', KEYS[19], rid) == 1 then
  status[5] = 0
else
  redis.call('HSETNX', KEYS[16], rid, ARGV[1])
  redis.call('ZADD', KEYS[17], ARGV[1], rid)
  redis.call('ZREM', KEYS[18], rid)
  status[5] = 1
end
return status
