-- revive(v): dead letter v as a frame to take again: it keeps its id, its
-- ts and any field redq does not know, loses the dead-letter fields, and
-- starts again at attempts 0; the payload is untouched. A value that is
-- not a frame (put there by hand) becomes the payload of a new one.
local function revive(v)
  local nl = string.find(v, '\n', 1, true)
  if nl and string.sub(v, 1, 3) == 'RQ1' then
    local parts = {'RQ1'}
    for fld in string.gmatch(string.sub(v, 4, nl - 1), '[^ ]+') do
      local name = string.match(fld, '^([^=]*)=')
      if name ~= 'a' and name ~= 'dr' and name ~= 'dts' and name ~= 'q' then
        parts[#parts + 1] = fld
      end
    end
    parts[#parts + 1] = 'a=0'
    return table.concat(parts, ' ') .. string.sub(v, nl)
  end
  return 'RQ1 a=0\n' .. v
end
