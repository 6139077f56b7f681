-- Caller-quota periods on Redis's clock, in ms since the epoch (UTC): the
-- same arithmetic as flowgate_core::caller_quota::period. Prepended to the
-- caller-quota scripts.
local DAY_MS = 86400000

local function now_ms()
  local time = redis.call('TIME')
  return tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
end

-- The fixed window of window_ms holding now: its index and end.
local function window_of(now, window_ms)
  local index = math.floor(now / window_ms)
  return index, (index + 1) * window_ms
end

-- Days since the epoch of the first of month m in year y.
local function days_from_civil(y, m)
  if m <= 2 then y = y - 1 end
  local era = math.floor(y / 400)
  local yoe = y - era * 400
  local mp = m + 9
  if m > 2 then mp = m - 3 end
  local doy = math.floor((153 * mp + 2) / 5)
  local doe = yoe * 365 + math.floor(yoe / 4) - math.floor(yoe / 100) + doy
  return era * 146097 + doe - 719468
end

-- The UTC month holding now: index y * 12 + m - 1, and its end.
local function month_of(now)
  local z = math.floor(now / DAY_MS) + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524)
    - math.floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local m = mp - 9
  if mp < 10 then m = mp + 3 end
  local y = yoe + era * 400
  if m <= 2 then y = y + 1 end
  local ny, nm = y, m + 1
  if m == 12 then ny, nm = y + 1, 1 end
  return y * 12 + m - 1, days_from_civil(ny, nm) * DAY_MS
end

-- Credits used in the period `index`, kept in the hash as (index, used).
local function used_in(key, index_field, used_field, index)
  local state = redis.call('HMGET', key, index_field, used_field)
  if tonumber(state[1]) == index then return tonumber(state[2]) or 0 end
  return 0
end

-- The credit balance: the smaller of what is left of the day and month
-- budgets (nil: not configured), and when that period resets.
local function credit_balance(now, day_budget, day_used, day_end,
                              month_budget, month_used, month_end)
  local day_left = day_budget and (day_budget - day_used)
  local month_left = month_budget and (month_budget - month_used)
  if month_left and (not day_left or month_left <= day_left) then
    return tostring(month_left), tostring(month_end - now)
  elseif day_left then
    return tostring(day_left), tostring(day_end - now)
  end
  return '', ''
end
