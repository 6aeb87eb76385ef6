---@meta luastrip.policy
-- LuaLS stubs for the bundled `require "luastrip.policy"` (see docs/SECURITY.md).

---@class luastrip.policy.Options
---@field allow_binds string[]|nil  host paths that may be bind-mounted (and anything under them)

---@class luastrip.policy
local policy = {}

---Register hooks that refuse every way to host power the policy knows: containers (create,
---old-API start, update), exec, volumes, plugins and swarm services.
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
---@return string|nil
function policy.host_power(host, opts) end

---Why a `docker update` body gives host power (devices), or nil.
---@param update table|nil
---@return string|nil
function policy.update_power(update) end

---Why a swarm service spec gives its tasks host power, or nil.
---@param spec table|nil
---@param opts luastrip.policy.Options|nil
---@return string|nil
function policy.service_power(spec, opts) end

---Why volume driver options reach into the host (local driver: bind, or a device), or nil.
---@param driver string|nil
---@param opts table|nil
---@return string|nil
function policy.volume_options_power(driver, opts) end

---The first capability in `caps` that gives host power, or nil.
---@param caps string[]|nil
---@return string|nil
function policy.host_capability(caps) end

return policy
