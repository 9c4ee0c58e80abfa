-- lib_units.lua: the rate-limit unit operations as functions, so that a caller can run them inside a
-- bigger atomic script (the gateway's admission decision) or on their own (acquire_units.lua,
-- touch_units.lua). It is never run by itself: the Python side prepends it to the script that uses it.
--
-- Layout (see acquire_units.lua for the full contract): members are unit ids (one per request). A subject's
-- window rules (hourly, daily) share one ZSET of hits scored by hit time in ms, so a request adds one
-- member for all of them and a window counts the hits inside it; a concurrent rule has its own ZSET
-- scored by each unit's expiry in ms. KEYS may therefore name one key for several rules.
--
-- Every function takes two offsets so that its KEYS/ARGV can sit behind the host script's own:
--   kbase: the rule keys are KEYS[kbase + i], i = 1..n, where n = #KEYS - kbase (the rule keys come last)
--   abase: ARGV[abase + 1] now in integer ms, ARGV[abase + 2] unit id, ARGV[abase + 3] hold in ms,
--          ARGV[abase + 4] key-expiry slack in ms, then three values per rule i:
--          ARGV[abase + 2 + 3i] limit, ARGV[abase + 3 + 3i] window in ms (0 = a concurrent rule),
--          ARGV[abase + 4 + 3i] keep in ms: the longest window of the rules sharing rule i's key (what
--          the key must remember; 0 for a concurrent rule)
-- With kbase = abase = 0 this is exactly the layout of acquire_units.lua.

local function units_rule(kbase, abase, i)
  local at = abase + 3 * i
  return KEYS[kbase + i], tonumber(ARGV[at + 2]), tonumber(ARGV[at + 3]), tonumber(ARGV[at + 4])
end

-- Key expiry = when the last member stops mattering, plus the slack (Redis counts TTLs on its own clock).
local function units_expire_after_last(key, keep, now, slack)
  local last = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
  if last[1] then
    redis.call('PEXPIRE', key, tonumber(last[2]) + keep - now + slack)
  end
end

-- Drops what no rule needs any more and checks every rule; writes nothing else.
-- Returns allowed (1 or 0), refused[i] (1 or 0), counts[i] (members counting now for rule i) and sizes
-- (key -> members it holds now), which units_consume and units_report take so that they need not count
-- again. Most keys of a request are new (a client's first request, an IP seen for the first time): an
-- empty key costs one ZCARD here, which is why the count comes first.
local function units_check(kbase, abase)
  local now, unit = tonumber(ARGV[abase + 1]), ARGV[abase + 2]
  local refused, counts, sizes, scores, allowed = {}, {}, {}, {}, 1
  for i = 1, #KEYS - kbase do
    local key, limit, window, keep = units_rule(kbase, abase, i)
    local size = sizes[key]
    if size == nil then
      size = redis.call('ZCARD', key)
      if size > 0 then
        -- for hits the score is the hit time, for a concurrent set it is the expiry
        size = size - redis.call('ZREMRANGEBYSCORE', key, '-inf', now - keep)
      end
      sizes[key] = size
    end
    local count = size
    if size > 0 and window < keep then
      -- a shorter window than the key keeps: only the hits inside it (a hit counts while hit > now - window)
      count = redis.call('ZCOUNT', key, '(' .. (now - window), '+inf')
    end
    counts[i] = count
    refused[i] = 0
    if count >= limit then
      -- full, unless this very unit already counts here (a repeated acquire is not counted twice)
      local score = scores[key]
      if score == nil then
        score = tonumber(redis.call('ZSCORE', key, unit)) or false
        scores[key] = score
      end
      if not (score and (window >= keep or score > now - window)) then
        refused[i] = 1
        allowed = 0
      end
    end
  end
  return allowed, refused, counts, sizes
end

-- Consumes one hit / unit for every rule (call only after units_check allowed it, in the same script):
-- one member per key, whatever the number of rules sharing it; updates counts. Returns fresh: key -> true
-- when the unit is that key's only member (the key was empty).
local function units_consume(kbase, abase, counts, sizes)
  local now, unit = tonumber(ARGV[abase + 1]), ARGV[abase + 2]
  local hold, slack = tonumber(ARGV[abase + 3]), tonumber(ARGV[abase + 4])
  local fresh, before = {}, {}
  for i = 1, #KEYS - kbase do
    local key, _, window, keep = units_rule(kbase, abase, i)
    if fresh[key] == nil then
      local was_empty = sizes[key] == 0
      local score = window > 0 and now or now + hold
      if redis.call('ZADD', key, 'NX', score, unit) == 0 then
        -- A repeated acquire: the unit is already here. Note where it stood (it may not have counted in
        -- a shorter window), then move it to now, as a first acquire would have placed it.
        before[key] = tonumber(redis.call('ZSCORE', key, unit))
        redis.call('ZADD', key, 'XX', score, unit)
      end
      if window > 0 then
        -- The new hit is the latest (hits of other nodes are later only by their clock skew, which the
        -- slack covers), so the key must live as long as its longest window more.
        redis.call('PEXPIRE', key, keep + slack)
      elseif was_empty then
        redis.call('PEXPIRE', key, hold + slack)
      else
        -- a unit re-armed for a session may outlive the one added now
        units_expire_after_last(key, 0, now, slack)
      end
      fresh[key] = was_empty
    end
    local old = before[key]
    if old == nil or (window > 0 and window < keep and old <= now - window) then
      counts[i] = counts[i] + 1
    end
  end
  return fresh
end

-- Appends used_i, wait_i, refused_i for every rule to out (see acquire_units.lua for their meaning).
-- counts: from units_check (updated by units_consume); fresh: from units_consume, or nil when nothing
-- was consumed.
local function units_report(kbase, abase, refused, counts, fresh, out)
  local now, hold = tonumber(ARGV[abase + 1]), tonumber(ARGV[abase + 3])
  for i = 1, #KEYS - kbase do
    local key, limit, window, keep = units_rule(kbase, abase, i)
    local used = counts[i]
    local wait = window
    if fresh and fresh[key] then
      -- the only member is the one just added: it leaves after one window, or one hold
      if window == 0 then
        wait = hold
      end
    elseif used > 0 then
      local index = used - limit
      if index < 0 then
        index = 0
      end
      local member
      if window < keep then
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
