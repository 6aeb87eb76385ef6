//! Links on this host: the overlay bridge and one veth pair per container endpoint, made with
//! `ip` by argv (never a shell). Every name is checked first: at most 15 bytes, letters, digits,
//! `-`, `_` and `.`, so that no name can become an option or another device's name.

use tokio::process::Command;

use crate::Error;

fn helper(reason: impl Into<String>) -> Error {
    Error::Helper {
        helper: "overlay".into(),
        reason: reason.into(),
    }
}

/// A checked Linux interface name.
pub fn check_name(what: &str, name: &str) -> Result<(), Error> {
    let ok = !name.is_empty()
        && name.len() <= 15
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(helper(format!(
            "{what} {name:?}: an interface name is 1-15 letters, digits, - _ . (starting with a letter or digit)"
        )))
    }
}

/// Run `ip ARGS…`; an error names the command and what it said.
async fn ip(args: &[&str]) -> Result<String, Error> {
    let out = Command::new("ip")
        .args(args)
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| {
            helper(format!(
                "cannot run ip ({e}); on Debian: apt-get install iproute2"
            ))
        })?;
    if !out.status.success() {
        return Err(helper(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Whether a link named `name` exists.
pub async fn exists(name: &str) -> bool {
    ip(&["link", "show", "dev", name]).await.is_ok()
}

/// The bridge `name`, created and up.
pub async fn ensure_bridge(name: &str) -> Result<(), Error> {
    check_name("--overlay-bridge", name)?;
    if !exists(name).await {
        ip(&["link", "add", "name", name, "type", "bridge"]).await?;
    }
    ip(&["link", "set", "dev", name, "up"]).await.map(|_| ())
}

/// A veth pair: `host` attached to `bridge` and up; `peer` left down for dockerd to move into
/// the container, rename, address and bring up there.
pub async fn add_veth(host: &str, peer: &str, bridge: &str) -> Result<(), Error> {
    check_name("veth", host)?;
    check_name("veth", peer)?;
    check_name("bridge", bridge)?;
    if exists(host).await {
        // Left from a crash: start again.
        let _ = ip(&["link", "del", "dev", host]).await;
    }
    ip(&[
        "link", "add", "name", host, "type", "veth", "peer", "name", peer,
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

/// Whether any link is attached to the bridge `name`.
pub async fn has_ports(name: &str) -> Result<bool, Error> {
    check_name("bridge", name)?;
    if !exists(name).await {
        return Ok(false);
    }
    Ok(!ip(&["-o", "link", "show", "master", name])
        .await?
        .trim()
        .is_empty())
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
