-- Record how a send attempt ended, if the attempt still owns the communication.
--
-- KEYS[1]  amends:comm:{comm_id}   hash   the communication
-- ARGV[1]  token                   the token begin_send.lua handed to this attempt
-- ARGV[2]  status                  "sent", "failed" or "retrying"
-- ARGV[3..] field, value, ...      more fields to set with the status
--
-- Returns 1 when written, 0 when the attempt no longer owns the communication
-- (its lease expired and another attempt took over).

if redis.call("HGET", KEYS[1], "status") ~= "sending" or redis.call("HGET", KEYS[1], "token") ~= ARGV[1] then
    return 0
end
redis.call("HSET", KEYS[1], "status", ARGV[2])
for i = 3, #ARGV, 2 do
    redis.call("HSET", KEYS[1], ARGV[i], ARGV[i + 1])
end
redis.call("HDEL", KEYS[1], "lease_until_ms", "token")
return 1
