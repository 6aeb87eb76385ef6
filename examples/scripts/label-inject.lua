-- Label every container created through luastrip, so you can tell them apart later:
--   docker ps --filter label=managed-by=luastrip
route.pre("POST /containers/create", function(req)
  local spec = req:json()
  spec.Labels = spec.Labels or json.object()
  spec.Labels["managed-by"] = "luastrip"
  req:set_json(spec)
end)
