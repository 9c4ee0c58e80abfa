-- claim.lua: when capacity frees, reap expired leases and claim the oldest eligible queued entries; or
-- settle an earlier claim whose reply was lost.
-- Run with lib_store.lua prepended (shared KEYS[1..13] and ARGV[1] = now are documented there).
-- KEYS[14] fence of this claim token (STRING, set by "settle"; a claim whose token is fenced claims nothing)
-- KEYS[15] the deployment's epoch (STRING, gateway/epoch.py)
-- KEYS[16] the operators' controls (HASH, as in admit.lua): while "paused" = "1" a claim takes nothing
--          (it still reaps); "cap" replaces ARGV[2]
-- ARGV[1] now (caller clock, seconds)
-- ARGV[2] global cap
-- ARGV[3] per-campaign caps as a JSON object {"campaign": cap}
-- ARGV[4] pending lease seconds
-- ARGV[5] limit: most entries to claim
-- ARGV[6] claim token (random, unique per claim, made by the caller); lease ids are token..':'..n
-- ARGV[7] scan limit (max queue entries inspected)
-- ARGV[8] mode: "claim", or "settle" to recover what a claim with this token took
-- ARGV[9] the epoch the caller knows, or "" (not checked); a claim under another epoch is refused with
--         the error "EPOCH ...", as in admit.lua
-- Returns: {n, then n times: request_id, campaign, lease_id, data}
--   "claim": the entries claimed now. "settle": the entries still held under the token (their leases
--   renewed to now + ARGV[4]), after fencing the token so that the claim, if it has not run yet, claims
--   nothing when it does. A pending lease of the token whose entry is gone (the client left) is released.
-- An admission (admit.lua) claims under its own nonce the same way, and is settled the same way when its
-- reply was lost; admit.lua checks the fence too.
-- Why "settle": a dispatcher whose claim reply was lost (Redis stalled past its command timeout) cannot
-- know what it claimed, but it knows the token it sent. Settling is idempotent, so it may be repeated
-- until a reply arrives, in either order with the lost claim.
-- Atomic, so two processes never claim the same entry: a claimed entry leaves the queue and is bound
-- to its lease in entry_lease within this one script.
-- Complexity: claim: reap() plus O((S + n) log N), S <= ARGV[7]; settle: O(ARGV[5] log N).
local token, limit, lease_seconds = ARGV[6], tonumber(ARGV[5]), tonumber(ARGV[4])
local FENCE_SECONDS = 3600  -- far longer than a lost claim can stay unexecuted in a stalled Redis

if ARGV[9] ~= '' and redis.call('GET', KEYS[15]) ~= ARGV[9] then
  return redis.error_reply('EPOCH the store was reset since this process last looked')
end
if ARGV[8] == 'settle' then
  redis.call('SET', KEYS[14], '1', 'EX', FENCE_SECONDS)
  local reply = {0}
  -- n = 0 is the lease an admission takes for its own request (admit.lua): settled for an admission
  -- whose reply was lost, its client was told it failed, so that lease is given back below.
  for n = 0, limit do
    local lease = token .. ':' .. n
    if redis.call('ZSCORE', K_PENDING, lease) then
      local meta = decode_meta(redis.call('HGET', K_LEASE_META, lease))
      local rid = meta and meta.r
      if rid and redis.call('HGET', K_ENTRY_LEASE, rid) == lease and redis.call('HEXISTS', K_ENTRIES, rid) == 1 then
        -- the dispatcher serves it now: the lease covers its platform call from now on
        meta.g = nil
        redis.call('HSET', K_LEASE_META, lease, cjson.encode(meta))
        redis.call('ZADD', K_PENDING, NOW + lease_seconds, lease)
        reply[1] = reply[1] + 1
        reply[#reply + 1] = rid
        reply[#reply + 1] = meta.c
        reply[#reply + 1] = lease
        reply[#reply + 1] = redis.call('HGET', K_ENTRIES, rid)
      else
        drop_pending_lease(lease, meta)
      end
    end
  end
  return reply
end

if redis.call('EXISTS', KEYS[14]) == 1 then
  return {0}
end
reap()
local control = redis.call('HMGET', KEYS[16], 'paused', 'cap')
if control[1] == '1' then
  return {0}
end
local reply = {0}
local global_cap = tonumber(control[2] or ARGV[2])
local claimed = claim_eligible(reply, cjson.decode(ARGV[3]), global_cap, lease_seconds, limit, token,
                               tonumber(ARGV[7]))
reply[1] = claimed
return reply
