-- Pull Docker Hub images through a registry mirror: `docker pull alpine` fetches
-- MIRROR/library/alpine instead. Images that name a registry ("quay.io/x/y") are left alone.
local MIRROR = "mirror.example.internal:5000"

local function through_mirror(name)
  -- The docker CLI spells Hub images out in full: docker.io/library/alpine.
  name = name:gsub("^index%.docker%.io/", ""):gsub("^docker%.io/", "")
  local first = name:match("^([^/]+)/")
  if first and (first:find("[.:]") or first == "localhost") then
    return name                       -- already names a registry
  end
  if not name:find("/") then
    name = "library/" .. name         -- official images live under library/
  end
  return MIRROR .. "/" .. name
end

route.pre("POST /images/create", function(req)
  if req.query.fromImage and req.query.fromImage ~= "" then
    req.query.fromImage = through_mirror(req.query.fromImage)
  end
end)
