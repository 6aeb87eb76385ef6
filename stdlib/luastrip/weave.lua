-- luastrip.weave: Weave's `WEAVE_CIDR` on plain `docker run`.
--
--   require("luastrip.weave").enable()
--
-- then `docker run -e WEAVE_CIDR=10.2.1.5/24 busybox ip -4 addr` gets an interface `ethwe0`
-- with 10.2.1.5/24 on the overlay bridge, up before the process runs, at every start of the
-- container (dockerd asks luastrip's network driver itself: restart-policy restarts and starts
-- sent to dockerd directly included), and keeps it until the container is removed.
--
-- WEAVE_CIDR holds entries separated by spaces or commas:
--   10.2.1.5/24, ip:10.2.1.5/24   that address (on the network of its subnet)
--   net:10.2.1.0/24               any free address of that subnet
--   net:default, empty            any free address of --overlay-cidr
--   none                          no overlay address
-- Several entries give several interfaces, ethwe0, ethwe1 … (one per subnet: dockerd names
-- plugin interfaces by index). A container without WEAVE_CIDR gets a default address too when
-- `weave.default_ipalloc` is true (as Weave's proxy did; false here by default). Containers with
-- --net=host, none, container:… or a network of their own are left alone.
--
-- Each subnet is one Docker network of the overlay driver (`luastrip` for the default range,
-- `luastrip-10.2.1.0-24` …), made when first needed. The create carries the owner of its
-- addresses in its `luastrip.overlay.owner` label (a client setting that label is refused
-- before any script runs):
--   * a container with an identity (the label luastrip.overlay.identity, else compose's
--     project, service and number, else its name) has its addresses bound to that identity:
--     created again, on this host or another, it gets the same address; removed, the address
--     is held for --overlay-hold-s (60 s) for it, and refused to others;
--   * an unnamed container's addresses are allocated for a fresh token, its own by its ID once
--     it exists, and released when it is destroyed (`--rm` and removals sent to dockerd
--     directly included).
-- Bad values are a 400 naming the value; a missing image is dockerd's own 404, so the CLI
-- pulls and retries.
--
-- Needs `luastrip serve --network-plugin NAME`.
local weave = {}

weave.env = "WEAVE_CIDR"

-- Containers without WEAVE_CIDR get an address of the default range too (Weave's proxy did,
-- unless started with --no-default-ipalloc).
weave.default_ipalloc = false

-- Bind addresses to the container's identity (name, compose service, label) rather than to
-- the container: false gives every container addresses of its own, as Weave did.
---@type boolean
weave.identities = true

local function deny(message, status)
  return { status = status or 400, json = { message = message } }
end

-- The value of WEAVE_CIDR in a create body's Env: nil if absent; an error if given twice
-- (which one the process would read depends on its libc).
local function cidr_of(spec)
  local found
  if type(spec.Env) ~= "table" then return nil end
  for _, kv in ipairs(spec.Env) do
    if type(kv) == "string" then
      local k, v = kv:match("^([^=]*)=?(.*)$")
      if k == weave.env then
        if found ~= nil then
          return nil, weave.env .. " is given twice (" .. found .. ", " .. v .. ")"
        end
        found = v
      end
    end
  end
  return found
end

-- Whether the container uses the default network, which the overlay replaces.
local function default_network(spec)
  local hc = spec.HostConfig
  local mode = type(hc) == "table" and hc.NetworkMode or nil
  if mode ~= nil and mode ~= json.null and mode ~= "" and mode ~= "default" and mode ~= "bridge" then
    return false
  end
  local nc = spec.NetworkingConfig
  local eps = type(nc) == "table" and nc.EndpointsConfig or nil
  if type(eps) == "table" then
    for name in pairs(eps) do
      if name ~= "bridge" and name ~= "default" then return false end
    end
  end
  return true
end

--- The entries of a WEAVE_CIDR value: a list of strings ("" for the default range), or nil for
--- `none`, or nil and why.
function weave.entries(value)
  local entries = {}
  for e in value:gmatch("[^%s,]+") do entries[#entries + 1] = e end
  if #entries == 0 then return { "" } end
  for _, e in ipairs(entries) do
    if e == "none" then
      if #entries > 1 then
        return nil, weave.env .. "=" .. value .. ": none cannot be combined with addresses"
      end
      return nil
    end
  end
  return entries
end

--- Rewrite a create body onto the overlay (`name`: the create's ?name=). Returns the owner and
--- the allocations (`{ address, ip, network, claim }`, the first is the create's network; the
--- others are connected after the create), or false when the container is left alone, or nil
--- and a message.
function weave.rewrite(spec, name)
  if type(spec) ~= "table" then return false end
  local value, why = cidr_of(spec)
  if why then return nil, why end
  if value == nil and not weave.default_ipalloc then return false end
  if not default_network(spec) then return false end
  local entries, bad = weave.entries(value or "")
  if not entries then
    if bad then return nil, bad end
    return false
  end
  local owner
  if weave.identities then
    local ok, id = pcall(overlay.identity, spec.Labels, name)
    if not ok then return nil, tostring(id):match("^[^\n]*") end
    owner = id
  end
  owner = owner or overlay.new_owner()
  local got, networks = {}, {}
  for _, e in ipairs(entries) do
    local ok, err, a = pcall(overlay.allocate, owner, e ~= "" and e or nil)
    if ok and a and networks[a.network] then
      ok, err = false, ("%s and %s are both on network %s: one address per subnet (each entry is one interface)")
        :format(networks[a.network], a.address, a.network)
    end
    if not ok or not a then
      pcall(overlay.release, owner)
      return nil, ("%s=%s: %s"):format(weave.env, value or "", tostring(err):match("^[^\n]*"))
    end
    networks[a.network] = a.address
    got[#got + 1] = a
  end
  local first = got[1]
  if not first then return false end
  spec.HostConfig = type(spec.HostConfig) == "table" and spec.HostConfig or json.object()
  spec.HostConfig.NetworkMode = first.network
  -- The claim on the address goes with the endpoint: dockerd hands it to luastrip's driver at
  -- every start, which gives the address to no endpoint without it.
  local endpoint = { IPAMConfig = { IPv4Address = first.ip } }
  if first.claim then endpoint.DriverOpts = { [overlay.claim_option] = first.claim } end
  spec.NetworkingConfig = { EndpointsConfig = { [first.network] = endpoint } }
  if type(spec.Labels) ~= "table" then spec.Labels = json.object() end
  spec.Labels[overlay.owner_label] = owner
  return owner, got
end

--- Install the create hooks.
function weave.enable()
  route.pre("POST /containers/create", function(req)
    local spec = req:json()
    local owner, got = weave.rewrite(spec, req.query.name)
    if owner == nil then return deny(got) end
    if owner then
      req:set_json(spec)
      req.ctx.weave = { owner = owner, got = got, identity = owner:find(":") ~= nil }
    end
  end)
  route.post("POST /containers/create", function(req, res)
    local w = req.ctx.weave
    if not w then return end
    if res.status >= 300 then
      -- Not created (a missing image: the CLI pulls and creates again): give them back. An
      -- identity's are given back by luastrip's own hook, as they were before this create
      -- (once: a second give-back would take them from the container that had them).
      if not w.identity then pcall(overlay.release, w.owner) end
      return
    end
    local id = res:json().Id
    for i = 2, #w.got do
      local ok, why = pcall(overlay.attach, id, w.got[i].address)
      if not ok then
        docker.request { method = "DELETE", path = "/containers/" .. id, query = { force = "1" } }
        pcall(overlay.release, w.owner)
        res.status = 400
        res:set_json { message = tostring(why):match("^[^\n]*") }
        return
      end
    end
  end)
end

return weave
