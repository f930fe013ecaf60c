-- Move a communication to `sending` if nobody else is sending it.
--
-- KEYS[1]  amends:comm:{comm_id}   hash   the communication
-- ARGV[1]  now_ms                  epoch milliseconds (the caller's clock)
-- ARGV[2]  lease_ms                how long the `sending` claim holds
-- ARGV[3]  token                   identifies this attempt for finish_send.lua
--
-- Returns "ok" when the caller may send; otherwise the status that stops it
-- ("missing", "sent", "failed", "cancelled", or "sending" while another lease lives).

local status = redis.call("HGET", KEYS[1], "status")
if not status then
    return "missing"
end
local now = tonumber(ARGV[1])
if status == "sending" then
    local lease_until = tonumber(redis.call("HGET", KEYS[1], "lease_until_ms") or "0")
    if lease_until > now then
        return "sending"
    end
elseif status ~= "scheduled" and status ~= "retrying" then
    return status
end
redis.call("HSET", KEYS[1],
    "status", "sending",
    "lease_until_ms", tostring(now + tonumber(ARGV[2])),
    "token", ARGV[3],
    "updated_ms", ARGV[1])
redis.call("HINCRBY", KEYS[1], "attempts", 1)
return "ok"
