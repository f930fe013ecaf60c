-- claim(keys=[timers, leased, due, claims], args=[now_ms, lease_ms, limit, token, wanted...])
--
-- Hands out up to `limit` timers in one atomic step, so that concurrent schedulers never
-- receive the same timer while its lease runs:
--
--   * armed timers whose due time is <= now_ms are taken out of `timers`;
--   * claimed timers whose lease expired (score <= now_ms in `leased`) are handed out
--     again, with the due time they were first claimed at;
--   * every timer handed out gets a fresh lease (now_ms + lease_ms) in `leased` and its
--     due time recorded in `due`, until ack removes both.
--
-- A timer that is both due in `timers` and lease-expired is handed out once, with the
-- earlier of its two due times. Timers already leased but re-armed for a due time that has
-- passed are handed out again (the re-arm asked for another delivery).
--
-- KEYS[1] timers  amends:{NN}:timers         zset  member -> due time (epoch ms)
-- KEYS[2] leased  amends:{NN}:timers:leased  zset  member -> lease expiry (epoch ms)
-- KEYS[3] due     amends:{NN}:timers:due     hash  member -> due time it was claimed at (epoch ms)
-- KEYS[4] claims  amends:{NN}:timers:claims  hash  member -> token of the claim that holds it
--
-- ARGV[1] now_ms    the caller's clock, epoch ms (the Redis clock is never read)
-- ARGV[2] lease_ms  how long a claim stays with its claimer before it is handed out again
-- ARGV[3] limit     the most timers to hand out (>= 1)
-- ARGV[4] token     unique to this call (made again only by a retry of the same call)
-- ARGV[5..] wanted  optional: only these members may be handed out (the caller chose them
--                   across shards); each goes out with the earlier of its lapsed lease's due
--                   time and its armed due time, whichever of them has passed
--
-- The same call made again (a client that lost the reply retries it, with the same token)
-- hands out again the wanted timers it leased the first time; otherwise they would sit
-- unsent until that lease ran out. Another claim's timers are never handed out this way.
--
-- Returns a flat array [member, due_ms, member, due_ms, ...], earliest due first
-- (ties by member).

local timers = KEYS[1]
local leased = KEYS[2]
local dues = KEYS[3]
local claims = KEYS[4]

local now_ms = tonumber(ARGV[1])
local lease_ms = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])
local expires_ms = now_ms + lease_ms
local token = ARGV[4]

local wanted = nil
if #ARGV > 4 then
    wanted = {}
    for i = 5, #ARGV do
        wanted[ARGV[i]] = true
    end
end

local picked = {}  -- member -> entry
local entries = {} -- {member, due_ms, armed}

local function consider(member, due_ms, armed)
    if wanted ~= nil and not wanted[member] then
        return
    end
    local entry = picked[member]
    if entry == nil then
        entry = {member, due_ms, armed}
        picked[member] = entry
        entries[#entries + 1] = entry
    else
        if due_ms < entry[2] then
            entry[2] = due_ms
        end
        entry[3] = entry[3] or armed
    end
end

local function consider_lapsed(member, expiry_ms)
    -- The due time is always recorded with the lease; the expiry is only a fallback for
    -- a hash entry removed by hand.
    consider(member, tonumber(redis.call("hget", dues, member) or expiry_ms), false)
end

if wanted ~= nil then
    -- Each wanted member is looked up by name: a range cut to `limit` before the filter
    -- could miss a wanted member's lapsed lease or its armed entry behind others' entries.
    for i = 5, #ARGV do
        local member = ARGV[i]
        local expiry_ms = tonumber(redis.call("zscore", leased, member))
        if expiry_ms ~= nil and expiry_ms <= now_ms then
            consider_lapsed(member, expiry_ms)
        end
        local due_ms = tonumber(redis.call("zscore", timers, member))
        if due_ms ~= nil and due_ms <= now_ms then
            consider(member, due_ms, true)
        end
    end
else
    local expired = redis.call("zrangebyscore", leased, "-inf", now_ms, "withscores", "limit", 0, limit)
    for i = 1, #expired, 2 do
        consider_lapsed(expired[i], expired[i + 1])
    end
    local armed = redis.call("zrangebyscore", timers, "-inf", now_ms, "withscores", "limit", 0, limit)
    for i = 1, #armed, 2 do
        consider(armed[i], tonumber(armed[i + 1]), true)
    end
end

if wanted ~= nil then
    for i = 5, #ARGV do
        local member = ARGV[i]
        if picked[member] == nil and redis.call("hget", claims, member) == token then
            consider(member, tonumber(redis.call("hget", dues, member) or now_ms), false)
        end
    end
end

table.sort(entries, function(a, b)
    if a[2] ~= b[2] then
        return a[2] < b[2]
    end
    return a[1] < b[1]
end)

-- One command per kind rather than one per timer, in slices because Lua's unpack is
-- limited by its small C stack.
local SLICE = 1000
local function call_sliced(command, key, args, width)
    for first = 1, #args, SLICE * width do
        redis.call(command, key, unpack(args, first, math.min(first + SLICE * width - 1, #args)))
    end
end

local result = {}
local taken = {}
local leases = {}
local claimed_dues = {}
local tokens = {}
for i = 1, math.min(limit, #entries) do
    local member, due_ms, from_armed = entries[i][1], entries[i][2], entries[i][3]
    if from_armed then
        taken[#taken + 1] = member
    end
    leases[#leases + 1] = expires_ms
    leases[#leases + 1] = member
    claimed_dues[#claimed_dues + 1] = member
    claimed_dues[#claimed_dues + 1] = due_ms
    tokens[#tokens + 1] = member
    tokens[#tokens + 1] = token
    result[#result + 1] = member
    result[#result + 1] = due_ms
end
call_sliced("zrem", timers, taken, 1)
call_sliced("zadd", leased, leases, 2)
call_sliced("hset", dues, claimed_dues, 2)
call_sliced("hset", claims, tokens, 2)
return result
