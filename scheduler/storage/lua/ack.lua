-- ack(keys=[leased, due, claims], args=[member, due_ms, member, due_ms, ...])
--
-- A claimed timer's work is done: drop its lease, but only when the lease is still the
-- one that was handed out for that due time. A timer re-armed and claimed again meanwhile
-- keeps its newer lease, so the first claimer cannot drop the second one's wake-up.
--
-- KEYS[1] leased  amends:{NN}:timers:leased  zset  member -> lease expiry (epoch ms)
-- KEYS[2] due     amends:{NN}:timers:due     hash  member -> due time it was claimed at (epoch ms)
-- KEYS[3] claims  amends:{NN}:timers:claims  hash  member -> token of the claim that holds it
--
-- ARGV  pairs of (member, due_ms as claimed)
--
-- Returns how many leases were dropped.

local leased = KEYS[1]
local dues = KEYS[2]
local claims = KEYS[3]
local dropped = 0
for i = 1, #ARGV, 2 do
    local member = ARGV[i]
    local claimed = redis.call("HGET", dues, member)
    if claimed and tonumber(claimed) == tonumber(ARGV[i + 1]) then
        redis.call("ZREM", leased, member)
        redis.call("HDEL", dues, member)
        redis.call("HDEL", claims, member)
        dropped = dropped + 1
    end
end
return dropped
