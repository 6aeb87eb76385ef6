-- `luastrip test allowed-images.lua`: the allow-list, read as Docker reads image references.
local t = require("luastrip.test")

local function create(image)
  return t.request { method = "POST", path = "/v1.41/containers/create",
                     json = { Image = image, Cmd = { "true" } },
                     daemon = { status = 201, json = { Id = "abc", Warnings = {} } } }
end

t.case("every spelling of an allowed image runs", function()
  for _, image in ipairs({
    "busybox", "busybox:latest", "busybox:1.36", "library/busybox", "docker.io/library/busybox:latest",
    "index.docker.io/library/busybox", "busybox@sha256:" .. string.rep("a", 64),
    "alpine:3.20", "docker.io/library/alpine:3.20", "registry.example/team/app:v2",
    "registry.example/team/sub/tool",
  }) do
    local res = create(image)
    t.eq(res.status, 201, image)
    t.ok(res.forwarded, image .. " did not reach the daemon")
  end
end)

t.case("other images, tags and registries are refused", function()
  for _, image in ipairs({
    "alpine", "alpine:latest", "alpine:3.19", "evil/busybox", "registry.example/busybox",
    "registry.example/teamx/app", "registry.example/other/app", "reg.evil/library/busybox",
    "BUSYBOX", "sha256:" .. string.rep("b", 64), string.rep("c", 64),
  }) do
    local res = create(image)
    t.eq(res.status, 403, image)
    t.match(res.json.message, "^luastrip policy: ", image)
    t.eq(res.forwarded, nil, image .. " reached the daemon")
  end
end)

t.case("pulls follow the same list", function()
  local pull = function(query)
    return t.request { method = "POST", path = "/v1.41/images/create?" .. query }
  end
  t.eq(pull("fromImage=busybox&tag=latest").status, 200)
  t.eq(pull("fromImage=docker.io%2Flibrary%2Falpine&tag=3.20").status, 200)
  t.eq(pull("fromImage=alpine&tag=3.19").status, 403)
  t.eq(pull("fromImage=evil%2Fbusybox").status, 403)
  t.eq(pull("fromSrc=-&repo=busybox").status, 403)
end)

t.case("host power stays refused with an image list", function()
  local res = t.request { method = "POST", path = "/v1.41/containers/create",
                          json = { Image = "busybox", HostConfig = { Privileged = true } } }
  t.eq(res.status, 403)
  t.match(res.json.message, "privileged")
end)
