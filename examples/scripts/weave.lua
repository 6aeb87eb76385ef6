-- Weave's `-e WEAVE_CIDR=10.2.1.5/24` on plain docker run: the container gets `ethwe0` with that
-- address on the overlay before its process runs, and keeps it until it is removed. Serve with:
--   luastrip serve --scripts examples/scripts/weave.lua --network-plugin luastrip-net
require("luastrip.weave").enable()
