-- extend_lease.lua: a dispatcher about to call the platform again for an entry it holds (the previous
-- call certainly created no session) renews the entry's pending lease, so that it covers the new call.
-- Run with lib_store.lua prepended (shared KEYS[1..13] are documented there).
-- ARGV[1] now (caller clock, seconds)
-- ARGV[2] lease_id the caller holds
-- ARGV[3] request_id of the entry
-- ARGV[4] pending lease seconds: the lease now expires at now + this
-- Returns: 1 renewed (the lease is pending and the entry still bound to it);
--          0 the lease is no longer the entry's (it was reaped: the entry is back in the queue or held by
--            another dispatcher, who accounts for it);
--          -1 the entry is gone (the client left while it was being dispatched): the lease is released
--            here, and the caller gives back what the request holds.
-- Renewing also clears the grace a reap may have given the lease, so a later expiry gets its grace again.
-- Complexity: O(log N).
local lease, request_id = ARGV[2], ARGV[3]
if not redis.call('ZSCORE', K_PENDING, lease) then
  return 0
end
local meta = decode_meta(redis.call('HGET', K_LEASE_META, lease))
local present = redis.call('HEXISTS', K_ENTRIES, request_id) == 1
if present and redis.call('HGET', K_ENTRY_LEASE, request_id) == lease then
  if meta and meta.g then
    meta.g = nil
    redis.call('HSET', K_LEASE_META, lease, cjson.encode(meta))
  end
  redis.call('ZADD', K_PENDING, NOW + tonumber(ARGV[4]), lease)
  return 1
end
drop_pending_lease(lease, meta)
if present then
  return 0
end
return -1
