-- Move a communication to `sending` if it may go out now.
--
-- KEYS[1]  amends:{NN}:comm:{comm_id}   hash  the communication
-- KEYS[2]  amends:{NN}:inflight         zset  unfinished communication id -> when to look at it again (ms)
-- KEYS[3]  amends:{NN}:counters         hash  "n:{kind}:{status}" -> communications now in that status
-- KEYS[4]  amends:{NN}:ctx:{comm_id}    string  its template context, packed (scheduler/storage/texts.py)
-- ARGV[1]  now_ms                       epoch milliseconds
-- ARGV[2]  lease_ms                     how long the `sending` claim holds
-- ARGV[3]  token                        identifies this attempt for finish_send.lua
-- ARGV[4]  wait_recheck_ms              when a message waiting for its predecessor is looked at again
--                                       at the latest (finish_send.lua wakes it sooner)
-- ARGV[5]  comm_prefix                  "amends:{NN}:comm:": the thread's previous communication,
--                                       named by the `prev` field, is read at ARGV[5] .. prev
--                                       (the caller cannot know it without a round trip; it
--                                       belongs to the same incident and thread)
--
-- Returns {"ok", prev_status, prev_sent_ms, context, field, value, ...} when the caller may
-- send (its packed context, "" if none, and the communication's fields, as taken); otherwise {why}:
--   "missing", "sent", "failed", "cancelled"  nothing to do
--   "sending"     another attempt holds a live lease (the sweep looks again when it expires)
-- The same attempt asking again (a client that lost the reply retries the call, with the
-- same token) is answered "ok" again, as taken, rather than left waiting for its own lease.
--   "early"       a retry whose next attempt is not due yet
--   "waiting"     the previous message of the thread has not ended yet (thread order)
--   "superseded"  a no-news update that a newer message of the thread replaces: now cancelled
-- With "superseded" the second element is the next communication's id, to be dispatched.

local comm = KEYS[1]
local inflight = KEYS[2]
local counters = KEYS[3]
local now = tonumber(ARGV[1])
local lease_ms = tonumber(ARGV[2])
local id = redis.call("HGET", comm, "id")

local status = redis.call("HGET", comm, "status")
if not status then
    return {"missing"}
end
local retaken = false
if status == "sending" then
    local lease_until = tonumber(redis.call("HGET", comm, "lease_until_ms") or "0")
    retaken = redis.call("HGET", comm, "token") == ARGV[3]
    if lease_until > now and not retaken then
        return {"sending"}
    end
elseif status == "retrying" then
    local next_attempt = tonumber(redis.call("HGET", comm, "next_attempt_ms") or "0")
    if next_attempt > now then
        redis.call("ZADD", inflight, next_attempt, id)
        return {"early"}
    end
elseif status ~= "scheduled" then
    redis.call("ZREM", inflight, id)
    return {status}
end

local prev_id = redis.call("HGET", comm, "prev")
local before, before_sent = "", ""
if prev_id then
    local prev = ARGV[5] .. prev_id
    before = redis.call("HGET", prev, "status") or ""
    if before == "scheduled" or before == "sending" or before == "retrying" then
        redis.call("ZADD", inflight, now + tonumber(ARGV[4]), id)
        return {"waiting"}
    end
    before_sent = redis.call("HGET", prev, "sent_ms") or ""
end

local following = redis.call("HGET", comm, "next")
if following and redis.call("HGET", comm, "no_news") == "1" then
    local kind = redis.call("HGET", comm, "kind")
    redis.call("HINCRBY", counters, "n:" .. kind .. ":" .. status, -1)
    redis.call("HINCRBY", counters, "n:" .. kind .. ":cancelled", 1)
    redis.call("HSET", comm, "status", "cancelled", "last_error", "superseded by " .. following,
        "updated_ms", ARGV[1])
    redis.call("HDEL", comm, "lease_until_ms", "token", "next_attempt_ms")
    redis.call("ZREM", inflight, id)
    redis.call("ZADD", inflight, "XX", "LT", now, following)
    return {"superseded", following}
end

if status ~= "sending" then
    local kind = redis.call("HGET", comm, "kind")
    redis.call("HINCRBY", counters, "n:" .. kind .. ":" .. status, -1)
    redis.call("HINCRBY", counters, "n:" .. kind .. ":sending", 1)
end
if not retaken then
    redis.call("HSET", comm,
        "status", "sending",
        "lease_until_ms", tostring(now + lease_ms),
        "token", ARGV[3],
        "updated_ms", ARGV[1])
    redis.call("HSETNX", comm, "first_attempt_ms", ARGV[1])
    redis.call("HINCRBY", comm, "attempts", 1)
    -- A worker that dies while sending leaves the lease to expire; the sweep then looks again.
    redis.call("ZADD", inflight, now + lease_ms, id)
end
local taken = redis.call("HGETALL", comm)
table.insert(taken, 1, redis.call("GET", KEYS[4]) or "")
table.insert(taken, 1, before_sent)
table.insert(taken, 1, before)
table.insert(taken, 1, "ok")
return taken
