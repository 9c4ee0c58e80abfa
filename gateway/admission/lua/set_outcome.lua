-- set_outcome.lua: record "ready" or "failed" for a request and remove its entry.
-- Run with lib_store.lua prepended (shared KEYS[1..13] are documented there).
-- KEYS[14] outcome key of this request (HASH status, web_socket_url, message, until)
-- KEYS[15] tombstone key of this request (HASH status, message; lives 24 h)
-- ARGV[1] now (caller clock, seconds)
-- ARGV[2] request_id
-- ARGV[3] status ("ready" or "failed", checked by the caller)
-- ARGV[4] web socket URL or ""
-- ARGV[5] message or ""
-- ARGV[6] ttl seconds of the outcome
-- Returns: 1.
-- The outcome carries "until" in caller time, which status compares against its own now, so an
-- injected clock expires it; the Redis TTL (same length, rounded up) only frees the memory. The
-- tombstone outlives it so the id reads "expired", not unknown. Complexity: O(log N).
local request_id = ARGV[2]
local ttl = tonumber(ARGV[6])
redis.call('ZREM', K_QUEUE, request_id)
redis.call('HDEL', K_ENTRIES, request_id)
redis.call('HDEL', K_ENTRY_CAMPAIGN, request_id)
redis.call('HDEL', K_ENTRY_LEASE, request_id)
redis.call('DEL', KEYS[14], KEYS[15])
redis.call('HSET', KEYS[14], 'status', ARGV[3], 'web_socket_url', ARGV[4], 'message', ARGV[5],
           'until', string.format('%.6f', NOW + ttl))
redis.call('EXPIRE', KEYS[14], math.max(1, math.ceil(ttl)))
redis.call('HSET', KEYS[15], 'status', 'expired', 'message', '')
redis.call('EXPIRE', KEYS[15], MEMORY_SECONDS)
return 1
