-- remove_units.lua: take one unit id out of rule sets. Used for release (only the concurrent sets: the
-- windows keep their hits) and for refund (every set: the request never happened). Idempotent.
--
-- Same layout and clock choice as acquire_units.lua. Expired members are dropped too, and each key's
-- expiry is recomputed from its last member (Redis deletes a set that becomes empty).
--
-- KEYS[i]     a rule set, i = 1..n (each set once)
-- ARGV[1]     now, integer ms since the epoch (caller's clock)
-- ARGV[2]     unit id
-- ARGV[3]     slack, integer ms >= 0, added to every key expiry (clock-skew allowance, see acquire_units.lua)
-- ARGV[3+i]   how long set i keeps a member, in integer ms: the hits history for a set of hits,
--             0 for a concurrent set (scored by expiry)
--
-- Returns an integer: how many sets held the unit.

local now = tonumber(ARGV[1])
local unit = ARGV[2]
local slack = tonumber(ARGV[3])
local removed = 0
for i = 1, #KEYS do
  local key = KEYS[i]
  local window = tonumber(ARGV[3 + i])
  removed = removed + redis.call('ZREM', key, unit)
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
  local last = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
  if last[1] then
    redis.call('PEXPIRE', key, tonumber(last[2]) + window - now + slack)
  end
end
return removed
