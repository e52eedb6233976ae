-- Frame header helpers, the Lua half of lib/frame.c's format:
--   "RQ1" 1*(SP name=value) LF payload
-- bump(v): one more delivery attempt in frame v; returns (attempts, frame).
-- frame_raw(v, id, now): a raw payload wrapped with attempts 1.
-- dead(v, reason, now, q): frame v with the dead-letter fields added
-- (reason and q already percent-encoded).
-- is_frame(v): v has a frame's header ("RQ1", then " name=value" fields,
-- then LF), as lib/frame.c would read one (its value bytes unchecked).
local function bump(v)
  local nl = string.find(v, '\n', 1, true)
  if not nl or string.sub(v, 1, 3) ~= 'RQ1' then
    return 1, 'RQ1 a=1\n' .. v
  end
  local h = string.sub(v, 1, nl - 1)
  local a = tonumber(string.match(h, ' a=(%d+)')) or 0
  a = a + 1
  local h2, n = string.gsub(h, ' a=%d+', ' a=' .. a, 1)
  if n == 0 then h2 = h .. ' a=' .. a end
  return a, h2 .. string.sub(v, nl)
end
local function is_frame(v)
  local nl = string.find(v, '\n', 1, true)
  if not nl or nl > 16385 or string.sub(v, 1, 3) ~= 'RQ1' then return false end
  local h = string.sub(v, 4, nl - 1)
  if h ~= '' and not string.find(h, '^ ') then return false end
  for fld in string.gmatch(h, ' ([^ ]*)') do
    if not string.find(fld, '^[^=]+=.') then return false end
  end
  return true
end
local function frame_raw(v, id, now)
  return 'RQ1 id=' .. id .. ' a=1 ts=' .. now .. '\n' .. v
end
local function dead(v, reason, now, q)
  local nl = string.find(v, '\n', 1, true)
  return string.sub(v, 1, nl - 1) .. ' dr=' .. reason .. ' dts=' .. now .. ' q=' .. q .. string.sub(v, nl)
end
