-- Only these images run here, and only these are pulled: the guard reads each reference as Docker
-- does, so "busybox" also allows "busybox:latest", "docker.io/library/busybox" and the same by
-- digest, and "registry.example/team/*" every image below team/ in that registry. Everything else
-- the guard refuses (privileged containers, host binds, …) stays refused.
require("luastrip.policy").guard {
  allow_images = { "busybox", "alpine:3.20", "registry.example/team/*" },
}
