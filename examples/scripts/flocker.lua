-- Flocker's `-v /flocker/NAME:/path` on plain docker run: the bind is rewritten to the ZFS
-- volume NAME (created on first use). Serve with:
--   luastrip serve --scripts examples/scripts --volume-backend zfs --zfs-pool tank
--
-- A volume another gateway owns is moved here (Flocker's two-phase push) only when may_pull
-- says so. This example lets every client of this gateway move any volume from its peers, as
-- Flocker did; a site narrows it, e.g. to one owner or to volumes named for this host:
--   may_pull = function(v, req) return v.owner == "db-host-1", "only from db-host-1" end
require("luastrip.flocker").enable {
  may_pull = function(v, req) return true end,
}
