---@meta luastrip.test
-- LuaLS stubs for `require "luastrip.test"`, the assertions of `*_test.lua` files that
-- `luastrip test SCRIPTS` runs against a gateway with SCRIPTS loaded (see docs/lua-api.md).

---@class luastrip.test.Answer  what the daemon answers to the call
---@field status integer|nil             default 200
---@field headers table<string,string>|nil
---@field body string|nil
---@field json any                       encoded as the body, with a JSON content type

---@class luastrip.test.Call
---@field method string|nil              default "GET"
---@field path string                    path and query as a client sends them ("/v1.43/containers/create")
---@field headers table<string,string>|nil
---@field body string|nil
---@field json any                       encoded as the body, with a JSON content type
---@field daemon luastrip.test.Answer|nil  default: 200 with `{}`

---@class luastrip.test.Message
---@field headers table<string,string>   lower-case names
---@field body string
---@field json any                       the body decoded, when it is JSON

---@class luastrip.test.Result: luastrip.test.Message
---@field status integer                 what the client got
---@field forwarded luastrip.test.Forwarded|nil  what reached the daemon; nil if nothing did

---@class luastrip.test.Forwarded: luastrip.test.Message
---@field method string
---@field path string                    path and query as forwarded

---@class luastrip.test
local test = {}

---Declare a test case; cases run in order, each failing on its first failed assertion or error.
---@param name string
---@param fn fun()
function test.case(name, fn) end

---Send one call through the gateway (every phase, the scripts' hooks included), the daemon
---answering as `call.daemon` says.
---@param call luastrip.test.Call
---@return luastrip.test.Result
function test.request(call) end

---Fail unless `got` equals `want` (tables compared deeply).
---@param got any
---@param want any
---@param message string|nil
function test.eq(got, want, message) end

---Fail unless `value` is true (not nil or false); returns it.
---@generic T
---@param value T
---@param message string|nil
---@return T
function test.ok(value, message) end

---Fail unless `s` is a string that matches the Lua pattern.
---@param s any
---@param pattern string
---@param message string|nil
function test.match(s, pattern, message) end

return test
