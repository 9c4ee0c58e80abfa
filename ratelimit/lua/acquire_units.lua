-- acquire_units.lua (run with lib_units.lua prepended): check every rate-limit rule of one request and, only if all admit, consume one
-- unit of each (all-or-nothing in one atomic call; when any rule refuses nothing is written).
--
-- Members are unit ids (one per request, so a refund can find its hits):
--   window rules (hourly/daily): the windows of one subject share one ZSET of hits, score = hit time in ms;
--     a hit counts in a window while hit > now - window (exact sliding window, no burst at an edge: a hit
--     at t counts at t+window-1ms, not at t+window); hits are kept for the longest window there is
--     (UNITS_HISTORY_MS, one day), whatever windows a call carries;
--   concurrent rule: its own ZSET, score = the unit's expiry in ms; a unit counts while expiry > now, so a
--     unit whose release was lost leaves by itself and the count cannot leak.
-- Expired members are dropped on every call. A key expires (PEXPIRE) when its last member stops mattering,
-- plus a slack (ARGV[4]): Redis counts a key's TTL on its own clock, and a node whose clock lags Redis's
-- must not see a key vanish while, by its clock, a member still counts.
--
-- Time is the caller's clock (ARGV[1]), not Redis TIME: it keeps the limiter testable with an injected
-- clock, and gateway nodes sharing this Redis are expected to run NTP (skew of a few ms is irrelevant to
-- hour-long windows and session-long holds).
--
-- KEYS[j]          the sets the rules count in, j = 1..m, each once (a subject's windows share one)
-- ARGV[1]          now, integer ms since the epoch
-- ARGV[2]          unit id (unique per request)
-- ARGV[3]          hold, integer ms > 0: how long a new concurrent unit lives before it expires by itself
-- ARGV[4]          slack, integer ms >= 0, added to every key expiry (see above)
-- ARGV[5]          the rules, in order, as a flat JSON array of integers, three per rule: set (the rule's j
--                  in KEYS), limit > 0, window in ms (at most one day), or 0 for a concurrent rule
--
-- Returns a flat array of 1 + 3n integers:
--   [1]            1 if every rule admitted and a unit was consumed from each, else 0
--   [3i-1]         used_i: members counting now (after consuming, when admitted)
--   [3i]           wait_i: ms until rule i's room grows (a full rule: until it admits again), i.e. until member
--                  number max(0, used_i - limit_i) (0-based, soonest to leave first) leaves the set; for an empty
--                  window the window itself (a hit made now stays that long), for an empty concurrent set 0
--   [3i+1]         1 if rule i refused, else 0
-- A unit id already present in a rule's set (a repeated acquire) is not counted twice.

local call = units_parse(0, 0)
local allowed, refused, counts = units_check(call)
local fresh = nil
if allowed == 1 then
  fresh = units_consume(call, counts)
end
local result = {allowed}
units_report(call, refused, counts, fresh, result)
return result
