-- The example policy's list, as `luastrip test deny-privileged.lua` runs it (no dockerd needed):
-- every way to host power it refuses never reaches the daemon, and ordinary calls do.
local t = require("luastrip.test")

local function create(host)
  return t.request { method = "POST", path = "/v1.41/containers/create",
                     json = { Image = "busybox", Cmd = { "true" }, HostConfig = host },
                     daemon = { status = 201, json = { Id = "abc", Warnings = {} } } }
end

local function refused(res, what)
  t.eq(res.status, 403, what)
  t.match(res.json.message, "^luastrip policy: ", what)
  t.eq(res.forwarded, nil, what .. " reached the daemon")
end

t.case("host power in a create body is refused", function()
  local cases = {
    { Privileged = true },
    { CapAdd = { "ALL" } },
    { CapAdd = { "cap_sys_admin" } },
    { SecurityOpt = { "seccomp=unconfined" } },
    { SecurityOpt = { "apparmor=unconfined" } },
    { SecurityOpt = { "label=disable" } },
    { Devices = { { PathOnHost = "/dev/sda", PathInContainer = "/dev/sda", CgroupPermissions = "rwm" } } },
    { DeviceCgroupRules = { "a *:* rwm" } },
    { DeviceRequests = { { Count = -1, Capabilities = { { "gpu" } } } } },
    { PidMode = "host" },
    { IpcMode = "host" },
    { UTSMode = "host" },
    { UsernsMode = "host" },
    { NetworkMode = "host" },
    { CgroupnsMode = "host" },
    { Binds = { "/:/host" } },
    { Binds = { "/etc:/etc:ro" } },
    { Mounts = { { Type = "bind", Source = "/", Target = "/host" } } },
    { Mounts = { { Type = "volume", Target = "/v", VolumeOptions = { DriverConfig = {
        Name = "local", Options = { type = "none", o = "bind", device = "/" } } } } } },
    -- --security-opt systempaths=unconfined: a writable /proc/sys.
    { MaskedPaths = json.array(), ReadonlyPaths = json.array() },
    { ReadonlyPaths = { "/proc/bus" } },
    { CgroupParent = "/" },
  }
  for i, host in ipairs(cases) do
    refused(create(host), "case " .. i .. ": " .. json.encode(host))
  end
end)

t.case("the same in a body spelt another way, or in the legacy place", function()
  -- The gateway gives the policy the body as dockerd reads it.
  local res = t.request { method = "POST", path = "/v1.41/containers/create",
                          body = '{"Image":"busybox","hostconfig":{"privileged":true}}' }
  refused(res, "lower-case keys")
  res = t.request { method = "POST", path = "/v1.23/containers/create",
                    body = '{"Image":"busybox","Privileged":true}' }
  refused(res, "top-level Privileged")
end)

t.case("privileges asked for later are refused", function()
  refused(t.request { method = "POST", path = "/v1.23/containers/abc/start",
                      json = { Privileged = true } }, "old-API start")
  refused(t.request { method = "POST", path = "/v1.41/containers/abc/exec",
                      json = { Cmd = { "sh" }, Privileged = true } }, "privileged exec")
  refused(t.request { method = "POST", path = "/v1.41/containers/abc/update",
                      json = { Devices = { { PathOnHost = "/dev/sda" } } } }, "update with devices")
  refused(t.request { method = "POST", path = "/v1.41/volumes/create",
                      json = { Name = "v", Driver = "local",
                               DriverOpts = { type = "none", o = "bind", device = "/" } } },
          "a local volume binding /")
  refused(t.request { method = "POST", path = "/v1.41/build?networkmode=host" }, "a host-network build")
  refused(t.request { method = "POST", path = "/v1.41/plugins/pull?remote=x" }, "a plugin")
  refused(t.request { method = "POST", path = "/v1.41/services/create",
                      json = { TaskTemplate = { ContainerSpec = { Image = "busybox",
                               Mounts = { { Type = "bind", Source = "/", Target = "/h" } } } } } },
          "a service binding /")
end)

t.case("ordinary calls reach the daemon", function()
  local res = create({ Binds = { "data:/data" }, CapAdd = { "NET_BIND_SERVICE" },
                       SecurityOpt = { "no-new-privileges" }, Memory = 67108864 })
  t.eq(res.status, 201)
  t.ok(res.forwarded, "the create reached the daemon")
  res = t.request { method = "GET", path = "/v1.41/containers/json" }
  t.eq(res.status, 200)
  t.ok(res.forwarded)
end)
