-- presence_touch.lua: heartbeat (or last goodbye) of hub connections for registered requests.
-- KEYS[1] registered HASH request id -> time of its first Register
-- KEYS[2] last_seen  ZSET request id -> last time a live hub connection was confirmed (registered ids only)
-- ARGV[1] now (caller clock, seconds)
-- ARGV[2..n] request ids whose connections this process hosts (or just lost)
-- Returns the number of request ids touched. Ids never registered (or forgotten because they left
-- the queue) are skipped, so a late heartbeat cannot resurrect presence for a finished request.
-- Moving the score is what pushes the entry's disconnect deadline (last seen + grace) forward.
-- Complexity: O(n log N).
local now = ARGV[1]
local touched = 0
for i = 2, #ARGV do
  if redis.call('HEXISTS', KEYS[1], ARGV[i]) == 1 then
    redis.call('ZADD', KEYS[2], now, ARGV[i])
    touched = touched + 1
  end
end
return touched
