-- status.lua: where is a request now?
-- Run with lib_store.lua prepended (shared KEYS[1..13] are documented there).
-- KEYS[14] outcome key of this request
-- KEYS[15] tombstone key of this request
-- ARGV[1] now (caller clock, seconds)
-- ARGV[2] request_id
-- Returns: {status, position, web_socket_url, message} with status "queued" (position >= 1),
--          "dispatching", "ready", "failed" or "expired" (position 0, strings "" when absent),
--          or {} when the id was never seen.
-- Complexity: O(log N).
local request_id = ARGV[2]
local outcome = redis.call('HMGET', KEYS[14], 'status', 'web_socket_url', 'message', 'until')
if outcome[1] and tonumber(outcome[4]) and tonumber(outcome[4]) > NOW then
  return {outcome[1], 0, outcome[2] or '', outcome[3] or ''}
end
local rank = redis.call('ZRANK', K_QUEUE, request_id)
if rank then
  return {'queued', rank + 1, '', ''}
end
if redis.call('HEXISTS', K_ENTRIES, request_id) == 1 then
  return {'dispatching', 0, '', ''}
end
local tomb = redis.call('HMGET', KEYS[15], 'status', 'message')
if tomb[1] then
  return {tomb[1], 0, '', tomb[2] or ''}
end
if outcome[1] then
  return {'expired', 0, '', ''}
end
return {}
