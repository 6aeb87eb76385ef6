---@meta luastrip.flocker
-- LuaLS stubs for the bundled `require "luastrip.flocker"` (see docs/volumes.md).

---@class luastrip.flocker.Options
---@field may_pull (fun(volume: table, req: luastrip.Request): boolean, string?)|nil  who may move a volume here from its owner

---@class luastrip.flocker
---@field prefix string  "/flocker/"
---@field pull_timeout number  how long a create waits for a volume to be moved here, in seconds
---@field may_pull (fun(volume: table, req: luastrip.Request): boolean, string?)|nil  decides each move of a volume here; nil refuses every one
local flocker = {}

---Register the create hook: `/flocker/NAME` binds (`-v /flocker/db:/data`) and bind mounts
---(`--mount type=bind,source=/flocker/db,...`) become the volume's mountpoint; everything else in
---the body is left as it was. Bad names, sub-paths, and volumes another gateway owns that
---`may_pull` does not let move here are a 400.
---@param opts luastrip.flocker.Options|nil
function flocker.enable(opts) end

---Rewrite a create body's `/flocker/NAME` binds and mounts in place; each mountpoint it put
---there is set to true in `produced`, when given. `req` is handed to `may_pull`.
---@param spec table  the create body (req:json())
---@param produced table<string, boolean>|nil
---@param req luastrip.Request|nil
---@return boolean|nil changed  nil when refused
---@return string|nil why
function flocker.rewrite(spec, produced, req) end

return flocker
