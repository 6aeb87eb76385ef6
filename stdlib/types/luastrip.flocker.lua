---@meta luastrip.flocker
-- LuaLS stubs for the bundled `require "luastrip.flocker"` (see docs/volumes.md).

---@class luastrip.flocker
---@field prefix string  "/flocker/"
local flocker = {}

---Register the create hook: `/flocker/NAME` binds (`-v /flocker/db:/data`) and bind mounts
---(`--mount type=bind,source=/flocker/db,...`) become the volume's mountpoint; everything else in
---the body is left as it was. Bad names, sub-paths and volumes another gateway owns are a 400.
function flocker.enable() end

---Rewrite a create body's `/flocker/NAME` binds and mounts in place; each mountpoint it put
---there is set to true in `produced`, when given.
---@param spec table  the create body (req:json())
---@param produced table<string, boolean>|nil
---@return boolean|nil changed  nil when refused
---@return string|nil why
function flocker.rewrite(spec, produced) end

return flocker
