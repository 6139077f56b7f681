-- Adds a run's credits to the caller's current UTC day and month.
-- KEYS[1] quota (see caller_quota_admit.lua)
-- ARGV: credits, day_budget ('' none), month_budget ('' none)
-- Returns strings {credits_left, credits_reset_ms} ('' when no budget).
local now = now_ms()
local day_index, day_end = window_of(now, DAY_MS)
local month_index, month_end = month_of(now)
local credits = tonumber(ARGV[1]) or 0
local day_used = used_in(KEYS[1], 'd', 'dc', day_index) + credits
local month_used = used_in(KEYS[1], 'm', 'mc', month_index) + credits
redis.call('HSET', KEYS[1], 'd', tostring(day_index), 'dc', tostring(day_used),
  'm', tostring(month_index), 'mc', tostring(month_used))
local ttl = month_end - now + 1000
if redis.call('PTTL', KEYS[1]) < ttl then
  redis.call('PEXPIRE', KEYS[1], ttl)
end
local left, reset = credit_balance(now, tonumber(ARGV[2]), day_used, day_end,
  tonumber(ARGV[3]), month_used, month_end)
return {left, reset}
