-- admit.lua: decide one POST /api/session/request in a single round trip.
-- Run with lib_store.lua prepended (shared KEYS[1..13] and ARGV[1] = now are documented there).
-- KEYS[14] outcome key of this request (HASH; only checked, to refuse a reused request id)
-- KEYS[15] tombstone key of this request (only checked, same reason)
-- ARGV[1]  now (caller clock, seconds)
-- ARGV[2]  request_id
-- ARGV[3]  campaign id
-- ARGV[4]  entry data as JSON text (stored verbatim if the request is queued)
-- ARGV[5]  global cap (pending + active leases overall)
-- ARGV[6]  per-campaign caps as a JSON object {"campaign": cap}; a missing campaign has no own cap
-- ARGV[7]  pending lease seconds
-- ARGV[8]  max queue length
-- ARGV[9]  lease nonce (random, unique per call); lease ids are nonce..':'..n
-- ARGV[10] scan limit (max queue entries inspected for eligibility)
-- Returns: {outcome, lease_id, position, n, then n times: request_id, campaign, lease_id, data}
--   outcome "admitted" (lease_id set, position 0), "queued" (lease_id "", position >= 1) or
--   "full" (nothing stored for the new request); the n entries are older queued entries this call
--   claimed (each with its own pending lease), whatever the outcome.
--   Error reply "DUPLICATE ..." when the request id is already known.
-- Steps: reap expired leases; claim older eligible entries first so the new request never overtakes
-- them; then admit the new request only if the scan proved nothing eligible is left and both caps have
-- room; otherwise enqueue it at the back (exact position = queue length) unless the queue is full.
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

if redis.call('HEXISTS', K_ENTRIES, request_id) == 1 or redis.call('EXISTS', KEYS[14], KEYS[15]) > 0 then
  return redis.error_reply('DUPLICATE request id is already known: ' .. request_id)
end

reap()
local claimed_list = {}
local claimed, room, exhausted = claim_eligible(claimed_list, caps, global_cap, lease_seconds,
                                                 math.huge, nonce, scan_limit)

local reply
if room > 0 and exhausted and campaign_has_room(caps, campaign) then
  local lease = nonce .. ':0'
  take_pending_lease(lease, campaign, request_id, NOW + lease_seconds)
  reply = {'admitted', lease, 0, claimed}
else
  local queued = redis.call('ZCARD', K_QUEUE)
  if queued >= max_queue then
    reply = {'full', '', 0, claimed}
  else
    local seq = redis.call('INCR', K_SEQ)
    -- the new entry has the highest score, so its position is the queue length after the ZADD
    local position = queued + redis.call('ZADD', K_QUEUE, seq, request_id)
    redis.call('HSET', K_ENTRIES, request_id, data)
    redis.call('HSET', K_ENTRY_CAMPAIGN, request_id, campaign)
    reply = {'queued', '', position, claimed}
  end
end
for _, v in ipairs(claimed_list) do
  reply[#reply + 1] = v
end
return reply
