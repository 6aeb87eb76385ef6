//! How the overlay helper is set up (the `--network-plugin` and `--overlay-*` flags), checked and
//! built into an [`Overlay`] here, so that `serve` only wires what the helper built.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use tracing::info;

use super::ipam::Cidr;
use super::{link, Overlay, Settings, Vxlan};
use crate::cluster::Cluster;
use crate::error::ConfigError;
use crate::upstream::{Upstream, UpstreamAddr};

/// The overlay helper's flags.
#[derive(Debug, Clone)]
pub struct Config {
    /// `--network-plugin`: serve the network driver under this name.
    pub plugin: String,
    /// `--overlay-bridge`: the bridge every endpoint joins.
    pub bridge: String,
    /// `--overlay-cidr`: the default network's subnet, and that of networks created without one.
    pub cidr: String,
    /// `--overlay-grace-s`: how long a released address is held back from new containers.
    pub grace: Duration,
    /// `--overlay-hold-s`: how long an identity's address stays its own after its container is
    /// removed.
    pub hold: Duration,
    /// `--overlay-network`: the default overlay network's name (others are `NAME-10.2.1.0-24`).
    pub network: String,
    /// `--overlay-range`: the part of `cidr` this host picks from.
    pub range: Option<String>,
    /// `--overlay-peer`: other hosts, reached by VXLAN from the overlay bridge.
    pub peers: Vec<Ipv4Addr>,
    /// `--overlay-vni`: the VXLAN network identifier.
    pub vni: u32,
    /// `--overlay-underlay`: this host's address on the underlay; with `--cluster`, the other
    /// hosts make it their VXLAN peer (and theirs are this host's), so no `--overlay-peer` is
    /// needed.
    pub underlay: Option<Ipv4Addr>,
}

fn flag(name: &str, e: impl std::fmt::Display) -> ConfigError {
    ConfigError(format!("{name}: {e}"))
}

impl Config {
    /// The helper these flags describe (each checked, naming its flag), on `cluster`. With
    /// peers, the bridge's VXLAN is set up now if the bridge is up already (else at its first
    /// use).
    pub async fn open(
        &self,
        cluster: Arc<dyn Cluster>,
        host_name: &str,
        upstream: &UpstreamAddr,
    ) -> Result<Overlay, ConfigError> {
        link::check_name("--overlay-bridge", &self.bridge)
            .map_err(|e| ConfigError(e.to_string()))?;
        let cidr = Cidr::parse(&self.cidr).map_err(|e| flag("--overlay-cidr", e))?;
        crate::volumes::name::VolumeName::parse(&self.plugin)
            .map_err(|e| flag("--network-plugin", e))?;
        crate::volumes::name::VolumeName::parse(&self.network)
            .map_err(|e| flag("--overlay-network", e))?;
        let range = match &self.range {
            None => None,
            Some(r) => {
                let r = Cidr::parse(r).map_err(|e| flag("--overlay-range", e))?;
                if r.prefix < cidr.prefix || !r.overlaps(&cidr) {
                    return Err(ConfigError(format!(
                        "--overlay-range {r} is not inside --overlay-cidr {cidr}"
                    )));
                }
                Some(r)
            }
        };
        let vxlan = (!self.peers.is_empty() || self.underlay.is_some()).then(|| Vxlan {
            vni: self.vni,
            peers: self.peers.clone(),
        });
        let settings = Settings {
            plugin: self.plugin.clone(),
            bridge: self.bridge.clone(),
            cidr,
            network: self.network.clone(),
            range,
            vxlan,
            underlay: self.underlay,
        };
        let mut overlay = Overlay::new(
            cluster,
            host_name.to_string(),
            self.grace,
            settings,
            Upstream::new(upstream.clone()),
        );
        overlay.ipam = overlay.ipam.with_hold(self.hold);
        if overlay.settings.vxlan.is_some() && link::exists(&overlay.settings.bridge).await {
            overlay
                .ensure_bridge(&overlay.settings.bridge)
                .await
                .map_err(|e| flag("--overlay-peer", e))?;
        }
        info!(plugin = %self.plugin, bridge = %self.bridge, cidr = %cidr, "overlay helper ready");
        Ok(overlay)
    }
}
