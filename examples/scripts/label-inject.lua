-- Label every container created through luastrip, so you can tell them apart later:
--   docker ps --filter label=managed-by=luastrip
route.pre("POST /containers/create", function(req)
  local spec = req:json()
  if type(spec.Labels) ~= "table" then spec.Labels = json.object() end  -- absent or null
  spec.Labels["managed-by"] = "luastrip"
  req:set_json(spec)
end)
