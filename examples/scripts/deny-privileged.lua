-- A docker-socket-proxy-style policy: no privileged containers, no bind mounts of host paths.
-- Named volumes ("data:/data") are fine; "/etc:/etc" is not.
local function deny(why)
  return { status = 403, json = { message = why } }
end

-- The docker CLI sends "Binds": null when there are none; json.null is truthy, so `x or {}`
-- would keep it. Treat anything that is not a table as empty.
local function list(v)
  if type(v) == "table" then return v end
  return {}
end

route.pre("POST /containers/create", function(req)
  local spec = req:json() or {}
  local host = type(spec.HostConfig) == "table" and spec.HostConfig or {}
  if host.Privileged then
    return deny("luastrip policy: privileged containers are not allowed")
  end
  for _, bind in ipairs(list(host.Binds)) do
    if bind:sub(1, 1) == "/" then
      return deny("luastrip policy: bind mounts of host paths are not allowed (" .. bind .. ")")
    end
  end
  for _, m in ipairs(list(host.Mounts)) do
    if m.Type == "bind" then
      return deny("luastrip policy: bind mounts of host paths are not allowed (" .. tostring(m.Source) .. ")")
    end
  end
end)

-- Privileges can also be asked for later, on exec.
route.pre("POST /containers/{id}/exec", function(req)
  local spec = req:json() or {}
  if spec.Privileged then
    return deny("luastrip policy: privileged exec is not allowed")
  end
end)
