-- reap.lua: reclaim expired leases now (also done at the start of admit and claim).
-- Run with lib_store.lua prepended (shared KEYS[1..13] are documented there).
-- ARGV[1] now (caller clock, seconds)
-- Returns: number of leases reclaimed (pending + active).
-- A reaped pending lease of a claimed entry sends that entry back to the front of the queue.
-- Complexity: O((E + 1) log N) for E expired leases, E <= 2 * REAP_BATCH per call.
return reap()
