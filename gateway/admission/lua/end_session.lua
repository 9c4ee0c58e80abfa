-- end_session.lua: the session-ended webhook; idempotent.
-- Run with lib_store.lua prepended (shared KEYS[1..13] are documented there).
-- ARGV[1] now (caller clock, seconds)
-- ARGV[2] conversation session id, lower-cased by the caller
-- Returns: "released"       the active lease was freed (and the id remembered as ended for 24 h);
--          "already_ended"  the id ended (or its lease expired) within the last 24 h: nothing freed;
--          "unknown"        never seen. It is noted in early_ended for 24 h so that an activate racing
--                           behind this webhook holds no slot; a repeated call is still "unknown".
-- Complexity: O(log N) plus the expired part of the 24 h memory.
local conv = ARGV[2]
local forget_before = NOW - MEMORY_SECONDS
redis.call('ZREMRANGEBYSCORE', K_ENDED, '-inf', forget_before)
redis.call('ZREMRANGEBYSCORE', K_EARLY_ENDED, '-inf', forget_before)

if redis.call('ZREM', K_ACTIVE, conv) == 1 then
  local campaign = redis.call('HGET', K_ACTIVE_META, conv) or ''
  redis.call('HDEL', K_ACTIVE_META, conv)
  add_in_use(campaign, -1)
  redis.call('ZADD', K_ENDED, NOW, conv)
  return 'released'
end
if redis.call('ZSCORE', K_ENDED, conv) then
  return 'already_ended'
end
redis.call('ZADD', K_EARLY_ENDED, NOW, conv)
return 'unknown'
