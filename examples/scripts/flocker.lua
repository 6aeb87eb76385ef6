-- Flocker's `-v /flocker/NAME:/path` on plain docker run: the bind is rewritten to the ZFS
-- volume NAME (created on first use). Serve with:
--   luastrip serve --scripts examples/scripts --volume-backend zfs --zfs-pool tank
require("luastrip.flocker").enable()
