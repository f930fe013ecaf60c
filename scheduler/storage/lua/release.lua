-- release(keys=[leased, due], args=[now_ms, member, due_ms, member, due_ms, ...])
--
-- A claimed timer's handling failed and its handler knows it: hand it out again at the
-- next claim, rather than after its lease. Its lease is made to expire at now_ms, so the
-- next claim hands it out with the due time it was claimed at. Only a lease still held
-- for that due time is touched: a timer re-armed and claimed again meanwhile keeps its
-- newer lease.
--
-- KEYS[1] leased  amends:{NN}:timers:leased  zset  member -> lease expiry (epoch ms)
-- KEYS[2] due     amends:{NN}:timers:due     hash  member -> due time it was claimed at (epoch ms)
--
-- ARGV[1]  now_ms  the caller's clock, epoch ms
-- ARGV[2..] pairs of (member, due_ms as claimed)
--
-- Returns how many claims were put back.

local leased = KEYS[1]
local dues = KEYS[2]
local now_ms = tonumber(ARGV[1])
local released = 0
for i = 2, #ARGV, 2 do
    local member = ARGV[i]
    local claimed = redis.call("HGET", dues, member)
    if claimed and tonumber(claimed) == tonumber(ARGV[i + 1]) and redis.call("ZSCORE", leased, member) then
        redis.call("ZADD", leased, now_ms, member)
        released = released + 1
    end
end
return released
