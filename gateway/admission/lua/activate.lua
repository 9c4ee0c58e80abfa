-- activate.lua: the platform created the session; turn the pending lease into an active lease keyed by
-- the conversation session id.
-- Run with lib_store.lua and ratelimit/lua/lib_units.lua prepended (shared KEYS[1..13] are documented in
-- lib_store.lua, the rate-limit layout in lib_units.lua).
-- KEYS[14]    rate-limit binding key of this conversation (only with KEYS[15..])
-- KEYS[15..]  the concurrent rate-limit sets holding the request's unit (none when no such limit applies)
-- ARGV[1] now (caller clock, seconds)
-- ARGV[2] lease_id (the pending lease)
-- ARGV[3] conversation session id, lower-cased by the caller
-- ARGV[4] request_id of the queued entry, or "" for a direct admission
-- ARGV[5] session lease seconds (an active lease whose end webhook never comes is reclaimed then)
-- With KEYS[15..], the unit arguments of lib_units.lua (abase = 5):
-- ARGV[6]     now, integer ms
-- ARGV[7]     unit id (the request id)
-- ARGV[8]     hold, integer ms: the unit's new lifetime (the session lease)
-- ARGV[9]     key-expiry slack, integer ms
-- ARGV[10]    with KEYS[15..]: the binding's value (what the webhook needs to give the unit back)
-- ARGV[11]    with KEYS[15..]: the binding's lifetime in whole seconds
-- The unit is re-armed to live as long as the session lease and bound to the conversation id, so the
-- webhook finds it; when the session already ended ("ended") the unit is given back instead. Doing
-- this here keeps the admitted path at two round trips (admit, activate).
-- Returns: "activated"  pending lease converted;
--          "recovered"  the pending lease had already been reaped: the session exists, so the slot is
--                       taken again (may exceed the cap briefly) and the entry leaves the queue if the
--                       reaper had put it back;
--          "refreshed"  the conversation already had an active lease (repeated call): expiry extended;
--          "ended"      the end webhook already arrived for this conversation: no slot is held.
-- Complexity: O(log N).
local lease, conv, request_id = ARGV[2], ARGV[3], ARGV[4]
local expiry = NOW + tonumber(ARGV[5])

local function with_units(result)
  if #KEYS > 14 then
    if result == 'ended' then
      units_release(14, 5)
    elseif units_touch(14, 5, false) > 0 then
      redis.call('SET', KEYS[14], ARGV[10], 'EX', ARGV[11])
    end
  end
  return result
end

local meta = decode_meta(redis.call('HGET', K_LEASE_META, lease))
local was_pending = redis.call('ZREM', K_PENDING, lease) == 1
redis.call('HDEL', K_LEASE_META, lease)
redis.call('ZREM', K_REAPED, lease)

local campaign
if meta then
  campaign = meta.c
elseif request_id ~= '' then
  campaign = redis.call('HGET', K_ENTRY_CAMPAIGN, request_id)
end
campaign = campaign or ''

if request_id ~= '' and redis.call('HEXISTS', K_ENTRIES, request_id) == 1 then
  -- the entry stays "dispatching" until set_outcome; bind it to this lease so a later reap or
  -- requeue of another holder leaves it alone
  redis.call('ZREM', K_QUEUE, request_id)
  redis.call('HSET', K_ENTRY_LEASE, request_id, lease)
end

if redis.call('ZSCORE', K_ENDED, conv) or redis.call('ZSCORE', K_EARLY_ENDED, conv) then
  if was_pending then
    add_in_use(campaign, -1)
  end
  redis.call('ZREM', K_EARLY_ENDED, conv)
  redis.call('ZADD', K_ENDED, NOW, conv)
  return with_units('ended')
end

if redis.call('ZSCORE', K_ACTIVE, conv) then
  if was_pending then
    add_in_use(campaign, -1)
  end
  redis.call('ZADD', K_ACTIVE, expiry, conv)
  return with_units('refreshed')
end

if not was_pending then
  add_in_use(campaign, 1)
end
redis.call('ZADD', K_ACTIVE, expiry, conv)
redis.call('HSET', K_ACTIVE_META, conv, campaign)
if was_pending then
  return with_units('activated')
end
return with_units('recovered')
