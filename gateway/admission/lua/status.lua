-- status.lua: where is a request now?
-- Run with lib_store.lua prepended (shared KEYS[1..13] are documented there).
-- KEYS[14] outcome key of this request
-- KEYS[15] tombstone key of this request
-- ARGV[1] now (caller clock, seconds)
-- ARGV[2] request_id
-- Returns: {status, position, web_socket_url, message} as lib_store.lua's request_status, or {} when the
--          id was never seen.
-- Complexity: O(log N).
return request_status(ARGV[2], KEYS[14], KEYS[15]) or {}
