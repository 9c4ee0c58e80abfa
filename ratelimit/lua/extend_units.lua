-- extend_units.lua (run with lib_units.lua prepended): renew a held concurrent unit for as long as what it
-- counts goes on (a request still waiting in the queue): its expiry becomes now + hold unless it is already
-- later. A unit that was released or has already expired is NOT brought back.
--
-- Same layout and clock choice as acquire_units.lua: ZSET of unit ids scored by expiry in ms.
--
-- KEYS[i]   the concurrent ZSET of rule i, i = 1..n
-- ARGV[1]   now, integer ms since the epoch (caller's clock)
-- ARGV[2]   unit id
-- ARGV[3]   hold, integer ms > 0: the unit's expiry becomes at least now + hold
-- ARGV[4]   slack, integer ms >= 0, added to the key expiry (clock-skew allowance, see acquire_units.lua)
--
-- Returns an integer: how many of the sets held the unit.

return units_touch(0, 0, true)
