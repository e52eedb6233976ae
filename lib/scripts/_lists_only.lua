-- Refuse (before any write) keys KEYS[1..n] that hold something other
-- than a list.
-- ${N}: how many of the first KEYS to check (from the include line).
for i = 1, ${N} do
  local t = redis.call('TYPE', KEYS[i])['ok']
  if t ~= 'list' and t ~= 'none' then
    return redis.error_reply('WRONGTYPE ' .. KEYS[i] .. ' holds a ' .. t)
  end
end
