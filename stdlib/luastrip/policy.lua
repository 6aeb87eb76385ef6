-- luastrip.policy: what gives a container (or a plugin, a service, a volume) power over the host,
-- and a guard that refuses all of it.
--
--   local policy = require "luastrip.policy"
--   policy.guard()                                     -- refuse every way to host power
--   policy.guard { allow_binds = { "/srv/data" } }     -- but allow a bind of /srv/data itself
--   policy.guard { allow_binds = { "/srv/data/**" } }  -- or of anything below it (see below)
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

--- A host path as the kernel reaches it, spelt plainly (Go's filepath.Clean, which dockerd uses):
--- empty and "." segments dropped, ".." taking one back, so "/srv/data/../../etc" is "/etc".
function policy.clean_path(path)
  local parts = {}
  for seg in tostring(path):gmatch("[^/]+") do
    if seg == ".." then
      parts[#parts] = nil
    elseif seg ~= "." then
      parts[#parts + 1] = seg
    end
  end
  return "/" .. table.concat(parts, "/")
end

-- Whether a bind of the host path `path` is allowed: exactly a path a helper produced for this
-- call (`ctx.luastrip_binds`, set by luastrip.flocker's rewrite: a volume's mountpoint), exactly
-- an allowed path, or below an allowed "DIR/**". Paths are compared cleaned, so no ".." climbs
-- out of an allowance. A prefix is never implied: a link planted below an allowed directory
-- (by a container that can write there) would lead the bind anywhere on the host.
local function allowed(path, opts, ctx)
  local p = policy.clean_path(path)
  local made = object(object(ctx).luastrip_binds)
  if made[p] == true then return true end
  for _, a in ipairs(list(opts.allow_binds)) do
    local tree = tostring(a):match("^(.*)/%*%*$")
    if tree then
      tree = policy.clean_path(tree)
      if tree == "/" or p == tree or p:sub(1, #tree + 1) == tree .. "/" then return true end
    elseif p == policy.clean_path(a) then
      return true
    end
  end
  return false
end

-- What dockerd masks and makes read-only in /proc and /sys by default. A create body that lists
-- MaskedPaths or ReadonlyPaths replaces these (`--security-opt systempaths=unconfined` sends
-- both empty): a writable /proc/sys reaches the host's kernel.core_pattern, which is host root.
local DEFAULT_MASKED = {
  "/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
  "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware",
}
local DEFAULT_READONLY = { "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger" }

-- The first default path a given MaskedPaths/ReadonlyPaths list leaves out, or nil (nil or null
-- keeps dockerd's defaults; a list may add paths, never drop one).
local function dropped(given, defaults)
  if type(given) ~= "table" then return nil end
  local has = {}
  for _, p in ipairs(given) do has[policy.clean_path(p)] = true end
  for _, p in ipairs(defaults) do
    if not has[p] then return p end
  end
  return nil
end

--- Why volume driver options reach into the host (local driver: bind, or a device), or send
--- the volume to another host (luastrip's plugin: standby=HOST, unless `guard.allow_standby`).
function policy.volume_options_power(driver, opts, guard)
  opts = object(opts)
  if opts.standby ~= nil and not object(guard).allow_standby then
    return "a volume sent to another host on a schedule (standby=" .. tostring(opts.standby)
      .. "; an operator sets standbys, or the policy allows them with allow_standby = true)"
  end
  driver = lower(driver)
  if driver ~= "" and driver ~= "local" then return nil end
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
local function mounts_power(mounts, opts, ctx)
  for _, m in ipairs(list(mounts)) do
    m = object(m)
    local kind = lower(m.Type)
    if kind == "bind" and not allowed(tostring(m.Source), opts, ctx) then
      return "a bind mount of the host path " .. tostring(m.Source)
    end
    if kind == "npipe" then return "a named pipe of the host" end
    if kind == "volume" then
      local driver = object(object(m.VolumeOptions).DriverConfig)
      local why = policy.volume_options_power(driver.Name, driver.Options, opts)
      if why then return why end
    end
  end
  return nil
end

--- Why a HostConfig (from a create body, or an old API's start body) gives the container power
--- over the host, or nil. `opts.allow_binds` lists host paths that may be bind-mounted (exactly,
--- or below "DIR/**"), `opts.allow_cgroup_parents` the cgroup parents that may be named; `ctx`
--- is the call's `req.ctx`, where a helper lists the paths it produced (`luastrip_binds`).
function policy.host_power(host, opts, ctx)
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
    if source:find("/", 1, true) and not allowed(source, opts, ctx) then
      return "a bind mount of the host path " .. source .. " is not allowed"
    end
  end
  local why = mounts_power(host.Mounts, opts, ctx)
  if why then return why .. " is not allowed" end
  local unmasked = dropped(host.MaskedPaths, DEFAULT_MASKED)
  if unmasked then
    return "unmasking " .. unmasked .. " (MaskedPaths, --security-opt systempaths=unconfined) is not allowed"
  end
  local writable = dropped(host.ReadonlyPaths, DEFAULT_READONLY)
  if writable then
    return "a writable " .. writable .. " (ReadonlyPaths, --security-opt systempaths=unconfined) is not allowed"
  end
  local parent = host.CgroupParent
  if type(parent) == "string" and parent ~= "" then
    local ok = false
    for _, p in ipairs(list(opts.allow_cgroup_parents)) do
      if p == parent then ok = true end
    end
    if not ok then return "the cgroup parent " .. parent .. " (--cgroup-parent) is not allowed" end
  end
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
  local why = mounts_power(c.Mounts, object(opts), nil)
  if why then return why .. " is not allowed" end
  for _, n in ipairs(list(task.Networks)) do
    if lower(object(n).Target) == "host" then return "the host network is not allowed" end
  end
  return nil
end

local function refuse(why)
  return policy.deny("luastrip policy: " .. why)
end

--- Whether the image `image` is one of `allowed`, compared as Docker reads references: "busybox"
--- allows "busybox", "busybox:1.36", "docker.io/library/busybox:latest" and the same by digest;
--- "busybox:1.36" allows only that tag; "registry.example/team/*" any image below team/ there.
--- Returns true, or false and why.
function policy.image_allowed(image, allowed)
  local ref, why = docker.image_ref(tostring(image))
  if not ref then return false, "the image " .. tostring(image) .. " (" .. tostring(why) .. ")" end
  for _, entry in ipairs(list(allowed)) do
    entry = tostring(entry)
    local tree = entry:match("^(.*)/%*$")
    if tree then
      local base = docker.image_ref(tree .. "/x")
      if base and ref.name:sub(1, #base.name - 1) == base.name:sub(1, -2) then return true end
    else
      local want = docker.image_ref(entry)
      if want and want.name == ref.name
          and (want.tag == nil or want.tag == ref.tag)
          and (want.digest == nil or want.digest == ref.digest) then
        return true
      end
    end
  end
  return false, "the image " .. ref.familiar .. (ref.tag and (":" .. ref.tag) or "") .. " is not allowed here"
end

--- Why the options of a `docker build` give its build containers host power, or nil.
function policy.build_power(query)
  local mode = lower(object(query).networkmode)
  if mode == "host" then return "building with the host network (--network host) is not allowed" end
  if mode:sub(1, 10) == "container:" then
    return "building in another container's network (--network " .. mode .. ") is not allowed"
  end
  return nil
end

--- Register hooks that refuse every way to host power the policy knows: containers (create,
--- old-API start, update), exec, builds, volumes, plugins and swarm services.
--- `opts.allow_binds` lists host paths that may be bind-mounted (exactly, or below "DIR/**");
--- `opts.allow_cgroup_parents` the cgroup parents a container may name; `opts.allow_images`,
--- when given, the images containers may run and the daemon may pull (see
--- `policy.image_allowed`). Load luastrip.flocker
--- (or another helper that rewrites binds) before it: the guard allows exactly the paths such a
--- helper produced for the call.
function policy.guard(opts)
  opts = object(opts)
  route.pre("POST /containers/create", function(req)
    local spec = object(req:json())
    local why = policy.host_power(spec.HostConfig, opts, req.ctx)
    if why then return refuse(why) end
    if opts.allow_images ~= nil then
      local ok, refusal = policy.image_allowed(spec.Image, opts.allow_images)
      if not ok then return refuse(refusal) end
    end
  end)
  if opts.allow_images ~= nil then
    -- docker pull: fromImage, with its tag in `tag` (or the reference), as dockerd joins them.
    route.pre("POST /images/create", function(req)
      local image = req.query.fromImage
      if image == nil or image == "" then
        return refuse("importing images (docker import) is not allowed with an image allow-list")
      end
      local tag = req.query.tag
      if tag ~= nil and tag ~= "" then
        image = image .. (tag:find("^[A-Za-z][A-Za-z0-9]*:") and "@" or ":") .. tag
      end
      local ok, refusal = policy.image_allowed(image, opts.allow_images)
      if not ok then return refuse(refusal) end
    end)
  end
  -- API < 1.24 still read a HostConfig from the start body.
  route.pre("POST /containers/{id}/start", function(req)
    local body = req:json()
    if type(body) == "table" then
      local why = policy.host_power(body, opts, req.ctx)
      if why then return refuse(why) end
    end
  end)
  route.pre("POST /build", function(req)
    local why = policy.build_power(req.query)
    if why then return refuse(why) end
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
    local why = policy.volume_options_power(spec.Driver, spec.DriverOpts, opts)
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
