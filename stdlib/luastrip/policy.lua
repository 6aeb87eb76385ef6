-- luastrip.policy: what gives a container (or a plugin, a service, a volume) power over the host,
-- and a guard that refuses all of it.
--
--   local policy = require "luastrip.policy"
--   policy.guard()                                  -- refuse every way to host power
--   policy.guard { allow_binds = { "/srv/data" } }  -- but allow binds under /srv/data
--
-- or, piece by piece:
--
--   route.pre("POST /containers/create", function(req)
--     local why = policy.host_power((req:json() or {}).HostConfig)
--     if why then return policy.deny(why) end
--   end)
--
-- The gateway has already refused bodies that dockerd would read differently from this code
-- (keys in another case, repeated keys, HostConfig fields at the top level of a create body), so
-- reading the canonical field names here is enough. What the guard covers, and what it does not,
-- is in docs/SECURITY.md.
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

local function lower(v)
  if type(v) == "string" then return v:lower() end
  return ""
end

--- A Docker-format refusal: the CLI prints "Error response from daemon: <message>".
function policy.deny(message, status)
  return { status = status or 403, json = { message = message } }
end

--- Whether a create body asks for privileges.
function policy.privileged(spec)
  return object(object(spec).HostConfig).Privileged == true
end

-- Capabilities that amount to root on the host (docker run --cap-add ALL, SYS_ADMIN, …).
local HOST_CAPS = {
  ALL = true, SYS_ADMIN = true, SYS_MODULE = true, SYS_RAWIO = true, SYS_PTRACE = true,
  SYS_BOOT = true, SYS_TIME = true, DAC_READ_SEARCH = true, NET_ADMIN = true, MAC_ADMIN = true,
  MAC_OVERRIDE = true, BPF = true, PERFMON = true, SYSLOG = true, LINUX_IMMUTABLE = true,
  SYS_RESOURCE = true,
}

--- The first capability in `caps` that gives host power, or nil ("cap_sys_admin" and
--- "SYS_ADMIN" are the same to dockerd).
function policy.host_capability(caps)
  for _, c in ipairs(list(caps)) do
    local name = tostring(c):upper():gsub("^CAP_", "")
    if HOST_CAPS[name] then return tostring(c) end
  end
  return nil
end

-- Whether `path` is under one of the allowed host paths.
local function allowed(path, allow)
  for _, prefix in ipairs(list(allow)) do
    if path == prefix or path:sub(1, #prefix + 1) == prefix .. "/" then return true end
  end
  return false
end

--- Why volume driver options reach into the host (local driver: bind, or a device), or nil.
function policy.volume_options_power(driver, opts)
  driver = lower(driver)
  if driver ~= "" and driver ~= "local" then return nil end
  opts = object(opts)
  local o, kind = lower(opts.o), lower(opts.type)
  if o:find("bind", 1, true) or kind == "none" or kind == "bind" then
    return "a local volume that binds a host path (o=" .. tostring(opts.o) .. ")"
  end
  if opts.device ~= nil and kind ~= "nfs" and kind ~= "cifs" then
    return "a local volume on a host device (device=" .. tostring(opts.device) .. ")"
  end
  return nil
end

--- Host paths a create body bind-mounts ("/etc:/etc" binds and Mounts of type "bind").
function policy.host_binds(spec)
  local host, found = object(object(spec).HostConfig), {}
  for _, bind in ipairs(list(host.Binds)) do
    local source = tostring(bind):match("^([^:]*)")
    if source and source:find("/", 1, true) then table.insert(found, source) end
  end
  for _, m in ipairs(list(host.Mounts)) do
    m = object(m)
    if lower(m.Type) == "bind" then table.insert(found, tostring(m.Source)) end
  end
  return found
end

-- Why a list of Mounts reaches into the host, or nil.
local function mounts_power(mounts, opts)
  for _, m in ipairs(list(mounts)) do
    m = object(m)
    local kind = lower(m.Type)
    if kind == "bind" and not allowed(tostring(m.Source), opts.allow_binds) then
      return "a bind mount of the host path " .. tostring(m.Source)
    end
    if kind == "npipe" then return "a named pipe of the host" end
    if kind == "volume" then
      local driver = object(object(m.VolumeOptions).DriverConfig)
      local why = policy.volume_options_power(driver.Name, driver.Options)
      if why then return why end
    end
  end
  return nil
end

--- Why a HostConfig (from a create body, or an old API's start body) gives the container power
--- over the host, or nil. `opts.allow_binds` lists host paths that may be bind-mounted.
function policy.host_power(host, opts)
  host, opts = object(host), object(opts)
  if host.Privileged == true then return "privileged containers are not allowed" end
  local cap = policy.host_capability(host.CapAdd)
  if cap then return "the capability " .. cap .. " is not allowed" end
  for _, opt in ipairs(list(host.SecurityOpt)) do
    local o = lower(opt):gsub(":", "=", 1)
    if o ~= "no-new-privileges" and o ~= "no-new-privileges=true" then
      return "the security option " .. tostring(opt) .. " is not allowed"
    end
  end
  if #list(host.Devices) > 0 then return "host devices are not allowed" end
  if #list(host.DeviceCgroupRules) > 0 then return "device cgroup rules are not allowed" end
  if #list(host.DeviceRequests) > 0 then return "device requests (GPUs) are not allowed" end
  for _, mode in ipairs({ "PidMode", "IpcMode", "UTSMode", "UsernsMode", "NetworkMode", "CgroupnsMode" }) do
    if lower(host[mode]) == "host" then return mode .. " host is not allowed" end
  end
  for _, bind in ipairs(list(host.Binds)) do
    local source = tostring(bind):match("^([^:]*)") or ""
    if source:find("/", 1, true) and not allowed(source, opts.allow_binds) then
      return "a bind mount of the host path " .. source .. " is not allowed"
    end
  end
  local why = mounts_power(host.Mounts, opts)
  if why then return why .. " is not allowed" end
  if next(object(host.Sysctls)) ~= nil and lower(host.NetworkMode) == "host" then
    return "sysctls with the host network are not allowed"
  end
  return nil
end

--- Why resources of a `docker update` give host power, or nil.
function policy.update_power(update)
  update = object(update)
  if #list(update.Devices) > 0 then return "host devices are not allowed" end
  if #list(update.DeviceCgroupRules) > 0 then return "device cgroup rules are not allowed" end
  if #list(update.DeviceRequests) > 0 then return "device requests (GPUs) are not allowed" end
  return nil
end

--- Why a swarm service spec gives its tasks host power, or nil.
function policy.service_power(spec, opts)
  local task = object(object(spec).TaskTemplate)
  if task.PluginSpec ~= nil and task.PluginSpec ~= json.null then
    return "plugin services are not allowed"
  end
  if lower(task.Runtime) == "plugin" then return "plugin services are not allowed" end
  local c = object(task.ContainerSpec)
  local cap = policy.host_capability(c.CapabilityAdd)
  if cap then return "the capability " .. cap .. " is not allowed" end
  if object(object(c.Privileges).SELinuxContext).Disable == true then
    return "disabling SELinux labels is not allowed"
  end
  local why = mounts_power(c.Mounts, object(opts))
  if why then return why .. " is not allowed" end
  for _, n in ipairs(list(task.Networks)) do
    if lower(object(n).Target) == "host" then return "the host network is not allowed" end
  end
  return nil
end

local function refuse(why)
  return policy.deny("luastrip policy: " .. why)
end

--- Register hooks that refuse every way to host power the policy knows: containers (create,
--- old-API start, update), exec, volumes, plugins and swarm services. `opts.allow_binds` lists
--- host paths that may be bind-mounted.
function policy.guard(opts)
  opts = object(opts)
  route.pre("POST /containers/create", function(req)
    local why = policy.host_power(object(req:json()).HostConfig, opts)
    if why then return refuse(why) end
  end)
  -- API < 1.24 still read a HostConfig from the start body.
  route.pre("POST /containers/{id}/start", function(req)
    local body = req:json()
    if type(body) == "table" then
      local why = policy.host_power(body, opts)
      if why then return refuse(why) end
    end
  end)
  route.pre("POST /containers/{id}/update", function(req)
    local why = policy.update_power(req:json())
    if why then return refuse(why) end
  end)
  route.pre("POST /containers/{id}/exec", function(req)
    if object(req:json()).Privileged == true then
      return refuse("privileged exec is not allowed")
    end
  end)
  route.pre("POST /volumes/create", function(req)
    local spec = object(req:json())
    local why = policy.volume_options_power(spec.Driver, spec.DriverOpts)
    if why then return refuse(why .. " is not allowed") end
  end)
  -- A plugin runs as root on the host with whatever its config asks for.
  route.pre("POST /plugins/pull", function() return refuse("installing plugins is not allowed") end)
  route.pre("POST /plugins/create", function() return refuse("creating plugins is not allowed") end)
  for _, action in ipairs({ "enable", "upgrade", "set", "push" }) do
    route.pre("POST /plugins/{name}/" .. action, function()
      return refuse(action .. " of plugins is not allowed")
    end)
  end
  route.pre("POST /services/create", function(req)
    local why = policy.service_power(req:json(), opts)
    if why then return refuse(why) end
  end)
  route.pre("POST /services/{id}/update", function(req)
    local why = policy.service_power(req:json(), opts)
    if why then return refuse(why) end
  end)
end

return policy
