-- remove.lua: the client left (Leave) or abandoned the queue; drop its entry.
-- Run with lib_store.lua prepended (shared KEYS[1..13] are documented there).
-- KEYS[14] outcome key of this request (deleted: a dropped entry has no outcome)
-- KEYS[15] tombstone key of this request (HASH status "failed", message; lives 24 h)
-- ARGV[1] now (caller clock, seconds; unused, kept for the shared layout)
-- ARGV[2] request_id
-- ARGV[3] tombstone message: why the request left, as its client is told
-- Returns: 1 if a waiting (queued) entry was dropped, 2 if an entry being dispatched was dropped (its
--          platform call is in flight), 0 if there was none.
-- A dispatching entry loses its binding, so a later reap of its lease does not requeue it; the lease
-- itself stays with its dispatcher (the platform call is in flight). Complexity: O(log N).
local request_id = ARGV[2]
if redis.call('HEXISTS', K_ENTRIES, request_id) == 0 then
  return 0
end
local was_waiting = redis.call('ZREM', K_QUEUE, request_id) == 1
redis.call('HDEL', K_ENTRIES, request_id)
redis.call('HDEL', K_ENTRY_CAMPAIGN, request_id)
redis.call('HDEL', K_ENTRY_LEASE, request_id)
redis.call('DEL', KEYS[14], KEYS[15])
redis.call('HSET', KEYS[15], 'status', 'failed', 'message', ARGV[3])
redis.call('EXPIRE', KEYS[15], MEMORY_SECONDS)
if was_waiting then
  return 1
end
return 2
