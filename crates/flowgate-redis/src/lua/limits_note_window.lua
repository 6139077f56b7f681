-- Remembers what an upstream answer said about a vendor window.
-- KEYS[1] window; ARGV[1] spent_for_ms ('' for none): replaces;
-- ARGV[2] at_least_ms ('' for none): extends, never shortens.
if ARGV[1] ~= '' then
  local ms = tonumber(ARGV[1])
  if ms > 0 then
    redis.call('SET', KEYS[1], '1', 'PX', ms)
  else
    redis.call('DEL', KEYS[1])
  end
end
if ARGV[2] ~= '' then
  local ms = tonumber(ARGV[2])
  if ms > 0 and redis.call('PTTL', KEYS[1]) < ms then
    redis.call('SET', KEYS[1], '1', 'PX', ms)
  end
end
return 0
