-- arm(keys=[timers, wake], args=[member, due_ms])
--
-- Sets (or moves) one timer's due time and, when it became the earliest armed timer,
-- leaves a nudge so that a scheduler sleeping until a later moment wakes up now.
--
-- KEYS[1] timers  amends:timers       zset   member -> due time (epoch ms)
-- KEYS[2] wake    amends:timers:wake  list   at most one nudge (the due time that caused it)
--
-- ARGV[1] member  the timer, an opaque string
-- ARGV[2] due_ms  its due time in epoch milliseconds (an integer)
--
-- Returns 1 when a nudge was left, 0 otherwise.

local timers = KEYS[1]
local wake = KEYS[2]

local member = ARGV[1]
local due_ms = ARGV[2]

-- Compared with the earliest due time *before* this change: a scheduler already sleeps
-- until that moment (or earlier), so only a strictly earlier due time is worth a wake-up.
local earliest = redis.call("zrange", timers, 0, 0, "withscores")
redis.call("zadd", timers, due_ms, member)
if #earliest == 0 or tonumber(due_ms) < tonumber(earliest[2]) then
    redis.call("lpush", wake, due_ms)
    -- One pending nudge is as good as many: a woken scheduler re-reads the store.
    redis.call("ltrim", wake, 0, 0)
    return 1
end
return 0
