//! Overlay IPs: the networking half of luastrip. Every container gets an address of its own on a
//! Linux bridge, with the interface in place before its process runs.
//!
//! This is the first step: dockerd's own remote network driver protocol, served by
//! [`crate::plugin::network::NetworkDriver`], makes dockerd call luastrip before every start
//! (restart-policy restarts and restarts at boot included), and [`link`] does the Linux side
//! (bridge, veth pairs) with the `ip` command by argv. Addresses come from the network's IPAM
//! (Docker's default one for now). `WEAVE_CIDR`, `overlay.*` in Lua, the events follower and
//! VXLAN between hosts come next.

pub mod ipam;
pub mod link;
