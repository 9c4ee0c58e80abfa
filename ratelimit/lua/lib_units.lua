-- lib_units.lua: the rate-limit unit operations as functions, so that a caller can run them inside a
-- bigger atomic script (the gateway's admission decision) or on their own (acquire_units.lua,
-- touch_units.lua). It is never run by itself: the Python side prepends it to the script that uses it.
--
-- Layout (see acquire_units.lua for the full contract): members are unit ids (one per request). A
-- concurrent rule has its own ZSET, scored by each unit's expiry in ms. The window rules of one subject
-- (hourly, daily) share one ZSET of hits scored by hit time in ms: a request is one member whatever the
-- number of windows, and each window counts the hits inside it. A set of hits keeps every hit for
-- UNITS_HISTORY_MS, the longest window there is, whatever windows a call carries: so a call with fewer
-- windows (another node's configuration during a rollout) never trims history that a longer window needs.
--
-- A call's KEYS/ARGV can sit behind the host script's own, at two offsets (units_parse for the rule
-- operations, units_touch and units_release take them directly):
--   kbase: the call's sets are KEYS[kbase + j], j = 1..m, where m = #KEYS - kbase (they come last; each
--          set once, so a subject's windows name one set of hits)
--   abase: ARGV[abase + 1] now in integer ms, ARGV[abase + 2] unit id, ARGV[abase + 3] hold in ms,
--          ARGV[abase + 4] key-expiry slack in ms, and for the rule operations ARGV[abase + 5] the rules:
--          a flat JSON array with three integers per rule, set, limit, window, where set is j above,
--          limit > 0, and window is in ms (0 = a concurrent rule; at most UNITS_HISTORY_MS). One argument
--          for every rule: a deployment's rules are the same for every request, so the caller encodes them
--          once, and the client packs (and Redis reads) one argument instead of two per rule; cjson reads
--          it faster than the script could convert separate arguments.
-- With kbase = abase = 0 this is exactly the layout of acquire_units.lua.

-- ratelimit.rules.HITS_HISTORY_SECONDS in ms (a test checks that the two agree)
local UNITS_HISTORY_MS = 86400000

-- Key expiry = when the last member stops mattering, plus the slack (Redis counts TTLs on its own clock).
local function units_expire_after_last(key, window, now, slack)
  local last = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
  if last[1] then
    redis.call('PEXPIRE', key, tonumber(last[2]) + window - now + slack)
  end
end

-- Reads a call's arguments once: check, consume and report all need them, and converting ARGV strings
-- to numbers again in each step cost the admission script more than its Redis commands did. For the same
-- reason the numbers the commands take are turned into text once per call (a Lua number passed to
-- redis.call is formatted as a float each time, which costs more than the command), as integers ('%d':
-- tostring would switch to an exponent beyond 14 digits).
-- Returns the call: {now, unit, hold, slack, n, keys = {}, limits = {}, windows = {}} (indexed by rule),
-- with the text arguments now_arg, hit_ttl (a set of hits' expiry), unit_expiry and unit_ttl.
local function units_parse(kbase, abase)
  local call = {now = tonumber(ARGV[abase + 1]), unit = ARGV[abase + 2], hold = tonumber(ARGV[abase + 3]),
                slack = tonumber(ARGV[abase + 4]), n = 0, keys = {}, limits = {}, windows = {}}
  call.now_arg = ARGV[abase + 1]
  call.hit_ttl = string.format('%d', UNITS_HISTORY_MS + call.slack)
  call.unit_expiry = string.format('%d', call.now + call.hold)
  call.unit_ttl = string.format('%d', call.hold + call.slack)
  local rules = cjson.decode(ARGV[abase + 5])
  local n = 0
  for at = 1, #rules, 3 do
    n = n + 1
    call.keys[n] = KEYS[kbase + rules[at]]
    call.limits[n] = rules[at + 1]
    call.windows[n] = rules[at + 2]
  end
  call.n = n
  return call
end

-- Drops expired members and checks every rule of a parsed call; writes nothing else.
-- Returns allowed (1 or 0), a table refused[i] (1 or 0) and a table counts[i]: the members counting now,
-- which units_consume and units_report take so that they need not count again.
-- Most keys of a request are new (a client's first request, an IP seen for the first time): an empty
-- set costs one ZCARD here, which is why the count comes first.
local function units_check(call)
  local now, unit = call.now, call.unit
  local refused, counts, allowed = {}, {}, 1
  local history_floor = nil  -- text of now - UNITS_HISTORY_MS, made on first use
  local hits = {}  -- key -> hits kept in that set, so that a subject's second window does not trim again
  for i = 1, call.n do
    local key, limit, window = call.keys[i], call.limits[i], call.windows[i]
    local count
    if window > 0 then
      local kept = hits[key]
      if kept == nil then
        kept = redis.call('ZCARD', key)
        if kept > 0 then
          history_floor = history_floor or string.format('%d', now - UNITS_HISTORY_MS)
          kept = kept - redis.call('ZREMRANGEBYSCORE', key, '-inf', history_floor)
        end
        hits[key] = kept
      end
      if kept == 0 or window >= UNITS_HISTORY_MS then
        count = kept
      else
        count = redis.call('ZCOUNT', key, '(' .. (now - window), '+inf')
      end
    else
      -- a concurrent set is scored by expiry
      count = redis.call('ZCARD', key)
      if count > 0 then
        count = count - redis.call('ZREMRANGEBYSCORE', key, '-inf', call.now_arg)
      end
    end
    counts[i] = count
    refused[i] = 0
    if count >= limit then
      -- a repeated acquire is not refused for its own unit, if that counts here (a set of hits also
      -- holds hits older than this window)
      local score = redis.call('ZSCORE', key, unit)
      if not score or (window > 0 and tonumber(score) <= now - window) then
        refused[i] = 1
        allowed = 0
      end
    end
  end
  return allowed, refused, counts
end

-- Consumes one hit / unit of every rule (call only after units_check allowed it, in the same script) and
-- updates counts. Returns a table fresh[i]: 1 when the unit is rule i's only member (the set was empty).
local function units_consume(call, counts)
  local now, unit = call.now, call.unit
  local fresh, added = {}, {}
  for i = 1, call.n do
    local key, window = call.keys[i], call.windows[i]
    local was_empty = counts[i] == 0
    if window > 0 then
      -- added[key]: false when the unit was not in the set yet, else its earlier hit time (a repeated
      -- acquire moves its hit to now, which adds it to the windows it had already left)
      local before = added[key]
      if before == nil then
        before = false
        if redis.call('ZADD', key, 'NX', call.now_arg, unit) == 0 then
          before = tonumber(redis.call('ZSCORE', key, unit))
          redis.call('ZADD', key, call.now_arg, unit)
        end
        added[key] = before
        -- The new hit is the latest (hits of other nodes are later only by their clock skew, which the
        -- slack covers), and hits are kept for the history.
        redis.call('PEXPIRE', key, call.hit_ttl)
      end
      if not before or before <= now - window then
        counts[i] = counts[i] + 1
      end
    else
      counts[i] = counts[i] + redis.call('ZADD', key, call.unit_expiry, unit)
      if was_empty then
        redis.call('PEXPIRE', key, call.unit_ttl)
      else
        -- Only ever later: the key already lives as long as its last unit (a unit re-armed for a session
        -- may outlive the one added now). Every script gives a set its expiry as it creates it, so GT
        -- never meets a key without one (GT would leave such a key forever).
        redis.call('PEXPIRE', key, call.unit_ttl, 'GT')
      end
    end
    fresh[i] = was_empty and 1 or 0
  end
  return fresh
end

-- Appends used_i, wait_i, refused_i for every rule to out (see acquire_units.lua for their meaning).
-- counts: from units_check (updated by units_consume); fresh: from units_consume, or nil when nothing
-- was consumed.
local function units_report(call, refused, counts, fresh, out)
  local now, hold = call.now, call.hold
  for i = 1, call.n do
    local key, limit, window = call.keys[i], call.limits[i], call.windows[i]
    local used = counts[i]
    local wait = window
    if fresh and fresh[i] == 1 then
      -- the only member is the one just added: it leaves after one window, or one hold
      if window == 0 then
        wait = hold
      end
    elseif used > 0 then
      local index = used - limit
      if index < 0 then
        index = 0
      end
      -- the member that must leave first, among those counting (a set of hits holds older ones too)
      local member
      if window > 0 then
        member = redis.call('ZRANGEBYSCORE', key, '(' .. (now - window), '+inf', 'WITHSCORES', 'LIMIT', index, 1)
      else
        member = redis.call('ZRANGE', key, index, index, 'WITHSCORES')
      end
      wait = tonumber(member[2]) + window - now
    end
    out[#out + 1] = used
    out[#out + 1] = wait
    out[#out + 1] = refused[i]
  end
end

-- Gives the unit's concurrent holds a new expiry, now + hold; a unit already released or expired is not
-- brought back. With only_later, an expiry is only ever moved later (a renewal of a waiting request must
-- not cut short the longer hold its session got meanwhile). Only ARGV[abase + 1 .. abase + 4] are read
-- (every key must be a concurrent set). Returns how many sets held the unit.
local function units_touch(kbase, abase, only_later)
  local now, unit = tonumber(ARGV[abase + 1]), ARGV[abase + 2]
  local hold, slack = tonumber(ARGV[abase + 3]), tonumber(ARGV[abase + 4])
  local found = 0
  for i = kbase + 1, #KEYS do
    local key = KEYS[i]
    redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
    if redis.call('ZSCORE', key, unit) then
      if only_later then
        redis.call('ZADD', key, 'XX', 'GT', now + hold, unit)
      else
        redis.call('ZADD', key, 'XX', now + hold, unit)
      end
      found = found + 1
      units_expire_after_last(key, 0, now, slack)
    end
  end
  return found
end

-- Gives the unit's concurrent holds back now (its session ended before it was recorded). Same ARGV as
-- units_touch (the hold is not read); every key must be a concurrent set. Returns how many held it.
local function units_release(kbase, abase)
  local now, unit, slack = tonumber(ARGV[abase + 1]), ARGV[abase + 2], tonumber(ARGV[abase + 4])
  local removed = 0
  for i = kbase + 1, #KEYS do
    local key = KEYS[i]
    removed = removed + redis.call('ZREM', key, unit)
    redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
    units_expire_after_last(key, 0, now, slack)
  end
  return removed
end
