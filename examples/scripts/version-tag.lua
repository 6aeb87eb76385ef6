-- A post hook that rewrites a JSON response: `docker version` shows who answered.
route.post("GET /version", function(_req, res)
  if res.status == 200 and not res.streaming then
    local v = res:json()
    v.Components = v.Components or json.array()
    table.insert(v.Components, { Name = "luastrip", Version = "0.1.0", Details = json.object() })
    res:set_json(v)
  end
end)
