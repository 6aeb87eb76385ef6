---@meta luastrip.policy
-- LuaLS stubs for the bundled `require "luastrip.policy"` (see docs/SECURITY.md).

---@class luastrip.policy.Options
---@field allow_binds string[]|nil  host paths that may be bind-mounted: exactly, or anything below "DIR/**" (compared cleaned)
---@field allow_cgroup_parents string[]|nil  cgroup parents (--cgroup-parent) a container may name
---@field allow_standby boolean|nil  docker users may make a volume's standby (-o standby=HOST, also in --mount volume-opt and service mounts): refused unless true
---@field allow_images string[]|nil  when given, the only images containers may run and the daemon may pull ("busybox", "busybox:1.36", "registry.example/team/*")

---@class luastrip.policy
local policy = {}

---Register hooks that refuse every way to host power the policy knows: containers (create,
---old-API start, update), exec, builds, volumes, plugins and swarm services. Load
---luastrip.flocker before it: the guard allows exactly the mountpoints Flocker's rewrite produced.
---@param opts luastrip.policy.Options|nil
function policy.guard(opts) end

---A Docker-format refusal reply (default status 403).
---@param message string
---@param status integer|nil
---@return luastrip.Reply
function policy.deny(message, status) end

---Whether a create body asks for a privileged container.
---@param spec table
---@return boolean
function policy.privileged(spec) end

---Host paths a create body bind-mounts.
---@param spec table
---@return string[]
function policy.host_binds(spec) end

---Why a HostConfig gives the container power over the host, or nil.
---@param host table|nil
---@param opts luastrip.policy.Options|nil
---@param ctx table|nil  the call's req.ctx: `luastrip_binds` lists the paths a helper produced
---@return string|nil
function policy.host_power(host, opts, ctx) end

---Why the query of a `POST /build` gives its build containers host power (the host network), or nil.
---@param query table|nil  req.query
---@return string|nil
function policy.build_power(query) end

---A host path as the kernel reaches it, spelt plainly (Go's filepath.Clean): "/a/./b/../c" is "/a/c".
---@param path string
---@return string
function policy.clean_path(path) end

---Why a `docker update` body gives host power (devices), or nil.
---@param update table|nil
---@return string|nil
function policy.update_power(update) end

---Why a swarm service spec gives its tasks host power, or nil.
---@param spec table|nil
---@param opts luastrip.policy.Options|nil
---@return string|nil
function policy.service_power(spec, opts) end

---Why volume driver options reach into the host (local driver: bind, or a device), or send the
---volume to another host (luastrip's plugin: standby=HOST, unless `guard.allow_standby`), or nil.
---@param driver string|nil
---@param opts table|nil
---@param guard luastrip.policy.Options|nil
---@return string|nil
function policy.volume_options_power(driver, opts, guard) end

---Whether `image` is one of `allowed`, compared as Docker reads references ("busybox" is
---"docker.io/library/busybox:latest"); "REGISTRY/PATH/*" allows every image below PATH.
---@param image string
---@param allowed string[]
---@return boolean allowed
---@return string|nil why
function policy.image_allowed(image, allowed) end

---The first capability in `caps` that gives host power, or nil.
---@param caps string[]|nil
---@return string|nil
function policy.host_capability(caps) end

return policy
