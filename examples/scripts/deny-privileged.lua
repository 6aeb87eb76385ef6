-- No container, exec, volume, plugin or service that gets power over the host: privileged
-- containers and exec, host bind mounts, host namespaces (pid, ipc, uts, userns, network,
-- cgroupns), capabilities such as SYS_ADMIN or ALL, devices, unconfined security options, local
-- volumes that bind host paths or devices, plugins, and the same through old API versions and
-- swarm services. Named volumes ("data:/data") are fine. What it covers and what it does not:
-- docs/SECURITY.md.
local policy = require "luastrip.policy"

policy.guard()

-- To allow a host path:  policy.guard { allow_binds = { "/srv/shared" } }  (exactly that one;
-- "/srv/shared/**" for anything below it, if no container can plant a link there)
