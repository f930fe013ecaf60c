-- A send rate shared by every worker: reserve a slot, or pause after a throttling reply.
-- The same rule as scheduler/core/rate.py (reserve, pause), in one atomic step.
--
-- KEYS[1]  amends:rate:{bucket}   string  the bucket's theoretical arrival time of the next send (epoch ms, may be fractional)
-- ARGV[1]  now_ms                  the caller's clock, epoch ms
-- ARGV[2]  mode                    "reserve" or "pause"
-- ARGV[3]  interval_ms             with "reserve": ms between two sends
--                                  with "pause": how long no slot is handed out
-- ARGV[4]  horizon_ms              with "reserve": how far ahead a slot may be reserved
--
-- "reserve" returns {1, wait_ms} with the slot reserved (send after wait_ms), or {0, wait_ms}
-- when the next slot is further ahead than the horizon (nothing reserved: ask again after
-- wait_ms). "pause" returns {1, 0}. The key expires once it no longer holds a future slot.

local now = tonumber(ARGV[1])
local tat = tonumber(redis.call("GET", KEYS[1]) or "0")
local function keep(value)
    local ttl = math.ceil(value - now) + 1000
    redis.call("SET", KEYS[1], string.format("%.3f", value), "PX", ttl)
end
if ARGV[2] == "pause" then
    local until_ms = now + tonumber(ARGV[3])
    if until_ms > tat then
        keep(until_ms)
    end
    return {1, 0}
end
local start = math.max(tat, now)
local wait = start - now
if wait <= tonumber(ARGV[4]) then
    keep(start + tonumber(ARGV[3]))
    return {1, math.ceil(wait)}
end
return {0, math.ceil(wait - tonumber(ARGV[4]))}
