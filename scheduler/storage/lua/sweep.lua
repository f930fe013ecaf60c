-- sweep(keys=[inflight], args=[now_ms, recheck_ms, limit])
--
-- Hands out unfinished communications that are due a look (never dispatched after a crash,
-- a lease that expired, a retry that is due, a message whose predecessor ended) and
-- pushes each one's next look `recheck_ms` ahead, so that concurrent schedulers do not
-- hand out the same one twice in a row. A communication leaves the set only when it ends
-- (finish_send.lua, or begin_send.lua finding it ended).
--
-- KEYS[1] inflight  amends:{NN}:inflight  zset  communication id -> when to look at it (epoch ms)
--
-- ARGV[1] now_ms      the caller's clock, epoch ms
-- ARGV[2] recheck_ms  how far ahead the next look is pushed
-- ARGV[3] limit       the most ids to hand out
--
-- Returns the ids, earliest first.

local inflight = KEYS[1]
local now = tonumber(ARGV[1])
local due = redis.call("ZRANGEBYSCORE", inflight, "-inf", now, "LIMIT", 0, tonumber(ARGV[3]))
for _, id in ipairs(due) do
    redis.call("ZADD", inflight, now + tonumber(ARGV[2]), id)
end
return due
