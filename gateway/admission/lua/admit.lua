-- admit.lua: decide one POST /api/session/request in a single round trip.
-- Run with lib_store.lua and ratelimit/lua/lib_units.lua prepended (shared KEYS[1..13] and ARGV[1] = now
-- are documented in lib_store.lua, the rate-limit layout in lib_units.lua).
-- KEYS[14] outcome key of this request (HASH; only checked, to refuse a reused request id)
-- KEYS[15] tombstone key of this request (only checked, same reason)
-- KEYS[16] the deployment's epoch (STRING, gateway/epoch.py)
-- KEYS[17] fence of this call's nonce (claim.lua "settle": the caller lost this call's reply and settled it)
-- KEYS[18] the operators' controls (HASH, gateway/admission/keys.py "control"): "paused" = "1" queues every
--          request and claims nothing; "cap" replaces ARGV[5]
-- KEYS[19..] the request's rate-limit rule sets (none when no limit applies)
-- ARGV[1]  now (caller clock, seconds)
-- ARGV[2]  request_id
-- ARGV[3]  campaign id
-- ARGV[4]  entry data as JSON text (stored verbatim if the request is queued)
-- ARGV[5]  global cap (pending + active leases overall)
-- ARGV[6]  per-campaign caps as a JSON object {"campaign": cap}; a missing campaign has no own cap
-- ARGV[7]  pending lease seconds
-- ARGV[8]  max queue length
-- ARGV[9]  lease nonce (random, unique per call, made by the caller); lease ids are nonce..':'..n, n = 0
--          for this request's own lease, 1.. for the entries it claims
-- ARGV[10] scan limit (max queue entries inspected for eligibility)
-- ARGV[11..15] the rate-limit unit arguments of lib_units.lua (abase = 10; the unit id is the request id),
--          present only with KEYS[19..]
-- ARGV[#ARGV] the epoch the caller knows, or "" when it knows none yet (then not checked)
-- Returns: {outcome, lease_id, position, n, m, then m limit values, then n times: request_id, campaign,
--          lease_id, data}
--   outcome "admitted" (lease_id set, position 0), "queued" (lease_id "", position >= 1), "full"
--   (nothing stored for the new request) or "limited" (a rate limit refused: nothing stored, nothing
--   consumed, nothing claimed); the m values are the rate-limit report of lib_units.lua (m = 3 per rule,
--   0 without limits); the n entries are older queued entries this call claimed (each with its own
--   pending lease), whatever the outcome.
--   Error reply "DUPLICATE ..." when the request id is already known, "EPOCH ..." when the store's epoch
--   is not the caller's (the store was reset since the caller last looked: nothing is done, so that no
--   request is admitted against counts the reset wiped out), "FENCED ..." when the caller already gave
--   this call up (its reply was lost, and what it would have claimed was settled): nothing is done.
-- Steps: check the rate limits (refuse before anything else is touched); reap expired leases; claim older eligible entries first so the new request never overtakes
-- them; then admit the new request only if the scan proved nothing eligible is left and both caps have
-- room; otherwise enqueue it at the back (exact position = queue length) unless the queue is full. The
-- rate limits are consumed only for "admitted" and "queued": all-or-nothing, in the same atomic call.
-- Complexity: O(log N) when the queue is empty or the global cap is full (the common paths), plus
-- reap() and at most ARGV[10] scanned entries when there is room and a non-empty queue.
local request_id, campaign, data = ARGV[2], ARGV[3], ARGV[4]
local global_cap = tonumber(ARGV[5])
-- "{}" (no campaign has its own cap) is the usual value: skip the decoder for it
local caps = ARGV[6] == '{}' and {} or cjson.decode(ARGV[6])
local lease_seconds = tonumber(ARGV[7])
local max_queue = tonumber(ARGV[8])
local nonce = ARGV[9]
local scan_limit = tonumber(ARGV[10])

local known_epoch = ARGV[#ARGV]
if known_epoch ~= '' and redis.call('GET', KEYS[16]) ~= known_epoch then
  return redis.error_reply('EPOCH the store was reset since this process last looked')
end
if redis.call('EXISTS', KEYS[17]) == 1 then
  return redis.error_reply('FENCED this admission was given up by its caller')
end
if redis.call('HEXISTS', K_ENTRIES, request_id) == 1 or redis.call('EXISTS', KEYS[14], KEYS[15]) > 0 then
  return redis.error_reply('DUPLICATE request id is already known: ' .. request_id)
end

-- An operator's controls apply in this same call, so every process obeys a pause or a new cap at once.
local control = redis.call('HMGET', KEYS[18], 'paused', 'cap')
local paused = control[1] == '1'
if control[2] then
  global_cap = tonumber(control[2])
end

local has_limits = #KEYS > 18
local limits_ok, limit_call, refused, counts = 1, nil, nil, nil
if has_limits then
  limit_call = units_parse(18, 10)
  limits_ok, refused, counts = units_check(limit_call)
  if limits_ok == 0 then
    local reply = {'limited', '', 0, 0, 0}
    units_report(limit_call, refused, counts, nil, reply)
    reply[5] = #reply - 5
    return reply
  end
end

reap()
local claimed_list = {}
local claimed, room, exhausted = 0, 0, false
if not paused then
  claimed, room, exhausted = claim_eligible(claimed_list, caps, global_cap, lease_seconds, math.huge, nonce,
                                            scan_limit)
end

local reply
if room > 0 and exhausted and campaign_has_room(caps, campaign) then
  local lease = nonce .. ':0'
  take_pending_lease(lease, campaign, request_id, NOW + lease_seconds)
  reply = {'admitted', lease, 0, claimed, 0}
else
  local queued = redis.call('ZCARD', K_QUEUE)
  if queued >= max_queue then
    reply = {'full', '', 0, claimed, 0}
  else
    local seq = redis.call('INCR', K_SEQ)
    -- the new entry has the highest score, so its position is the queue length after the ZADD
    local position = queued + redis.call('ZADD', K_QUEUE, seq, request_id)
    redis.call('HSET', K_ENTRIES, request_id, data)
    redis.call('HSET', K_ENTRY_CAMPAIGN, request_id, campaign)
    reply = {'queued', '', position, claimed, 0}
  end
end
if has_limits then
  local fresh = nil
  if reply[1] ~= 'full' then
    fresh = units_consume(limit_call, counts)
  end
  units_report(limit_call, refused, counts, fresh, reply)
  reply[5] = #reply - 5
end
for _, v in ipairs(claimed_list) do
  reply[#reply + 1] = v
end
return reply
