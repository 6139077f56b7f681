-- One admission of one caller, atomically, on Redis's own clock.
-- KEYS[1] quota (hash: w, wc = request window index and count;
--                d, dc = UTC day index and credits; m, mc = UTC month)
-- KEYS[2] runs  (zset: holder -> lease expiry in ms)
-- ARGV: requests (0: none), window_ms, max_runs (0: none), lease_ms,
--       holder, day_budget ('' none), month_budget ('' none)
-- Returns strings {verdict, retry_ms, requests_left, requests_reset_ms,
-- credits_left, credits_reset_ms} ('' where not configured). Verdict: 0
-- admitted, 1 request window spent, 2 no free run, 3 day budget spent,
-- 4 month budget spent. A refusal changes nothing.
local now = now_ms()
local day_index, day_end = window_of(now, DAY_MS)
local month_index, month_end = month_of(now)
local day_budget = tonumber(ARGV[6])
local month_budget = tonumber(ARGV[7])
local day_used = used_in(KEYS[1], 'd', 'dc', day_index)
local month_used = used_in(KEYS[1], 'm', 'mc', month_index)

local requests = tonumber(ARGV[1])
local window_index, window_end, counted = 0, 0, 0
if requests > 0 then
  window_index, window_end = window_of(now, tonumber(ARGV[2]))
  local state = redis.call('HMGET', KEYS[1], 'w', 'wc')
  if tonumber(state[1]) == window_index then counted = tonumber(state[2]) or 0 end
end

local function answer(verdict, retry_ms, taken)
  local left, reset = '', ''
  if requests > 0 then
    left = tostring(math.max(0, requests - counted - taken))
    reset = tostring(window_end - now)
  end
  local credits, credits_reset = credit_balance(now, day_budget, day_used, day_end,
    month_budget, month_used, month_end)
  return {tostring(verdict), tostring(retry_ms), left, reset, credits, credits_reset}
end

if month_budget and month_used >= month_budget then
  return answer(4, month_end - now, 0)
end
if day_budget and day_used >= day_budget then
  return answer(3, day_end - now, 0)
end
if requests > 0 and counted >= requests then
  return answer(1, window_end - now, 0)
end
local max_runs = tonumber(ARGV[3])
if max_runs > 0 then
  -- Leases whose holder stopped renewing (crashed) give their run back.
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
  if redis.call('ZCARD', KEYS[2]) >= max_runs then
    return answer(2, 0, 0)
  end
end

local ttl = 0
if requests > 0 then
  redis.call('HSET', KEYS[1], 'w', tostring(window_index), 'wc', tostring(counted + 1))
  ttl = window_end - now
end
if max_runs > 0 then
  local lease_ms = tonumber(ARGV[4])
  redis.call('ZADD', KEYS[2], now + lease_ms, ARGV[5])
  redis.call('PEXPIRE', KEYS[2], lease_ms * 2)
end
-- The hash lives as long as its longest configured period.
if day_budget then ttl = math.max(ttl, day_end - now) end
if month_budget then ttl = math.max(ttl, month_end - now) end
if ttl > 0 and redis.call('PTTL', KEYS[1]) < ttl + 1000 then
  redis.call('PEXPIRE', KEYS[1], ttl + 1000)
end
if requests > 0 then return answer(0, 0, 1) end
return answer(0, 0, 0)
