-- claim.lua: when capacity frees, reap expired leases and claim the oldest eligible queued entries.
-- Run with lib_store.lua prepended (shared KEYS[1..13] and ARGV[1] = now are documented there).
-- ARGV[1] now (caller clock, seconds)
-- ARGV[2] global cap
-- ARGV[3] per-campaign caps as a JSON object {"campaign": cap}
-- ARGV[4] pending lease seconds
-- ARGV[5] limit: most entries to claim
-- ARGV[6] lease nonce (random, unique per call)
-- ARGV[7] scan limit (max queue entries inspected)
-- Returns: {n, then n times: request_id, campaign, lease_id, data}
-- Atomic, so two processes never claim the same entry: a claimed entry leaves the queue and is bound
-- to its lease in entry_lease within this one script.
-- Complexity: reap() plus O((S + n) log N), S <= ARGV[7].
reap()
local reply = {0}
local claimed = claim_eligible(reply, cjson.decode(ARGV[3]), tonumber(ARGV[2]), tonumber(ARGV[4]),
                               tonumber(ARGV[5]), ARGV[6], tonumber(ARGV[7]))
reply[1] = claimed
return reply
