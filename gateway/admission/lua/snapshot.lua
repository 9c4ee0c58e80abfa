-- snapshot.lua: what an operator sees of the whole deployment (GET /api/admin/queue), in one atomic read.
-- Run alone (no lib_store.lua): it only reads, and names its keys itself below.
-- KEYS[1] queue          ZSET request id -> order score (waiting entries)
-- KEYS[2] entries        HASH request id -> entry data (JSON text)
-- KEYS[3] entry_campaign HASH request id -> campaign
-- KEYS[4] entry_lease    HASH request id -> lease of the dispatcher holding it (being dispatched)
-- KEYS[5] active         ZSET conversation id -> lease expiry
-- KEYS[6] active_meta    HASH conversation id -> campaign
-- KEYS[7] pending        ZSET pending lease -> expiry
-- KEYS[8] control        HASH the operators' controls ("paused", "cap")
-- KEYS[9] registered     HASH request id -> time of its first Register on the hub (the presence store)
-- ARGV[1] limit: most entries listed of each kind (waiting, being dispatched, active sessions)
-- Returns cjson text: {queued, active, pending, dispatching_count, paused, cap ("" = none),
--   waiting = {{id, campaign, data, registered}...} front first, dispatching = {{id, campaign, data}...},
--   sessions = {{conversation id, campaign, expiry}...} soonest expiry (so oldest) first}
-- Complexity: O(limit log N); HSCAN bounds the walk over the entries being dispatched.
local limit = tonumber(ARGV[1])
local control = redis.call('HMGET', KEYS[8], 'paused', 'cap')
local out = {
  queued = redis.call('ZCARD', KEYS[1]),
  active = redis.call('ZCARD', KEYS[5]),
  pending = redis.call('ZCARD', KEYS[7]),
  dispatching_count = redis.call('HLEN', KEYS[4]),
  paused = control[1] == '1',
  cap = control[2] or '',
  waiting = {}, dispatching = {}, sessions = {},
}
if limit > 0 then
  for i, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, limit - 1)) do
    out.waiting[i] = {id, redis.call('HGET', KEYS[3], id) or '', redis.call('HGET', KEYS[2], id) or '',
                      redis.call('HEXISTS', KEYS[9], id) == 1}
  end
  local cursor, n = '0', 0
  repeat
    local page = redis.call('HSCAN', KEYS[4], cursor, 'COUNT', limit)
    cursor = page[1]
    for i = 1, #page[2], 2 do
      if n < limit then
        local id = page[2][i]
        n = n + 1
        out.dispatching[n] = {id, redis.call('HGET', KEYS[3], id) or '', redis.call('HGET', KEYS[2], id) or ''}
      end
    end
  until cursor == '0' or n >= limit
  local sessions = redis.call('ZRANGE', KEYS[5], 0, limit - 1, 'WITHSCORES')
  for i = 1, #sessions, 2 do
    local conv = sessions[i]
    out.sessions[#out.sessions + 1] = {conv, redis.call('HGET', KEYS[6], conv) or '', tonumber(sessions[i + 1])}
  end
end
return cjson.encode(out)
