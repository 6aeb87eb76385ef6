-- An endpoint served by luastrip itself; it never reaches the daemon.
--   curl --unix-socket /run/luastrip.sock http://docker/luastrip/hello
route.endpoint("GET /luastrip/hello", function(req)
  return { status = 200, json = { hello = "world", call = req.id, version = req.version or json.null } }
end)
