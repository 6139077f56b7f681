-- One admission for one provider scope, atomically, on Redis's own clock.
-- KEYS[1] window  (string; its PTTL is how long the vendor window is spent)
-- KEYS[2] rate    (hash: tokens, at_ms; a token bucket refilled evenly)
-- KEYS[3] slots   (zset: holder -> lease expiry in ms)
-- ARGV: has_rate, requests, window_ms, has_slot, max_slots, lease_ms, holder
-- Returns {verdict, ms}: 0 admitted, 1 window spent for ms, 2 rate spent
-- (a token in ms), 3 no free slot. A refusal changes nothing.
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)

local spent = redis.call('PTTL', KEYS[1])
if spent > 0 then
  return {1, spent}
end

local has_slot = ARGV[4] == '1'
if has_slot then
  -- Leases whose holder stopped renewing (crashed) give their slot back.
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
  if redis.call('ZCARD', KEYS[3]) >= tonumber(ARGV[5]) then
    return {3, 0}
  end
end

local has_rate = ARGV[1] == '1'
local tokens, window_ms
if has_rate then
  local capacity = tonumber(ARGV[2])
  window_ms = tonumber(ARGV[3])
  local per_ms = capacity / window_ms
  local state = redis.call('HMGET', KEYS[2], 'tokens', 'at')
  tokens = tonumber(state[1]) or capacity
  local at = tonumber(state[2]) or now
  tokens = math.min(capacity, tokens + math.max(0, now - at) * per_ms)
  if tokens < 1 then
    return {2, math.min(math.ceil((1 - tokens) / per_ms), window_ms)}
  end
end

if has_rate then
  redis.call('HSET', KEYS[2], 'tokens', tostring(tokens - 1), 'at', tostring(now))
  -- Untouched for a window, the bucket is full again: the key may go.
  redis.call('PEXPIRE', KEYS[2], window_ms + 1000)
end
if has_slot then
  local lease_ms = tonumber(ARGV[6])
  redis.call('ZADD', KEYS[3], now + lease_ms, ARGV[7])
  redis.call('PEXPIRE', KEYS[3], lease_ms * 2)
end
return {0, 0}
