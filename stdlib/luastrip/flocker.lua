-- luastrip.flocker: Flocker's volume syntax on plain `docker run`.
--
--   require("luastrip.flocker").enable()
--
-- then `docker run -v /flocker/db:/data busybox` (or `--mount type=bind,source=/flocker/db,...`)
-- gets the volume `db` from the volume helper (created on first use, the same volume every
-- time after) and binds its mountpoint instead. Every other bind, mount and field of the create
-- body is left exactly as it was.
--
-- Needs `luastrip serve --volume-backend zfs --zfs-pool POOL`. A name the helper refuses (`/`,
-- `@`, `..`, spaces, too long) is a 400 naming it; so is a sub-path (`/flocker/db/x:/data`,
-- `/flocker/db/../..`), which could climb out of the volume. Sources are read as dockerd cleans
-- them: `//flocker/db` and `/flocker/./db/` are the volume db.
--
-- A volume another gateway owns is moved here first, if `flocker.may_pull` allows it: its owner
-- (a `--peer`) is asked to push it (Flocker's two-phase push) while the create waits, at most
-- `flocker.pull_timeout` seconds; a failure is a Docker error naming the owner and the cause,
-- never a hung client. The owner refuses while a running container there uses the volume.
--
-- Moving a volume takes it away from the host that has it, so it is refused unless the site
-- says who may: `flocker.may_pull(volume, req)` decides, with the volume (`name`, `owner`, …, as
-- `zfs.volume` gives it) and the client's call; it returns true, or false and why. With no
-- `may_pull` (the default) nothing is moved here.
--
--   require("luastrip.flocker").enable {
--     may_pull = function(v, req) return v.owner == "db-host-1" end,
--   }
local flocker = {}

flocker.prefix = "/flocker/"

-- How long a create waits for another gateway to push a volume here, in seconds.
flocker.pull_timeout = 120

-- Who may move a volume here from the gateway that owns it (see above); nil refuses every move.
flocker.may_pull = nil

local function deny(message, status)
  return { status = status or 400, json = { message = message } }
end

-- The segments of an absolute path as dockerd reads it (Go's filepath.Clean, as
-- luastrip.policy spells it): empty and "." segments dropped, ".." taking one back.
local clean_path = require("luastrip.policy").clean_path
local function segments(path)
  local parts = {}
  for seg in clean_path(path):gmatch("[^/]+") do
    parts[#parts + 1] = seg
  end
  return parts
end

-- Whether a bind source means a Flocker volume: written under /flocker/ (before or after
-- cleaning, so "//flocker/db" and "/x/../flocker/db" count as dockerd would read them).
local function is_flocker(source)
  if type(source) ~= "string" or source:sub(1, 1) ~= "/" then return false end
  local first = source:match("^[/.]*/([^/]+)")
  return first == "flocker" or segments(source)[1] == "flocker"
end

-- The volume behind a Flocker source, or nil and why not.
local function volume_for(source, req)
  local parts = segments(source)
  if #parts < 2 or parts[1] ~= "flocker" then
    return nil, "luastrip.flocker: " .. source .. " names no volume: use /flocker/NAME"
  end
  if #parts > 2 then
    return nil, "luastrip.flocker: " .. source .. ": a Flocker volume is bound whole (/flocker/NAME), not a path inside it"
  end
  local ok, v = pcall(zfs.volume, parts[2])
  if not ok then
    return nil, "luastrip.flocker: " .. source .. ": " .. tostring(v):match("^[^\n]*")
  end
  if not v.owned then
    -- A stale copy of a volume this host owns, or one whose owner was forgotten: no move
    -- brings it here.
    if v.stale or v.orphaned then
      return nil, "luastrip.flocker: " .. tostring(v.refused)
    end
    if type(flocker.may_pull) ~= "function" then
      return nil, ("luastrip.flocker: volume %s is owned by %s, and this gateway moves no volume here "
        .. "unless flocker.may_pull allows it"):format(v.name, tostring(v.owner))
    end
    local allowed, refusal = flocker.may_pull(v, req)
    if allowed ~= true then
      return nil, ("luastrip.flocker: volume %s is owned by %s and may not be moved here%s")
        :format(v.name, tostring(v.owner), refusal and (": " .. tostring(refusal)) or "")
    end
    -- Ask the owner to push it here (two-phase); the create waits, up to pull_timeout.
    local pulled, why = pcall(zfs.pull, v.name, { timeout = flocker.pull_timeout })
    if not pulled then
      return nil, ("luastrip.flocker: volume %s is owned by %s and could not be moved here: %s")
        :format(v.name, tostring(v.owner), tostring(why):match("^[^\n]*"))
    end
    local moved = zfs.volume(v.name)
    if not moved.owned then
      return nil, ("luastrip.flocker: volume %s is still owned by %s"):format(moved.name, tostring(moved.owner))
    end
    v = moved
  end
  return v
end

--- Rewrite the `/flocker/NAME` binds and bind mounts of a create body in place, and note each
--- mountpoint it put there in `produced` (a set, when given): luastrip.policy's guard allows
--- exactly those host paths. `req` (the client's call) is handed to `flocker.may_pull`.
--- Returns true if anything changed, or nil and a message naming what was refused.
function flocker.rewrite(spec, produced, req)
  produced = produced or {}
  local hc = type(spec) == "table" and spec.HostConfig
  if type(hc) ~= "table" then return false end
  local changed = false
  if type(hc.Binds) == "table" then
    for i, bind in ipairs(hc.Binds) do
      if type(bind) == "string" then
        local source, rest = bind:match("^([^:]*)(:.*)$")
        source = source or bind
        if is_flocker(source) then
          local v, why = volume_for(source, req)
          if not v then return nil, why end
          hc.Binds[i] = v.mountpoint .. (rest or "")
          produced[v.mountpoint] = true
          changed = true
        end
      end
    end
  end
  if type(hc.Mounts) == "table" then
    for _, m in ipairs(hc.Mounts) do
      if type(m) == "table" and m.Type == "bind" and is_flocker(m.Source) then
        local v, why = volume_for(m.Source, req)
        if not v then return nil, why end
        m.Source = v.mountpoint
        produced[v.mountpoint] = true
        changed = true
      end
    end
  end
  return changed
end

--- Install the create hook. The mountpoints it binds are listed in the call's
--- `req.ctx.luastrip_binds`, for luastrip.policy's guard (loaded after it) to allow exactly.
--- `opts.may_pull` sets `flocker.may_pull`.
function flocker.enable(opts)
  if type(opts) == "table" and opts.may_pull ~= nil then flocker.may_pull = opts.may_pull end
  route.pre("POST /containers/create", function(req)
    local spec = req:json()
    local produced = type(req.ctx.luastrip_binds) == "table" and req.ctx.luastrip_binds or {}
    local changed, why = flocker.rewrite(spec, produced, req)
    if changed == nil then return deny(why) end
    if changed then
      req.ctx.luastrip_binds = produced
      req:set_json(spec)
    end
  end)
end

return flocker
