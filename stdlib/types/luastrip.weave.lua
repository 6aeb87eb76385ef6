---@meta luastrip.weave
-- LuaLS stubs for the bundled `require "luastrip.weave"` (see docs/overlay.md).

---@class luastrip.weave
---@field env string  "WEAVE_CIDR"
---@field default_ipalloc boolean  containers without WEAVE_CIDR get a default address too (false)
---@field identities boolean  addresses bound to the container's identity (name, compose service, label), so they follow it to any host (true)
local weave = {}

---Register the create hooks: `WEAVE_CIDR` (`10.2.1.5/24`, `ip:…`, `net:10.2.1.0/24`,
---`net:default`, empty, `none`; several separated by spaces or commas) puts the container on the
---overlay with those addresses. Bad values are a 400 naming the value.
function weave.enable() end

---The entries of a WEAVE_CIDR value ("" is the default range); nil for `none`; nil and why.
---@param value string
---@return string[]|nil entries
---@return string|nil why
function weave.entries(value) end

---Rewrite a create body onto the overlay network of its first address.
---@param spec table  the create body (req:json())
---@param name? string  the create's ?name= (the container's identity without a label)
---@return string|false|nil owner  false: left alone; nil: refused
---@return luastrip.Allocation[]|string|nil allocations_or_why
function weave.rewrite(spec, name) end

return weave
