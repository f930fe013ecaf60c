-- Record how a send attempt ended, if the attempt still owns the communication.
--
-- KEYS[1]  amends:{NN}:comm:{comm_id}   hash  the communication
-- KEYS[2]  amends:{NN}:inflight    zset  unfinished communication id -> when to look at it again (ms)
-- KEYS[3]  amends:{NN}:counters    hash  "n:{kind}:{status}" -> how many are in that status now;
--                                        "late:le:{ms}", "late:count", "late:sum_ms" -> lateness of sent ones
-- KEYS[4]  amends:{NN}:msg:{comm_id}    string  subject, Message-ID, reply and message, packed
-- ARGV[1]  token                   the token begin_send.lua handed to this attempt
-- ARGV[2]  status                  "sent", "failed", "cancelled" or "retrying"
-- ARGV[3]  now_ms                  epoch milliseconds
-- ARGV[4]  next_attempt_ms         with "retrying": when to try again (ignored otherwise)
-- ARGV[5]  packed                  what to keep at KEYS[4] ("": leave it as it is)
-- ARGV[6..] field, value, ...      more fields to set with the status
--
-- A final status takes the communication off the inflight set and wakes the thread's next
-- message (it may have been waiting for this one); "retrying" schedules the next attempt.
-- Returns {1, next_id or ""} when written, {0, ""} when the attempt no longer owns the
-- communication (its lease expired and another attempt took over).

local comm = KEYS[1]
local inflight = KEYS[2]
local counters = KEYS[3]
-- Upper bounds of the lateness histogram (ms); scheduler.storage.keys.LATENESS_BUCKETS_MS
local BUCKETS = {500, 1000, 2000, 5000, 10000, 30000, 60000, 300000}
if redis.call("HGET", comm, "status") ~= "sending" or redis.call("HGET", comm, "token") ~= ARGV[1] then
    return {0, ""}
end
local id = redis.call("HGET", comm, "id")
local status = ARGV[2]
local kind = redis.call("HGET", comm, "kind")
redis.call("HSET", comm, "status", status)
if ARGV[5] ~= "" then
    redis.call("SET", KEYS[4], ARGV[5])
end
for i = 6, #ARGV, 2 do
    redis.call("HSET", comm, ARGV[i], ARGV[i + 1])
end
redis.call("HINCRBY", counters, "n:" .. kind .. ":sending", -1)
redis.call("HINCRBY", counters, "n:" .. kind .. ":" .. status, 1)
if status == "sent" then
    local late_ms = tonumber(redis.call("HGET", comm, "sent_ms") or ARGV[3]) - tonumber(redis.call("HGET", comm, "promised_ms"))
    if late_ms < 0 then
        late_ms = 0
    end
    for _, bound in ipairs(BUCKETS) do
        if late_ms <= bound then
            redis.call("HINCRBY", counters, "late:le:" .. bound, 1)
        end
    end
    redis.call("HINCRBY", counters, "late:count", 1)
    redis.call("HINCRBY", counters, "late:sum_ms", late_ms)
end
redis.call("HDEL", comm, "lease_until_ms", "token")
if status == "retrying" then
    redis.call("HSET", comm, "next_attempt_ms", ARGV[4])
    redis.call("ZADD", inflight, ARGV[4], id)
    return {1, ""}
end
redis.call("HDEL", comm, "next_attempt_ms")
redis.call("ZREM", inflight, id)
local following = redis.call("HGET", comm, "next")
if following then
    redis.call("ZADD", inflight, "XX", "LT", ARGV[3], following)
    return {1, following}
end
return {1, ""}
