-- luastrip.policy: small helpers for docker-socket-proxy-style policies.
--
--   local policy = require "luastrip.policy"
--   route.pre("POST /containers/create", function(req)
--     local spec = req:json() or {}
--     if policy.privileged(spec) then return policy.deny("no privileged containers") end
--   end)
local policy = {}

-- JSON null (json.null) is a value, and truthy: `x or {}` does not replace it.
local function list(v)
  if type(v) == "table" then return v end
  return {}
end

local function object(v)
  if type(v) == "table" then return v end
  return {}
end

--- A Docker-format refusal: the CLI prints "Error response from daemon: <message>".
function policy.deny(message, status)
  return { status = status or 403, json = { message = message } }
end

--- Whether a create body asks for privileges.
function policy.privileged(spec)
  return object(spec.HostConfig).Privileged == true
end

--- Host paths a create body bind-mounts ("/etc:/etc" binds and Mounts of type "bind").
function policy.host_binds(spec)
  local host, found = object(spec.HostConfig), {}
  for _, bind in ipairs(list(host.Binds)) do
    local source = bind:match("^([^:]+)")
    if source and source:sub(1, 1) == "/" then table.insert(found, source) end
  end
  for _, m in ipairs(list(host.Mounts)) do
    if m.Type == "bind" and m.Source then table.insert(found, m.Source) end
  end
  return found
end

return policy
