-- Note every container that exits with an error, also when it was started without luastrip
-- (a restart policy, a call sent to dockerd directly): the daemon's events reach the script.
--   luastrip serve --scripts examples/scripts/on-die.lua
-- then `store.get("died:NAME")` (in `luastrip repl`) is its last non-zero exit code.
docker.on_event({ type = "container", event = "die" }, function(ev)
  local name = ev.Actor.Attributes.name
  local code = tonumber(ev.Actor.Attributes.exitCode)
  if code and code ~= 0 then
    log.warn(name .. " exited with " .. code, { container = ev.Actor.ID })
    store.set("died:" .. name, code)
  end
end)
