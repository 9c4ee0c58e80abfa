-- release_lease.lua: the platform call failed; give the pending lease's slot back.
-- Run with lib_store.lua prepended (shared KEYS[1..13] are documented there).
-- ARGV[1] now (caller clock, seconds; unused, kept for the shared layout)
-- ARGV[2] lease_id
-- Returns: 1 if a pending lease was freed, 0 if it was unknown, already released or already reaped.
-- The entry (if any) stays "dispatching" and unbound; the caller follows with set_outcome or
-- requeue_front. Complexity: O(log N).
local lease = ARGV[2]
local meta = decode_meta(redis.call('HGET', K_LEASE_META, lease))
redis.call('HDEL', K_LEASE_META, lease)
redis.call('ZREM', K_REAPED, lease)
if redis.call('ZREM', K_PENDING, lease) == 0 then
  return 0
end
if meta then
  add_in_use(meta.c, -1)
  if meta.r and meta.r ~= '' and redis.call('HGET', K_ENTRY_LEASE, meta.r) == lease then
    redis.call('HDEL', K_ENTRY_LEASE, meta.r)
  end
end
return 1
