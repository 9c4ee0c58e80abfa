-- presence_scan.lua: one abandonment-reaper round's reads, touching only entries that are due.
-- KEYS[1] registered HASH request id -> time of its first Register
-- KEYS[2] last_seen  ZSET request id -> last time a live hub connection was confirmed (registered ids only)
-- KEYS[3] waiting    ZSET request id -> time the reaper first saw it queued (never-registered ids only)
-- KEYS[4] abandoned  HASH request id -> time the reaper took it out of the queue
-- KEYS[5] cursor     HASH "arrivals" -> highest queue score tracked so far; "head", "head_score" -> the
--                    queue's front entry at the last round
-- KEYS[6] the admission queue ZSET (request id -> order score)
-- KEYS[7] the admission entries HASH (queued and dispatching entries)
-- KEYS[8] the admission seq STRING (the arrival counter behind new queue scores)
-- ARGV[1] now (caller clock, seconds)
-- ARGV[2] register timeout (seconds)
-- ARGV[3] disconnect grace (seconds)
-- ARGV[4] limit: most new arrivals tracked, and most due ids read per index, in one round
-- ARGV[5] front window: queue entries checked from the front when the front entry changed
-- ARGV[6] recheck (seconds): a due entry being dispatched is looked at again this much later
-- Returns a flat array, front first, 4 items per queued request that is past either limit:
--   request id, registered time or "", last seen time or "", first seen time or "".
-- The caller makes the decision (gateway.abandonment.decide); presence_abandon.lua re-checks it.
--
-- Why it is cheap: every tracked id is in exactly one index, waiting (scored by first seen) or
-- last_seen (scored by last heartbeat), so "due" is a score range: first seen <= now - timeout, or
-- last seen <= now - grace. A round with nobody due runs a fixed handful of O(log N) commands.
-- Tracking new queue members: new entries get INCR(seq) scores, so those above the arrivals cursor are
-- exactly the ones not tracked yet. Entries put back at the front (requeue_front) get lower scores;
-- they are found by checking the first ARGV[5] entries whenever the front entry changed since the last
-- round (an unchanged front entry with an unchanged score proves nothing was pushed before it). A
-- front-pushed entry further back than the window is tracked once it comes within it.
-- Side effects on due ids that are no longer queued: one still being dispatched (it may be requeued)
-- keeps its presence and is due again ARGV[6] seconds later; one served, failed or gone has all its
-- presence forgotten. So the presence keys shrink with O(1) work per finished request.
-- Complexity: O((A + W + D) log N) for A <= ARGV[4] arrivals, W <= ARGV[5] front checks (only when the
-- front changed) and D <= 2 * ARGV[4] due ids.
local K_REGISTERED, K_LAST_SEEN, K_WAITING, K_ABANDONED, K_CURSOR = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local K_QUEUE, K_ENTRIES, K_SEQ = KEYS[6], KEYS[7], KEYS[8]
local now = tonumber(ARGV[1])
local timeout, grace = tonumber(ARGV[2]), tonumber(ARGV[3])
local limit, window, recheck = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])

-- Scores as exact text: Redis would print a Lua number with 14 significant digits, losing microseconds.
local function num(x)
  return string.format('%.17g', x)
end

-- Start the clock of a queued id the first time the reaper sees it. A registered id missing from
-- last_seen (presence written by an older version) gets a fresh grace period rather than none.
local function track(rid)
  if redis.call('HEXISTS', K_REGISTERED, rid) == 1 then
    redis.call('ZADD', K_LAST_SEEN, 'NX', ARGV[1], rid)
  else
    redis.call('ZADD', K_WAITING, 'NX', ARGV[1], rid)
  end
end

-- New arrivals, oldest first, at most `limit`; the rest next round.
local cursor = redis.call('HGET', K_CURSOR, 'arrivals')
if cursor and tonumber(cursor) > (tonumber(redis.call('GET', K_SEQ)) or 0) then
  cursor = false  -- the admission store was reset: its scores start again from 1
end
local arrivals = redis.call('ZRANGEBYSCORE', K_QUEUE, cursor and ('(' .. cursor) or '-inf', '+inf',
                            'WITHSCORES', 'LIMIT', 0, limit)
for i = 1, #arrivals, 2 do
  track(arrivals[i])
end
if #arrivals > 0 then
  redis.call('HSET', K_CURSOR, 'arrivals', arrivals[#arrivals])
end

-- Entries pushed to the front since the last round.
local head = redis.call('ZRANGE', K_QUEUE, 0, 0, 'WITHSCORES')
if #head > 0 then
  local known = redis.call('HMGET', K_CURSOR, 'head', 'head_score')
  if known[1] ~= head[1] or known[2] ~= head[2] then
    for _, rid in ipairs(redis.call('ZRANGE', K_QUEUE, 0, window - 1)) do
      track(rid)
    end
    redis.call('HSET', K_CURSOR, 'head', head[1], 'head_score', head[2])
  end
end

local candidates = {}

local function forget(rid)
  redis.call('HDEL', K_REGISTERED, rid)
  redis.call('HDEL', K_ABANDONED, rid)
  redis.call('ZREM', K_LAST_SEEN, rid)
  redis.call('ZREM', K_WAITING, rid)
end

local function examine(index, threshold)
  local due = redis.call('ZRANGEBYSCORE', index, '-inf', num(threshold), 'LIMIT', 0, limit)
  for _, rid in ipairs(due) do
    local order = redis.call('ZSCORE', K_QUEUE, rid)
    if order then
      candidates[#candidates + 1] = {
        tonumber(order), rid, redis.call('HGET', K_REGISTERED, rid) or '',
        redis.call('ZSCORE', K_LAST_SEEN, rid) or '', redis.call('ZSCORE', K_WAITING, rid) or ''}
    elseif redis.call('HEXISTS', K_ENTRIES, rid) == 1 then
      redis.call('ZADD', index, num(threshold + recheck), rid)
    else
      forget(rid)
    end
  end
end

examine(K_WAITING, now - timeout)
examine(K_LAST_SEEN, now - grace)

table.sort(candidates, function(a, b) return a[1] < b[1] end)
local out = {}
for _, c in ipairs(candidates) do
  out[#out + 1] = c[2]
  out[#out + 1] = c[3]
  out[#out + 1] = c[4]
  out[#out + 1] = c[5]
end
return out
