//! Links on this host: the overlay bridge, its VXLAN device to the other hosts, and one veth
//! pair per container endpoint, made with `ip` and `bridge` by argv (never a shell). Every name is
//! checked first: at most 15 bytes, letters, digits, `-`, `_` and `.`, so that no name can become
//! an option or another device's name. A link is set up (master, FDB, MTU) before it goes up.

use std::net::Ipv4Addr;

use tokio::process::Command;

use crate::Error;

fn helper(reason: impl Into<String>) -> Error {
    Error::Helper {
        helper: "overlay".into(),
        reason: reason.into(),
    }
}

/// Whether `name` is 1 to `max` bytes of letters, digits, `-`, `_` and `.`, starting with a
/// letter or digit: the names of links, Docker networks and their references, which can then
/// become neither an option nor a path.
pub fn plain_name(name: &str, max: usize) -> bool {
    name.as_bytes()
        .first()
        .is_some_and(u8::is_ascii_alphanumeric)
        && name.len() <= max
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// A checked Linux interface name.
pub fn check_name(what: &str, name: &str) -> Result<(), Error> {
    if plain_name(name, 15) {
        Ok(())
    } else {
        Err(helper(format!(
            "{what} {name:?}: an interface name is 1-15 letters, digits, - _ . (starting with a letter or digit)"
        )))
    }
}

/// Run `ip ARGS…`; an error names the command and what it said.
async fn ip(args: &[&str]) -> Result<String, Error> {
    iproute2("ip", args).await
}

/// Run `ip` or `bridge` (both iproute2) with `args`.
async fn iproute2(tool: &str, args: &[&str]) -> Result<String, Error> {
    let out = Command::new(tool)
        .args(args)
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| {
            helper(format!(
                "cannot run {tool} ({e}); on Debian: apt-get install iproute2"
            ))
        })?;
    if !out.status.success() {
        return Err(helper(format!(
            "{tool} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Point `mac` at the VXLAN peer `dst` on the VXLAN device `vxlan`: a dynamic entry, so that
/// traffic from elsewhere still moves it and it ages out as learned ones do.
pub async fn fdb_point(vxlan: &str, mac: &str, dst: Ipv4Addr) -> Result<(), Error> {
    check_name("VXLAN device", vxlan)?;
    check_mac(mac)?;
    let dst = dst.to_string();
    let args = [
        "fdb", "replace", mac, "dev", vxlan, "dst", &dst, "self", "dynamic",
    ];
    iproute2("bridge", &args).await.map(drop)
}

/// Forget where `mac` is through the VXLAN device `vxlan`: the device's entry and the bridge's
/// (an entry that is not there is no error).
pub async fn fdb_forget(vxlan: &str, mac: &str) {
    if check_name("VXLAN device", vxlan).is_err() || check_mac(mac).is_err() {
        return;
    }
    for table in ["self", "master"] {
        let _ = iproute2("bridge", &["fdb", "del", mac, "dev", vxlan, table]).await;
    }
}

/// A MAC as `ip` takes it: six pairs of hex digits joined by `:`.
fn check_mac(mac: &str) -> Result<(), Error> {
    let ok = mac.len() == 17
        && mac.split(':').count() == 6
        && mac
            .split(':')
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()));
    if ok {
        Ok(())
    } else {
        Err(helper(format!("{mac:?} is not a MAC address")))
    }
}

/// Whether a link named `name` exists.
pub async fn exists(name: &str) -> bool {
    ip(&["link", "show", "dev", name]).await.is_ok()
}

/// The alias luastrip gives each bridge it makes. A bridge without it is someone else's:
/// luastrip never joins a container to it (unless the operator named it with
/// `--overlay-bridge`) and never deletes it.
pub const MADE_BY: &str = "luastrip-overlay";

/// Whether the link `name` is one luastrip made (its alias says so).
pub async fn made_here(name: &str) -> Result<bool, Error> {
    let shown = ip(&["-o", "link", "show", "dev", name]).await?;
    Ok(shown
        .split('\\')
        .any(|part| part.trim() == format!("alias {MADE_BY}")))
}

/// The bridge `name`, created (marked as luastrip's) and up. An existing link is used only if
/// luastrip made it, or if it is `trusted` (the operator's `--overlay-bridge`): a client's
/// `-o luastrip.bridge=` must never put containers on a foreign bridge or interface.
pub async fn ensure_bridge(name: &str, trusted: bool) -> Result<(), Error> {
    check_name("--overlay-bridge", name)?;
    if !exists(name).await {
        ip(&["link", "add", "name", name, "type", "bridge"]).await?;
        ip(&["link", "set", "dev", name, "alias", MADE_BY]).await?;
    } else if !trusted && !made_here(name).await? {
        return Err(helper(format!(
            "{name} is an interface luastrip did not make: a network of luastrip's driver takes \
             a bridge luastrip makes (-o luastrip.bridge= a name no interface has), or the \
             --overlay-bridge"
        )));
    }
    ip(&["link", "set", "dev", name, "up"]).await.map(|_| ())
}

/// The VXLAN device `name` (network `vni`, UDP 4789) on `bridge`, up, flooding to exactly
/// `peers`: an all-zero FDB entry per peer (head-end replication); unicast destinations are
/// learned from what comes back. Entries of peers no longer named are removed.
pub async fn ensure_vxlan(
    name: &str,
    vni: u32,
    peers: &[Ipv4Addr],
    bridge: &str,
) -> Result<(), Error> {
    check_name("vxlan", name)?;
    check_name("bridge", bridge)?;
    let fresh = !exists(name).await;
    if fresh {
        let vni = vni.to_string();
        ip(&[
            "link", "add", "name", name, "type", "vxlan", "id", &vni, "dstport", "4789",
        ])
        .await?;
        ip(&["link", "set", "dev", name, "master", bridge]).await?;
    }
    let listed = iproute2("bridge", &["fdb", "show", "dev", name]).await?;
    let flooded: Vec<&str> = listed
        .lines()
        .filter_map(|l| l.strip_prefix("00:00:00:00:00:00 dst "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    for p in peers {
        let p = p.to_string();
        if !flooded.contains(&p.as_str()) {
            let entry = ["00:00:00:00:00:00", "dev", name, "dst", &p];
            iproute2("bridge", &[&["fdb", "append"][..], &entry].concat()).await?;
        }
    }
    for old in flooded {
        if !peers.iter().any(|p| p.to_string() == old) {
            let entry = ["00:00:00:00:00:00", "dev", name, "dst", old];
            iproute2("bridge", &[&["fdb", "del"][..], &entry].concat()).await?;
        }
    }
    if fresh {
        ip(&["link", "set", "dev", name, "up"]).await?;
    }
    Ok(())
}

/// A veth pair: `host` attached to `bridge` and up; `peer` left down for dockerd to move into
/// the container, rename, address and bring up there. Both ends get `mtu` if given.
pub async fn add_veth(host: &str, peer: &str, bridge: &str, mtu: Option<u32>) -> Result<(), Error> {
    check_name("veth", host)?;
    check_name("veth", peer)?;
    check_name("bridge", bridge)?;
    if exists(host).await {
        // Left from a crash: start again.
        let _ = ip(&["link", "del", "dev", host]).await;
    }
    let mtu = mtu.unwrap_or(1500).to_string();
    ip(&[
        "link", "add", "name", host, "mtu", &mtu, "type", "veth", "peer", "name", peer, "mtu", &mtu,
    ])
    .await?;
    let attached = async {
        ip(&["link", "set", "dev", host, "master", bridge]).await?;
        ip(&["link", "set", "dev", host, "up"]).await
    }
    .await;
    if let Err(e) = attached {
        let _ = ip(&["link", "del", "dev", host]).await;
        return Err(e);
    }
    Ok(())
}

/// The links attached to the bridge `name` (none if it does not exist).
pub async fn ports(name: &str) -> Result<Vec<String>, Error> {
    check_name("bridge", name)?;
    if !exists(name).await {
        return Ok(Vec::new());
    }
    // `7: lsv0123456789@if6: <…> mtu 1500 master luastrip0 …`
    Ok(ip(&["-o", "link", "show", "master", name])
        .await?
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_string())
        .collect())
}

/// Delete a link (one end of a veth pair takes the other with it); absent is fine.
pub async fn delete(name: &str) -> Result<(), Error> {
    check_name("link", name)?;
    if exists(name).await {
        ip(&["link", "del", "dev", name]).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check_name;

    #[test]
    fn link_names_cannot_become_options_or_paths() {
        for bad in ["", "-x", "a b", "a/b", "a;b", "0123456789abcdef", "é"] {
            assert!(check_name("t", bad).is_err(), "{bad:?}");
        }
        for ok in ["luastrip0", "lsv1234abcd", "br-1.2_3"] {
            check_name("t", ok).unwrap();
        }
    }
}
