-- arm(keys=[timers], args=[member, due_ms])
--
-- Sets (or moves) one timer's due time; tells whether it became the earliest armed timer
-- of its shard, so that the caller can nudge a scheduler sleeping until a later moment.
--
-- KEYS[1] timers  amends:{NN}:timers  zset  member -> due time (epoch ms)
--
-- ARGV[1] member  the timer, an opaque string
-- ARGV[2] due_ms  its due time in epoch milliseconds (an integer)
--
-- Returns 1 when it is now the earliest of its shard, 0 otherwise.

local timers = KEYS[1]

local member = ARGV[1]
local due_ms = ARGV[2]

-- Compared with the earliest due time *before* this change: a scheduler already sleeps
-- until that moment (or earlier), so only a strictly earlier due time is worth a wake-up.
local earliest = redis.call("zrange", timers, 0, 0, "withscores")
redis.call("zadd", timers, due_ms, member)
if #earliest == 0 or tonumber(due_ms) < tonumber(earliest[2]) then
    return 1
end
return 0
