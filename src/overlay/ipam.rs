//! Address allocation for the overlay, through the [`Cluster`] store: an address is taken by
//! creating the record `overlay/<pool>/<address>` (create-if-absent), so two allocators racing
//! for one address — two workers, two gateways sharing the store — cannot both win, and
//! allocations survive restarts with the store. IPv4.

use std::net::Ipv4Addr;
use std::sync::Arc;

use serde_json::json;

use crate::cluster::{Cluster, ClusterError};
use crate::Error;

fn helper(reason: impl Into<String>) -> Error {
    Error::Helper {
        helper: "overlay".into(),
        reason: reason.into(),
    }
}

/// An IPv4 network: its address (host bits zero) and prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub network: Ipv4Addr,
    pub prefix: u8,
}

impl Cidr {
    /// Parse `10.32.0.0/12`; host bits must be zero, and the prefix at most /30.
    pub fn parse(s: &str) -> Result<Cidr, Error> {
        let bad = |why: &str| helper(format!("{s:?} is not a usable IPv4 CIDR: {why}"));
        let (addr, prefix) = s.split_once('/').ok_or_else(|| bad("no /prefix"))?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| bad("bad address"))?;
        let prefix: u8 = prefix.parse().map_err(|_| bad("bad prefix"))?;
        if prefix > 30 {
            return Err(bad(
                "the prefix must be /30 or shorter, to leave room for hosts",
            ));
        }
        let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
        if u32::from(addr) & !mask != 0 {
            return Err(bad("host bits are set (did you mean the network address?)"));
        }
        Ok(Cidr {
            network: addr,
            prefix,
        })
    }

    fn mask(&self) -> u32 {
        u32::MAX
            .checked_shl(32 - u32::from(self.prefix))
            .unwrap_or(0)
    }

    /// Whether `a` is a host address of this network (not the network or broadcast address).
    pub fn holds(&self, a: Ipv4Addr) -> bool {
        let a = u32::from(a);
        let net = u32::from(self.network);
        a & self.mask() == net && a != net && a != net | !self.mask()
    }

    /// The host addresses, lowest first.
    fn hosts(&self) -> impl Iterator<Item = Ipv4Addr> {
        let net = u32::from(self.network);
        (net + 1..net | !self.mask()).map(Ipv4Addr::from)
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// Allocations in one store, for this gateway (`host`, recorded with each address).
pub struct Ipam {
    cluster: Arc<dyn Cluster>,
    host: String,
}

fn key(pool: &Cidr, a: Ipv4Addr) -> String {
    format!("overlay/{}_{}/{a}", pool.network, pool.prefix)
}

impl Ipam {
    pub fn new(cluster: Arc<dyn Cluster>, host: String) -> Self {
        Ipam { cluster, host }
    }

    /// Take an address of `pool`: `want` if given (refused if taken or outside), else the
    /// lowest free one. `for_what` is recorded with it (a container, "gateway").
    pub async fn allocate(
        &self,
        pool: &Cidr,
        want: Option<Ipv4Addr>,
        for_what: &str,
    ) -> Result<Ipv4Addr, Error> {
        let record = json!({ "host": self.host, "for": for_what });
        let store = |e: ClusterError| helper(e.to_string());
        if let Some(a) = want {
            if !pool.holds(a) {
                return Err(helper(format!("{a} is not a host address of {pool}")));
            }
            return match self.cluster.create(&key(pool, a), record).await {
                Ok(_) => Ok(a),
                Err(ClusterError::Conflict { .. }) => {
                    Err(helper(format!("{a} is already taken in {pool}")))
                }
                Err(e) => Err(store(e)),
            };
        }
        let prefix = format!("overlay/{}_{}/", pool.network, pool.prefix);
        let taken: std::collections::HashSet<String> = self
            .cluster
            .list(&prefix)
            .await
            .map_err(store)?
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        for a in pool.hosts() {
            let k = key(pool, a);
            if taken.contains(&k) {
                continue;
            }
            match self.cluster.create(&k, record.clone()).await {
                Ok(_) => return Ok(a),
                // Someone took it since the list: try the next.
                Err(ClusterError::Conflict { .. }) => continue,
                Err(e) => return Err(store(e)),
            }
        }
        Err(helper(format!(
            "{pool} is exhausted: every address is taken"
        )))
    }

    /// Give an address back; one not taken is fine.
    pub async fn release(&self, pool: &Cidr, a: Ipv4Addr) -> Result<(), Error> {
        let k = key(pool, a);
        let store = |e: ClusterError| helper(e.to_string());
        if let Some(r) = self.cluster.get(&k).await.map_err(store)? {
            match self.cluster.delete(&k, r.revision).await {
                Ok(()) | Err(ClusterError::Conflict { current: None, .. }) => {}
                Err(e) => return Err(store(e)),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::local::LocalCluster;

    fn ipam() -> Ipam {
        Ipam::new(Arc::new(LocalCluster::memory()), "h1".into())
    }

    #[test]
    fn cidrs_are_checked() {
        for (bad, why) in [
            ("10.0.0.0", "no /prefix"),
            ("10.0.0.1/24", "host bits"),
            ("10.0.0.0/31", "/30 or shorter"),
            ("10.0.0/24", "bad address"),
            ("10.0.0.0/x", "bad prefix"),
        ] {
            let e = Cidr::parse(bad).unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
        let c = Cidr::parse("10.32.0.0/12").unwrap();
        assert!(c.holds("10.47.255.254".parse().unwrap()));
        assert!(!c.holds("10.47.255.255".parse().unwrap()));
        assert!(!c.holds("10.32.0.0".parse().unwrap()));
        assert!(!c.holds("10.48.0.1".parse().unwrap()));
    }

    #[tokio::test]
    async fn addresses_are_never_handed_out_twice() {
        let ipam = Arc::new(ipam());
        let pool = Cidr::parse("10.9.0.0/24").unwrap();
        let tasks: Vec<_> = (0..50)
            .map(|i| {
                let ipam = ipam.clone();
                tokio::spawn(async move { ipam.allocate(&pool, None, &format!("c{i}")).await })
            })
            .collect();
        let mut got = std::collections::BTreeSet::new();
        for t in tasks {
            assert!(got.insert(t.await.unwrap().unwrap()));
        }
        assert_eq!(got.len(), 50);
        // Explicit: taken, outside, then free again after release.
        let first: Ipv4Addr = "10.9.0.1".parse().unwrap();
        let e = ipam.allocate(&pool, Some(first), "x").await.unwrap_err();
        assert!(e.to_string().contains("already taken"), "{e}");
        let e = ipam
            .allocate(&pool, Some("10.8.0.1".parse().unwrap()), "x")
            .await
            .unwrap_err();
        assert!(e.to_string().contains("not a host address"), "{e}");
        ipam.release(&pool, first).await.unwrap();
        ipam.release(&pool, first).await.unwrap();
        assert_eq!(ipam.allocate(&pool, None, "y").await.unwrap(), first);
    }

    #[tokio::test]
    async fn an_exhausted_range_says_so() {
        let ipam = ipam();
        let pool = Cidr::parse("10.9.0.0/30").unwrap();
        ipam.allocate(&pool, None, "a").await.unwrap();
        ipam.allocate(&pool, None, "b").await.unwrap();
        let e = ipam.allocate(&pool, None, "c").await.unwrap_err();
        assert!(e.to_string().contains("exhausted"), "{e}");
    }
}
