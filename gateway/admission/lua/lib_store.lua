-- lib_store.lua: shared prelude of every admission script. It is never run on its own: the Python
-- wrapper prepends it to each operation's script before register_script, so all scripts agree on
-- one data layout and one set of invariants.
--
-- Shared KEYS (the same positions in every admission script; names come from gateway/keys.py):
--   KEYS[1]  queue          ZSET  request_id -> order score. New entries get INCR(seq); an entry put
--                                 back to the front gets (lowest score - 1). Rank + 1 = position.
--   KEYS[2]  seq            STRING arrival counter for queue scores
--   KEYS[3]  entries        HASH  request_id -> entry data (JSON text made by the caller), for every
--                                 queued or dispatching entry
--   KEYS[4]  entry_campaign HASH  request_id -> campaign id (kept apart so eligibility scans need no JSON decode)
--   KEYS[5]  entry_lease    HASH  request_id -> lease id of the dispatcher currently holding the entry
--   KEYS[6]  pending        ZSET  lease_id -> expiry time (pending leases cover the platform call)
--   KEYS[7]  active         ZSET  conversation id (lower-case) -> expiry time (running sessions)
--   KEYS[8]  lease_meta     HASH  lease_id -> cjson {"c": campaign, "r": request_id, "s": queue score
--                                 of a claimed entry, "d": its lease length, "g": 1 once reap() gave
--                                 it its one grace}; kept 24 h after a reap so a late activate still
--                                 knows the campaign
--   KEYS[9]  reaped         ZSET  lease_id -> time it was reaped (drives the 24 h clean-up of lease_meta)
--   KEYS[10] active_meta    HASH  conversation id -> campaign
--   KEYS[11] in_use         HASH  campaign -> pending + active leases of that campaign (field gone at 0)
--   KEYS[12] ended          ZSET  conversation id -> time it ended (remembered 24 h; idempotent webhook)
--   KEYS[13] early_ended    ZSET  conversation id -> time an end arrived for a session never activated
-- Shared ARGV:
--   ARGV[1]  now: the caller's clock in seconds (decimal string).
--
-- Why caller time and not Redis TIME: tests inject a clock to drive lease expiry without sleeping,
-- and the gateway processes sharing one Redis are assumed NTP-synced, so a skew of a few ms only moves
-- an expiry by that much. It also keeps the scripts deterministic for replication.
--
-- Invariant kept by every script: in_use[c] = (#pending leases of c) + (#active leases of c), and the
-- global usage is ZCARD(pending) + ZCARD(active).
--
-- Complexity of the helpers: reap() is O((E + 1) log N) for E expired leases, at most REAP_BATCH per
-- kind per call (leftovers go on the next call; they only make admission more conservative meanwhile).
-- claim_eligible() is O((S + C) log N) for S scanned queue entries (S <= scan_limit from ARGV) and C claims.

local K_QUEUE, K_SEQ, K_ENTRIES, K_ENTRY_CAMPAIGN, K_ENTRY_LEASE = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local K_PENDING, K_ACTIVE, K_LEASE_META, K_REAPED, K_ACTIVE_META = KEYS[6], KEYS[7], KEYS[8], KEYS[9], KEYS[10]
local K_IN_USE, K_ENDED, K_EARLY_ENDED = KEYS[11], KEYS[12], KEYS[13]

local NOW = tonumber(ARGV[1])
local MEMORY_SECONDS = 86400   -- how long ended ids and reaped leases are remembered
local REAP_BATCH = 1000        -- expired leases reclaimed per kind per call
local SCAN_CHUNK = 100         -- queue entries read per ZRANGE during an eligibility scan

local in_use_cache = {}

local function in_use(campaign)
  local n = in_use_cache[campaign]
  if n == nil then
    n = tonumber(redis.call('HGET', K_IN_USE, campaign)) or 0
    in_use_cache[campaign] = n
  end
  return n
end

local function add_in_use(campaign, delta)
  local n = tonumber(redis.call('HINCRBY', K_IN_USE, campaign, delta))
  if n <= 0 then
    -- never negative, and no empty fields left behind for counts()
    redis.call('HDEL', K_IN_USE, campaign)
    n = 0
  end
  in_use_cache[campaign] = n
end

local function global_in_use()
  return redis.call('ZCARD', K_PENDING) + redis.call('ZCARD', K_ACTIVE)
end

local function campaign_has_room(caps, campaign)
  local cap = caps[campaign]
  if cap == nil then
    return true
  end
  return in_use(campaign) < cap
end

-- Put request_id in front of every queued entry; O(log N).
local function push_front(request_id)
  local head = redis.call('ZRANGE', K_QUEUE, 0, 0, 'WITHSCORES')
  local score
  if #head == 0 then
    score = tonumber(redis.call('GET', K_SEQ)) or 0
  else
    score = tonumber(head[2]) - 1
  end
  redis.call('ZADD', K_QUEUE, score, request_id)
end

local function decode_meta(raw)
  if not raw then
    return nil
  end
  return cjson.decode(raw)
end

-- Reclaim expired leases. A pending lease of a claimed entry whose dispatcher died sends the entry
-- back to the front so it is retried; an expired active lease is a session whose end webhook never
-- came, so its id is remembered as ended. Returns how many leases were reclaimed.
--
-- A claimed entry's pending lease is first given one more lease duration, counted from the reap that
-- found it expired: its dispatcher may be alive, with a platform session already created, and only
-- unable to record it because this store was unreachable. Retried at once, the entry would get a
-- second platform session; given the grace, a live dispatcher records its session as soon as the store
-- answers again, and only a dead one's entry is retried (after twice the lease).
local function reap()
  local reclaimed = 0
  local requeue = {}
  local expired = redis.call('ZRANGEBYSCORE', K_PENDING, '-inf', NOW, 'LIMIT', 0, REAP_BATCH)
  for _, lease in ipairs(expired) do
    local meta = decode_meta(redis.call('HGET', K_LEASE_META, lease))
    local rid = meta and meta.r
    if meta and meta.d and not meta.g and rid and rid ~= '' and redis.call('HGET', K_ENTRY_LEASE, rid) == lease
        and redis.call('HEXISTS', K_ENTRIES, rid) == 1 then
      -- the grace: still held (slot counted, entry bound to this lease) for one more lease duration
      meta.g = 1
      redis.call('HSET', K_LEASE_META, lease, cjson.encode(meta))
      redis.call('ZADD', K_PENDING, NOW + tonumber(meta.d), lease)
    else
      redis.call('ZREM', K_PENDING, lease)
      if meta then
        add_in_use(meta.c, -1)
        if rid and rid ~= '' and redis.call('HGET', K_ENTRY_LEASE, rid) == lease then
          redis.call('HDEL', K_ENTRY_LEASE, rid)
          if redis.call('HEXISTS', K_ENTRIES, rid) == 1 then
            requeue[#requeue + 1] = {rid, tonumber(meta.s) or 0}
          end
        end
        redis.call('ZADD', K_REAPED, NOW, lease)
      end
      reclaimed = reclaimed + 1
    end
  end
  -- several entries going back keep their original relative order: push the youngest first
  table.sort(requeue, function(a, b) return a[2] > b[2] end)
  for _, item in ipairs(requeue) do
    push_front(item[1])
  end
  expired = redis.call('ZRANGEBYSCORE', K_ACTIVE, '-inf', NOW, 'LIMIT', 0, REAP_BATCH)
  for _, conv in ipairs(expired) do
    redis.call('ZREM', K_ACTIVE, conv)
    local campaign = redis.call('HGET', K_ACTIVE_META, conv)
    if campaign then
      add_in_use(campaign, -1)
      redis.call('HDEL', K_ACTIVE_META, conv)
    end
    redis.call('ZADD', K_ENDED, NOW, conv)
    reclaimed = reclaimed + 1
  end
  local forget_before = NOW - MEMORY_SECONDS
  local old = redis.call('ZRANGEBYSCORE', K_REAPED, '-inf', forget_before, 'LIMIT', 0, REAP_BATCH)
  for _, lease in ipairs(old) do
    redis.call('HDEL', K_LEASE_META, lease)
    redis.call('ZREM', K_REAPED, lease)
  end
  redis.call('ZREMRANGEBYSCORE', K_ENDED, '-inf', forget_before)
  redis.call('ZREMRANGEBYSCORE', K_EARLY_ENDED, '-inf', forget_before)
  return reclaimed
end

-- Take a pending lease for request_id of campaign; score is the entry's queue score when it was
-- claimed from the queue (nil for a direct admission), so a reap can restore the order, and duration
-- the lease's length, the grace a reap gives a claimed entry (nil for a direct admission). O(log N).
local function take_pending_lease(lease, campaign, request_id, expiry, score, duration)
  redis.call('ZADD', K_PENDING, expiry, lease)
  redis.call('HSET', K_LEASE_META, lease, cjson.encode({c = campaign, r = request_id, s = score, d = duration}))
  add_in_use(campaign, 1)
end

-- Give back a pending lease bound to nothing (its entry is gone or another's): the slot it holds is one
-- nobody can use. meta is the lease's decoded lease_meta (nil when unknown). O(log N).
local function drop_pending_lease(lease, meta)
  redis.call('ZREM', K_PENDING, lease)
  redis.call('HDEL', K_LEASE_META, lease)
  if meta then
    add_in_use(meta.c, -1)
  end
end

-- Claim the oldest eligible queued entries (FIFO across campaigns; an entry of a campaign at its cap
-- is skipped, so it does not block others) while the global cap has room, up to limit claims and
-- scan_limit scanned entries. Appends (request_id, campaign, lease_id, data) to out.
-- Returns: number claimed, room left, and whether the scan proved no eligible entry is left.
local function claim_eligible(out, caps, global_cap, lease_seconds, limit, nonce, scan_limit)
  local claimed = 0
  local room = global_cap - global_in_use()
  local offset = 0
  local scanned = 0
  local expiry = NOW + lease_seconds
  while room > 0 and claimed < limit do
    if scanned >= scan_limit then
      return claimed, room, false
    end
    local take = math.min(SCAN_CHUNK, scan_limit - scanned)
    local batch = redis.call('ZRANGE', K_QUEUE, offset, offset + take - 1, 'WITHSCORES')
    if #batch == 0 then
      return claimed, room, true
    end
    local removed = 0
    for i = 1, #batch, 2 do
      if room <= 0 or claimed >= limit then
        break
      end
      local rid = batch[i]
      scanned = scanned + 1
      local campaign = redis.call('HGET', K_ENTRY_CAMPAIGN, rid)
      if not campaign then
        -- orphan without entry data: cannot be dispatched, drop it
        redis.call('ZREM', K_QUEUE, rid)
        removed = removed + 1
      elseif campaign_has_room(caps, campaign) then
        claimed = claimed + 1
        local lease = nonce .. ':' .. claimed
        redis.call('ZREM', K_QUEUE, rid)
        removed = removed + 1
        take_pending_lease(lease, campaign, rid, expiry, tonumber(batch[i + 1]), lease_seconds)
        redis.call('HSET', K_ENTRY_LEASE, rid, lease)
        room = room - 1
        out[#out + 1] = rid
        out[#out + 1] = campaign
        out[#out + 1] = lease
        out[#out + 1] = redis.call('HGET', K_ENTRIES, rid) or '{}'
      end
    end
    offset = offset + #batch / 2 - removed
  end
  return claimed, room, false
end

-- ===== operation script follows =====

-- Where a request is now: {status, position, web_socket_url, message} with status "queued" (position >= 1),
-- "dispatching", "ready", "failed" or "expired" (position 0, strings "" when absent), or nil when the id was
-- never seen. outcome_key and tomb_key are the request's own keys (AdmissionKeys.outcome / .tombstone).
-- Shared by status.lua and the hub's Register (gateway/live/lua/presence_register.lua). O(log N).
local function request_status(request_id, outcome_key, tomb_key)
  local outcome = redis.call('HMGET', outcome_key, 'status', 'web_socket_url', 'message', 'until')
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
  local tomb = redis.call('HMGET', tomb_key, 'status', 'message')
  if tomb[1] then
    return {tomb[1], 0, '', tomb[2] or ''}
  end
  if outcome[1] then
    return {'expired', 0, '', ''}
  end
  return nil
end
