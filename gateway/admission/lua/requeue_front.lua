-- requeue_front.lua: the platform refused for concurrency; release the pending lease and put the
-- request at the front of the queue. Works for a claimed queue entry and for a direct admission
-- (which has no entry yet: it is created from ARGV[4..5]).
-- Run with lib_store.lua prepended (shared KEYS[1..13] are documented there).
-- KEYS[14] outcome key of this request (only checked)
-- KEYS[15] tombstone key of this request (only checked)
-- ARGV[1] now (caller clock, seconds; unused, kept for the shared layout)
-- ARGV[2] request_id
-- ARGV[3] lease_id the caller holds
-- ARGV[4] campaign id (used only when the entry must be created)
-- ARGV[5] entry data as JSON text (used only when the entry must be created)
-- Returns: the 1-based position (1); 0 when nothing was requeued because the request already has an
--          outcome, or another dispatcher holds it now (its lease had been reaped and the entry
--          re-claimed): whoever settled or holds it accounts for it; -1 when nothing was requeued because
--          the client left the queue while this call was being dispatched (a tombstone and no outcome):
--          nobody else will give back what the request holds. The lease is released in every case.
-- The front is not limited by the max queue length: the request was already admitted once.
-- Complexity: O(log N).
local request_id, lease = ARGV[2], ARGV[3]
local meta = decode_meta(redis.call('HGET', K_LEASE_META, lease))
redis.call('HDEL', K_LEASE_META, lease)
redis.call('ZREM', K_REAPED, lease)
if redis.call('ZREM', K_PENDING, lease) == 1 and meta then
  add_in_use(meta.c, -1)
end

local holder = redis.call('HGET', K_ENTRY_LEASE, request_id)
if holder and holder ~= lease then
  return 0
end
if redis.call('HEXISTS', K_ENTRIES, request_id) == 0 then
  if redis.call('EXISTS', KEYS[14]) == 1 then
    return 0
  end
  if redis.call('EXISTS', KEYS[15]) == 1 then
    return -1
  end
  redis.call('HSET', K_ENTRIES, request_id, ARGV[5])
  redis.call('HSET', K_ENTRY_CAMPAIGN, request_id, ARGV[4])
end
redis.call('HDEL', K_ENTRY_LEASE, request_id)
push_front(request_id)
return redis.call('ZRANK', K_QUEUE, request_id) + 1
