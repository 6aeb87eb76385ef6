-- A docker-socket-proxy-style policy: no privileged containers, no bind mounts of host paths.
-- Named volumes ("data:/data") are fine; "/etc:/etc" is not.
local function deny(why)
  return { status = 403, json = { message = why } }
end

route.pre("POST /containers/create", function(req)
  local spec = req:json() or {}
  local host = spec.HostConfig or {}
  if host.Privileged then
    return deny("luastrip policy: privileged containers are not allowed")
  end
  for _, bind in ipairs(host.Binds or {}) do
    if bind:sub(1, 1) == "/" then
      return deny("luastrip policy: bind mounts of host paths are not allowed (" .. bind .. ")")
    end
  end
  for _, m in ipairs(host.Mounts or {}) do
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
