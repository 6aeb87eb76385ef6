//! Address allocation for the overlay, through the [`Cluster`] store: an address is taken by
//! creating the record `overlay/<pool>/<address>` (create-if-absent), so two allocators racing
//! for one address — two workers, two gateways sharing the store — cannot both win, and
//! allocations survive restarts with the store. IPv4.

use std::net::Ipv4Addr;
use std::sync::Arc;

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{json, Value};
use tracing::warn;

use crate::cluster::{now_s, Cluster, ClusterError};
use crate::Error;

pub mod identity;
pub use identity::{identity_of, is_identity};

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

    /// The network of `prefix` bits around `a` (`10.2.1.5`, 24 → `10.2.1.0/24`).
    pub fn containing(a: Ipv4Addr, prefix: u8) -> Result<Cidr, Error> {
        if prefix > 30 {
            return Err(helper(format!(
                "{a}/{prefix}: the prefix must be /30 or shorter, to leave room for hosts"
            )));
        }
        let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
        Ok(Cidr {
            network: Ipv4Addr::from(u32::from(a) & mask),
            prefix,
        })
    }

    /// Whether the two networks share an address.
    pub fn overlaps(&self, other: &Cidr) -> bool {
        let mask = self.mask() & other.mask();
        u32::from(self.network) & mask == u32::from(other.network) & mask
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

    /// The /24 blocks this network's addresses fall in (one, for a network of /24 or smaller),
    /// lowest first, each as its first address.
    fn blocks(&self) -> impl Iterator<Item = Ipv4Addr> {
        let first = u32::from(self.network) & BLOCK_MASK;
        let last = (u32::from(self.network) | !self.mask()) & BLOCK_MASK;
        (first..=last).step_by(256).map(Ipv4Addr::from)
    }
}

/// How long a block of this host found full is passed by before it is read again.
const FULL_FOR: Duration = Duration::from_secs(30);

/// Addresses are picked a /24 block at a time: a host claims blocks and picks in its own, so that
/// a pick reads one block's records (at most 256), never the whole range.
const BLOCK_MASK: u32 = 0xffff_ff00;

/// A block as keys name it: its first three octets (`10.32.7`). The keys of its addresses all
/// begin with it and a dot, so one prefix lists exactly the block.
fn block_name(block: Ipv4Addr) -> String {
    let [a, b, c, _] = block.octets();
    format!("{a}.{b}.{c}")
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// Who holds an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holder<'a> {
    /// A container (or a name a script chose), until it is released — across stop/start,
    /// restarts and gateway restarts. dockerd asks for such an address by its value at every
    /// start ([`Holder::Endpoint`] with `want`), which is granted.
    Owner(&'a str),
    /// One endpoint, for as long as dockerd keeps it (a container's run on a network without a
    /// fixed address).
    Endpoint,
    /// A network's gateway address.
    Gateway,
}

/// Who holds an address, as [`Ipam::taken`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Taken {
    Owner(String),
    Endpoint,
    Gateway,
}

/// An address held by an owner.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Held {
    pub pool: String,
    pub address: Ipv4Addr,
    /// The owner's claim on it ([`Ipam::endpoint_may_take`]); `None` for a record written
    /// before claims were kept.
    #[serde(skip)]
    pub claim: Option<String>,
}

/// Allocations in one store, for this gateway (`host`, recorded with each address).
///
/// A released address is kept out of the pool for `grace` (set `released_at`), so that a new
/// container does not get the address of one that just died while peers still send to it; an
/// explicit request for it is granted at once.
pub struct Ipam {
    cluster: Arc<dyn Cluster>,
    host: String,
    grace: Duration,
    /// `--overlay-range`: new picks in a pool around it come from it (gateways excepted).
    range: Option<Cidr>,
    /// Per pool, the block of this host's last pick: the next starts there.
    cursor: std::sync::Mutex<HashMap<String, Ipv4Addr>>,
    /// This host's blocks found full, and when: passed by for [`FULL_FOR`] (another host may
    /// release an address in one meanwhile), or until this process releases one there.
    full: std::sync::Mutex<HashMap<(String, Ipv4Addr), std::time::Instant>>,
    /// Whether this process has indexed the owners' addresses recorded before the index.
    indexed: std::sync::atomic::AtomicBool,
    /// Address keys this process is taking now: its other picks pass them by rather than race
    /// them (a lost race costs a round trip; the store still decides between hosts).
    taking: std::sync::Mutex<std::collections::HashSet<String>>,
    /// `--overlay-hold-s`: how long an identity's address stays its own after its container is
    /// removed ([`identity`]).
    hold: Duration,
}

const PREFIX: &str = "overlay/addresses/";

/// Which host picks in which block of a pool (`{"host", "at"}`): where a pick looks first, never
/// who holds an address (that is the address's own record).
const BLOCKS: &str = "overlay/blocks/";

fn key(pool: &Cidr, a: Ipv4Addr) -> String {
    format!("{PREFIX}{}_{}/{a}", pool.network, pool.prefix)
}

/// Per host and owner, the addresses the owner holds: `overlay/owners/HOST/OWNER/POOL/ADDRESS`
/// (`{"at"}`), so that finding an owner's addresses (at every create and every destroy) reads
/// its own entries, not the whole range. An entry is written before the address's record and
/// checked against it when read: a crash between the two leaves an entry that points nowhere
/// (dropped when next read), never an address that no entry finds.
const OWNERS: &str = "overlay/owners/";

/// The index entries of `owner` on `host` (an owner as a key segment: percent-encoded). An
/// identity's are the cluster's, not a host's: it moves between hosts ([`identity`]).
fn owner_prefix(host: &str, owner: &str) -> String {
    let segment: String = form_urlencoded::byte_serialize(owner.as_bytes()).collect();
    if is_identity(owner) {
        format!("{}{segment}/", identity::IDENTITIES)
    } else {
        format!("{OWNERS}{host}/{segment}/")
    }
}

fn owner_entry(host: &str, owner: &str, pool: &Cidr, a: Ipv4Addr) -> String {
    format!("{}{}/{a}", owner_prefix(host, owner), pool_key(pool))
}

/// The pool and address an index entry's or an address record's key ends with
/// (`10.32.0.0_12/10.32.0.5`).
fn pool_and_address(tail: &str) -> Option<(Cidr, Ipv4Addr)> {
    let (pool, a) = tail.split_once('/')?;
    let pool = Cidr::parse(&pool.replacen('_', "/", 1)).ok()?;
    Some((pool, a.parse().ok()?))
}

fn pool_key(pool: &Cidr) -> String {
    format!("{}_{}", pool.network, pool.prefix)
}

/// An owner as a message shows it: a container ID shortened as `docker ps` shows it.
fn short(owner: &str) -> &str {
    if owner.len() == 64 && owner.bytes().all(|b| b.is_ascii_hexdigit()) {
        &owner[..12]
    } else {
        owner
    }
}

fn store(e: ClusterError) -> Error {
    helper(e.to_string())
}

impl Ipam {
    pub fn new(cluster: Arc<dyn Cluster>, host: String, grace: Duration) -> Self {
        Ipam {
            cluster,
            host,
            grace,
            range: None,
            cursor: Default::default(),
            full: Default::default(),
            indexed: Default::default(),
            taking: Default::default(),
            hold: identity::HOLD,
        }
    }

    /// Hold an identity's address for `hold` after its container is removed.
    pub fn with_hold(mut self, hold: Duration) -> Self {
        self.hold = hold;
        self
    }

    /// How long an identity's address is held after its container is removed.
    pub fn hold(&self) -> Duration {
        self.hold
    }

    /// Pick new addresses of pools around `range` from `range` only (this host's share).
    pub fn with_range(mut self, range: Option<Cidr>) -> Self {
        self.range = range;
        self
    }

    /// The record of a new allocation. An owner's carries a fresh random `claim`: the create
    /// that owns the address carries it too (the endpoint option [`super::CLAIM_OPTION`]), and
    /// dockerd hands it to the driver's `CreateEndpoint` at every start, where an endpoint
    /// without it is refused the address ([`Ipam::endpoint_may_take`]).
    fn record(&self, holder: Holder) -> Result<Value, Error> {
        Ok(match holder {
            Holder::Owner(o) => json!({
                "host": self.host,
                "holder": "owner",
                "owner": o,
                "at": now_s(),
                "claim": super::random_hex(16)?,
            }),
            Holder::Endpoint => json!({ "host": self.host, "holder": "endpoint" }),
            Holder::Gateway => json!({ "host": self.host, "holder": "gateway" }),
        })
    }

    /// Write the record `k` of `a` for `holder`: create it, or swap `current` (read at its
    /// revision). An owner's index entry is written first, and dropped again if the record
    /// could not be written. `Ok(false)`: the record changed since it was read.
    async fn take(
        &self,
        k: &str,
        current: Option<&crate::cluster::Record>,
        pool: &Cidr,
        a: Ipv4Addr,
        holder: Holder<'_>,
    ) -> Result<bool, Error> {
        let entry = match holder {
            Holder::Owner(o) => {
                let entry = owner_entry(&self.host, o, pool, a);
                match self.cluster.create(&entry, json!({ "at": now_s() })).await {
                    Ok(_) | Err(ClusterError::Conflict { .. }) => Some(entry),
                    Err(e) => return Err(store(e)),
                }
            }
            _ => None,
        };
        let written = match current {
            None => self.cluster.create(k, self.record(holder)?).await,
            Some(r) => self.cluster.swap(k, self.record(holder)?, r.revision).await,
        };
        match written {
            Ok(_) => {
                if let Holder::Owner(o) = holder {
                    if is_identity(o) {
                        self.locate(pool, a).await?;
                    }
                }
                Ok(true)
            }
            Err(e) => {
                if let Some(entry) = entry {
                    self.drop_entry(&entry).await;
                }
                match e {
                    ClusterError::Conflict { .. } => Ok(false),
                    e => Err(store(e)),
                }
            }
        }
    }

    /// Delete an owner's index entry (best effort: an entry left behind points nowhere, and is
    /// dropped when next read).
    async fn drop_entry(&self, entry: &str) {
        if let Ok(Some(r)) = self.cluster.get(entry).await {
            let _ = self.cluster.delete(entry, r.revision).await;
        }
    }

    /// Take an address of `pool`: `want` if given (refused if taken or outside), else the
    /// lowest free one.
    pub async fn allocate(
        &self,
        pool: &Cidr,
        want: Option<Ipv4Addr>,
        holder: Holder<'_>,
    ) -> Result<Ipv4Addr, Error> {
        match want {
            Some(a) => self.claim(pool, a, holder).await.map(|()| a),
            None => self.pick(pool, holder).await,
        }
    }

    async fn claim(&self, pool: &Cidr, a: Ipv4Addr, holder: Holder<'_>) -> Result<(), Error> {
        if !pool.holds(a) {
            return Err(helper(format!("{a} is not a host address of {pool}")));
        }
        let k = key(pool, a);
        loop {
            let current = self.cluster.get(&k).await.map_err(store)?;
            let written = match &current {
                None => self.take(&k, None, pool, a, holder).await?,
                Some(r) => match (
                    r.value["holder"].as_str(),
                    r.value["owner"].as_str(),
                    holder,
                ) {
                    // Released (maybe still in its grace): asked for by value, so granted.
                    (None, _, _) => self.take(&k, Some(r), pool, a, holder).await?,
                    // An identity's hold that has ended: free.
                    (Some("owner"), _, _) if self.hold_ended(&r.value) => {
                        self.take(&k, Some(r), pool, a, holder).await?
                    }
                    // Held for an identity whose container was removed: only it may have it.
                    (Some("owner"), Some(o), Holder::Owner(me))
                        if o != me && r.value["removed_at"].is_u64() =>
                    {
                        return Err(helper(format!(
                            "{a} is already taken in {pool} ({})",
                            self.held_for(&r.value)
                        )));
                    }
                    // dockerd starting an owner's container, which asks for its address.
                    (Some("owner"), _, Holder::Endpoint) => return Ok(()),
                    (Some("owner"), Some(o), Holder::Owner(me)) if o == me => return Ok(()),
                    (Some(h), o, _) => {
                        let by = match (h, o) {
                            ("owner", Some(o)) if is_identity(o) => format!(
                                "by {o} on host {}",
                                r.value["host"].as_str().unwrap_or_default()
                            ),
                            ("owner", Some(o)) => format!("by {o}"),
                            ("gateway", _) => "as the network's gateway".into(),
                            _ => "by a running container".into(),
                        };
                        return Err(helper(format!("{a} is already taken in {pool} ({by})")));
                    }
                },
            };
            if written {
                return Ok(());
            }
        }
    }

    /// The lowest free address of a block: first in this host's blocks (from the one of its last
    /// pick), then in a block nobody has claimed yet (claimed for this host by create-if-absent),
    /// then, with the range nearly full, in other hosts' blocks. Blocks only say where to look:
    /// the address's own record, created or swapped by compare-and-swap, decides.
    async fn pick(&self, pool: &Cidr, holder: Holder<'_>) -> Result<Ipv4Addr, Error> {
        let share = self
            .range
            .filter(|r| r.overlaps(pool) && holder != Holder::Gateway);
        let blocks: Vec<Ipv4Addr> = pool
            .blocks()
            .filter(|b| {
                share.is_none_or(|r| {
                    r.overlaps(&Cidr {
                        network: *b,
                        prefix: 24,
                    })
                })
            })
            .collect();
        let prefix = format!("{BLOCKS}{}/", pool_key(pool));
        let claimed: HashMap<String, String> = self
            .cluster
            .list(&prefix)
            .await
            .map_err(store)?
            .into_iter()
            .map(|(k, r)| {
                let host = r.value["host"].as_str().unwrap_or_default().to_string();
                (k[prefix.len()..].to_string(), host)
            })
            .collect();
        let host_of = |b: &Ipv4Addr| claimed.get(&block_name(*b)).map(String::as_str);
        let mut mine: Vec<Ipv4Addr> = blocks
            .iter()
            .copied()
            .filter(|b| host_of(b) == Some(self.host.as_str()))
            .collect();
        let last = self.cursor_at(pool);
        if let Some(at) = mine.iter().position(|b| Some(*b) == last) {
            mine.rotate_left(at);
        }
        let mut in_grace = 0;
        let (mut tried, mut passed) = (Vec::new(), Vec::new());
        for b in mine {
            tried.push(b);
            if self.known_full(pool, b) {
                passed.push(b);
                continue;
            }
            if let Some(a) = self.pick_in(pool, b, holder, share, &mut in_grace).await? {
                return Ok(a);
            }
            self.full
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert((pool_key(pool), b), std::time::Instant::now());
        }
        for b in blocks.iter().filter(|b| host_of(b).is_none()) {
            let mine = json!({ "host": self.host, "at": now_s() });
            match self
                .cluster
                .create(&format!("{prefix}{}", block_name(*b)), mine)
                .await
            {
                Ok(_) => {}
                Err(ClusterError::Conflict {
                    current: Some(r), ..
                }) if r.value["host"].as_str() == Some(self.host.as_str()) => {}
                // Another host claimed it since the list.
                Err(ClusterError::Conflict { .. }) => continue,
                Err(e) => return Err(store(e)),
            }
            tried.push(*b);
            if let Some(a) = self.pick_in(pool, *b, holder, share, &mut in_grace).await? {
                return Ok(a);
            }
        }
        // The range is nearly full: everywhere else, then this host's blocks passed by above.
        let rest = blocks.iter().filter(|b| !tried.contains(b)).copied();
        for b in rest.chain(passed).collect::<Vec<_>>() {
            if let Some(a) = self.pick_in(pool, b, holder, share, &mut in_grace).await? {
                return Ok(a);
            }
        }
        let held = if in_grace > 0 {
            format!(
                " ({in_grace} released less than {} s ago)",
                self.grace.as_secs()
            )
        } else {
            String::new()
        };
        let what = match share {
            Some(r) => format!("{pool} (this host's share, --overlay-range {r})"),
            None => pool.to_string(),
        };
        Err(helper(format!(
            "{what} is exhausted: every address is taken{held}"
        )))
    }

    /// Whether this host's `block` was found full less than [`FULL_FOR`] ago.
    fn known_full(&self, pool: &Cidr, block: Ipv4Addr) -> bool {
        let full = self.full.lock().unwrap_or_else(|e| e.into_inner());
        full.get(&(pool_key(pool), block))
            .is_some_and(|at| at.elapsed() < FULL_FOR)
    }

    fn cursor_at(&self, pool: &Cidr) -> Option<Ipv4Addr> {
        let cursor = self.cursor.lock().unwrap_or_else(|e| e.into_inner());
        cursor.get(&pool_key(pool)).copied()
    }

    /// The lowest free address of `pool` in `block` (and in `share`), taken for `holder`;
    /// `None` if the block has none. Addresses released less than the grace ago are counted in
    /// `in_grace`.
    async fn pick_in(
        &self,
        pool: &Cidr,
        block: Ipv4Addr,
        holder: Holder<'_>,
        share: Option<Cidr>,
        in_grace: &mut usize,
    ) -> Result<Option<Ipv4Addr>, Error> {
        let prefix = format!("{PREFIX}{}/{}.", pool_key(pool), block_name(block));
        let records: HashMap<String, crate::cluster::Record> = self
            .cluster
            .list(&prefix)
            .await
            .map_err(store)?
            .into_iter()
            .collect();
        let now = now_s();
        let first = u32::from(block);
        let addresses = (first..=first + 255)
            .map(Ipv4Addr::from)
            .filter(|a| pool.holds(*a) && share.is_none_or(|r| r.holds(*a)));
        for a in addresses {
            let k = key(pool, a);
            let current = match records.get(&k) {
                None => None,
                Some(r) if r.value["holder"].is_null() => {
                    let released = r.value["released_at"].as_u64().unwrap_or_default();
                    if released + self.grace.as_secs() > now {
                        *in_grace += 1;
                        continue;
                    }
                    Some(r)
                }
                // An identity's hold that has ended is free.
                Some(r) if self.hold_ended(&r.value) => Some(r),
                Some(_) => continue,
            };
            if !self
                .taking
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(k.clone())
            {
                continue;
            }
            let taken = self.take(&k, current, pool, a, holder).await;
            self.taking
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&k);
            // Someone took it since the list: try the next.
            if taken? {
                self.cursor
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(pool_key(pool), block);
                return Ok(Some(a));
            }
        }
        Ok(None)
    }

    /// Put the record at `k` back in the pool (its grace starts now).
    async fn free(&self, k: &str, r: crate::cluster::Record) -> Result<(), Error> {
        let released = json!({ "host": self.host, "released_at": now_s() });
        match self.cluster.swap(k, released, r.revision).await {
            Ok(_) => {
                if let Some((pool, a)) = k.strip_prefix(PREFIX).and_then(pool_and_address) {
                    let block = Ipv4Addr::from(u32::from(a) & BLOCK_MASK);
                    self.full
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(&(pool_key(&pool), block));
                }
            }
            // Gone or changed meanwhile: someone else released or took it.
            Err(ClusterError::Conflict { .. }) => return Ok(()),
            Err(e) => return Err(store(e)),
        }
        if let (Some(host), Some(owner), Some((pool, a))) = (
            r.value["host"].as_str(),
            r.value["owner"].as_str(),
            k.strip_prefix(PREFIX).and_then(pool_and_address),
        ) {
            self.drop_entry(&owner_entry(host, owner, &pool, a)).await;
            if is_identity(owner) {
                self.drop_entry(&identity::located(&pool, a)).await;
            }
        }
        Ok(())
    }

    /// dockerd gives back an endpoint's address (the container stopped or left the network).
    /// An owner's address stays the owner's; others go back to the pool. Unknown is fine.
    pub async fn release(&self, pool: &Cidr, a: Ipv4Addr) -> Result<(), Error> {
        let k = key(pool, a);
        match self.cluster.get(&k).await.map_err(store)? {
            Some(r) if matches!(r.value["holder"].as_str(), Some("endpoint" | "gateway")) => {
                self.free(&k, r).await
            }
            _ => Ok(()),
        }
    }

    /// Every address `owner` holds.
    pub async fn held_by(&self, owner: &str) -> Result<Vec<Held>, Error> {
        Ok(self
            .owned(owner)
            .await?
            .into_iter()
            .map(|(_, _, held)| held)
            .collect())
    }

    /// The addresses `owner` (an owner of this host) holds: its index entries, each checked
    /// against its address's record (an entry whose record says otherwise is dropped).
    async fn owned(
        &self,
        owner: &str,
    ) -> Result<Vec<(String, crate::cluster::Record, Held)>, Error> {
        self.index_earlier_owners().await?;
        let prefix = owner_prefix(&self.host, owner);
        let mut out = Vec::new();
        for (entry, _) in self.cluster.list(&prefix).await.map_err(store)? {
            let Some((pool, address)) = pool_and_address(&entry[prefix.len()..]) else {
                continue;
            };
            let k = key(&pool, address);
            match self.cluster.get(&k).await.map_err(store)? {
                Some(r) if r.value["owner"].as_str() == Some(owner) => {
                    let claim = r.value["claim"].as_str().map(str::to_string);
                    let held = Held {
                        pool: pool.to_string(),
                        address,
                        claim,
                    };
                    out.push((k, r, held));
                }
                _ => self.drop_entry(&entry).await,
            }
        }
        Ok(out)
    }

    /// Index the owners' addresses of this host recorded before the index was kept (once per
    /// process: one read of the whole range, and of this host's entries).
    async fn index_earlier_owners(&self) -> Result<(), Error> {
        use std::sync::atomic::Ordering;
        if self.indexed.load(Ordering::Acquire) {
            return Ok(());
        }
        let have: std::collections::HashSet<String> = self
            .cluster
            .list(&format!("{OWNERS}{}/", self.host))
            .await
            .map_err(store)?
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        for (k, r) in self.cluster.list(PREFIX).await.map_err(store)? {
            let (Some(owner), Some((pool, a))) = (
                r.value["owner"].as_str(),
                k.strip_prefix(PREFIX).and_then(pool_and_address),
            ) else {
                continue;
            };
            if r.value["host"].as_str() != Some(self.host.as_str()) {
                continue;
            }
            let entry = owner_entry(&self.host, owner, &pool, a);
            if !have.contains(&entry) {
                let at = r.value["at"].as_u64().unwrap_or_default();
                match self.cluster.create(&entry, json!({ "at": at })).await {
                    Ok(_) | Err(ClusterError::Conflict { .. }) => {}
                    Err(e) => return Err(store(e)),
                }
            }
        }
        self.indexed.store(true, Ordering::Release);
        Ok(())
    }

    /// Release every address `owner` holds (its container is gone); what was released.
    /// An identity's addresses are given back as they were before this host took them (to
    /// their earlier host, for a create that failed after a move), else to the pool; only
    /// those on this host.
    pub async fn release_owner(&self, owner: &str) -> Result<Vec<Held>, Error> {
        let mut released = Vec::new();
        for (k, r, held) in self.owned(owner).await? {
            if is_identity(owner) {
                if r.value["host"].as_str() != Some(self.host.as_str()) {
                    continue;
                }
                if self.restore(&k, &r).await? {
                    released.push(held);
                    continue;
                }
            }
            self.free(&k, r).await?;
            released.push(held);
        }
        Ok(released)
    }

    /// Release one address of `owner`; whether it held it.
    pub async fn release_one(&self, owner: &str, pool: &Cidr, a: Ipv4Addr) -> Result<bool, Error> {
        let k = key(pool, a);
        match self.cluster.get(&k).await.map_err(store)? {
            Some(r) if r.value["owner"].as_str() == Some(owner) => {
                self.free(&k, r).await?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// Who holds `a` in `pool` now; `None` if nobody (never taken, or released).
    pub async fn taken(&self, pool: &Cidr, a: Ipv4Addr) -> Result<Option<Taken>, Error> {
        let r = self.cluster.get(&key(pool, a)).await.map_err(store)?;
        Ok(r.and_then(|r| match r.value["holder"].as_str() {
            Some("owner") => Some(Taken::Owner(
                r.value["owner"].as_str().unwrap_or_default().to_string(),
            )),
            Some("gateway") => Some(Taken::Gateway),
            Some(_) => Some(Taken::Endpoint),
            None => None,
        }))
    }

    /// The claim on `a` if `owner` holds it: what the endpoint that is to have it carries.
    pub async fn owned_claim(
        &self,
        pool: &Cidr,
        a: Ipv4Addr,
        owner: &str,
    ) -> Result<Option<String>, Error> {
        let r = self.cluster.get(&key(pool, a)).await.map_err(store)?;
        Ok(r.filter(|r| r.value["owner"].as_str() == Some(owner))
            .and_then(|r| r.value["claim"].as_str().map(str::to_string)))
    }

    /// Whether an endpoint that dockerd is creating (at a start, or a connect) may have `a`,
    /// with the `claim` it carries. An owner's address goes only to the endpoint carrying the
    /// owner's claim: dockerd resolves a container's network again at every start, so a
    /// container created on another network (one *named* like an overlay network's ID prefix,
    /// removed before the start) may reach the overlay asking for an owner's address, and the
    /// IPAM, which is not told who asks, has granted it. Other addresses, and an owner's
    /// recorded before claims were kept, are anyone's dockerd gave them to.
    pub async fn endpoint_may_take(
        &self,
        pool: &Cidr,
        a: Ipv4Addr,
        claim: Option<&str>,
        endpoint: Option<&str>,
    ) -> Result<(), Error> {
        let k = key(pool, a);
        let Some(r) = self.cluster.get(&k).await.map_err(store)? else {
            return Ok(());
        };
        if r.value["holder"].as_str() != Some("owner") {
            return Ok(());
        }
        let owner = r.value["owner"].as_str().unwrap_or_default();
        match r.value["claim"].as_str() {
            None => {
                warn!(helper = "overlay", owner, address = %a,
                    "an owner's address recorded without a claim: not checked at this start \
                     (recreate the container to have it checked)");
                Ok(())
            }
            Some(c) if claim == Some(c) => {
                if is_identity(owner) {
                    if let Some(ep) = endpoint {
                        self.endpoint_started(&k, ep).await?;
                    }
                }
                Ok(())
            }
            // A claim, but an earlier one: the identity's container left behind on a move.
            Some(_) if is_identity(owner) && claim.is_some() => Err(helper(format!(
                "{a} is the overlay address of {owner}, which has moved to host {} since this \
                 container was created (its claim on the address is the earlier one): refused. \
                 Remove this container; the identity's container on host {0} has the address",
                r.value["host"].as_str().unwrap_or_default()
            ))),
            Some(_) => Err(helper(format!(
                "{a} is the overlay address of {}, and this endpoint was not given it by \
                 luastrip (was the container created on another network of the same name or ID \
                 prefix?): refused",
                if is_identity(owner) {
                    owner.to_string()
                } else {
                    format!("container {}", short(owner))
                }
            ))),
        }
    }

    /// Hand everything `from` holds to `to` (a create's owner token becomes the new container's
    /// ID); how many addresses moved.
    pub async fn rekey(&self, from: &str, to: &str) -> Result<usize, Error> {
        let mut moved = 0;
        for (k, r, held) in self.owned(from).await? {
            let Ok(pool) = Cidr::parse(&held.pool) else {
                continue;
            };
            let (old, new) = (
                owner_entry(&self.host, from, &pool, held.address),
                owner_entry(&self.host, to, &pool, held.address),
            );
            match self.cluster.create(&new, json!({ "at": now_s() })).await {
                Ok(_) | Err(ClusterError::Conflict { .. }) => {}
                Err(e) => return Err(store(e)),
            }
            let mut v = r.value.clone();
            v["owner"] = json!(to);
            match self.cluster.swap(&k, v, r.revision).await {
                Ok(_) => moved += 1,
                // Released or taken meanwhile: not `from`'s any more.
                Err(ClusterError::Conflict { .. }) => {
                    self.drop_entry(&new).await;
                    continue;
                }
                Err(e) => return Err(store(e)),
            }
            self.drop_entry(&old).await;
        }
        Ok(moved)
    }

    /// Every owner of this host that has held an address for at least `min_age` (for
    /// reconciling: a younger one may belong to a create still on its way to the daemon).
    pub async fn owners(&self, min_age: Duration) -> Result<HashMap<String, Vec<Held>>, Error> {
        self.index_earlier_owners().await?;
        let mut by: HashMap<String, Vec<Held>> = HashMap::new();
        let now = now_s();
        let prefix = format!("{OWNERS}{}/", self.host);
        for (k, r) in self.cluster.list(&prefix).await.map_err(store)? {
            let at = r.value["at"].as_u64().unwrap_or_default();
            if at + min_age.as_secs() > now {
                continue;
            }
            let Some((owner, tail)) = k[prefix.len()..].split_once('/') else {
                continue;
            };
            let (Some((pool, address)), Ok(owner)) =
                (pool_and_address(tail), percent_decoded(owner))
            else {
                continue;
            };
            // Entries, not records: whoever acts on one checks the record
            // ([`Ipam::release_owner`] does).
            by.entry(owner).or_default().push(Held {
                pool: pool.to_string(),
                address,
                claim: None,
            });
        }
        Ok(by)
    }
}

/// An owner from its key segment ([`owner_prefix`]).
fn percent_decoded(segment: &str) -> Result<String, std::string::FromUtf8Error> {
    let decoded: Vec<u8> = form_urlencoded::parse(format!("o={segment}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned().into_bytes())
        .unwrap_or_default();
    String::from_utf8(decoded)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::local::LocalCluster;

    fn ipam() -> Ipam {
        Ipam::new(
            Arc::new(LocalCluster::memory()),
            "h1".into(),
            Duration::ZERO,
        )
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
            .map(|_| {
                let ipam = ipam.clone();
                tokio::spawn(async move { ipam.allocate(&pool, None, Holder::Endpoint).await })
            })
            .collect();
        let mut got = std::collections::BTreeSet::new();
        for t in tasks {
            assert!(got.insert(t.await.unwrap().unwrap()));
        }
        assert_eq!(got.len(), 50);
        // Explicit: taken, outside, then free again after release.
        let first: Ipv4Addr = "10.9.0.1".parse().unwrap();
        let e = ipam
            .allocate(&pool, Some(first), Holder::Owner("x"))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("already taken"), "{e}");
        let e = ipam
            .allocate(&pool, Some("10.8.0.1".parse().unwrap()), Holder::Endpoint)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("not a host address"), "{e}");
        ipam.release(&pool, first).await.unwrap();
        ipam.release(&pool, first).await.unwrap();
        assert_eq!(
            ipam.allocate(&pool, None, Holder::Endpoint).await.unwrap(),
            first
        );
    }

    #[test]
    fn a_pool_is_picked_in_blocks_of_a_24() {
        let blocks = |c: &str| {
            Cidr::parse(c)
                .unwrap()
                .blocks()
                .map(block_name)
                .collect::<Vec<_>>()
        };
        assert_eq!(blocks("10.9.1.128/25"), ["10.9.1"]);
        assert_eq!(blocks("10.9.0.0/23"), ["10.9.0", "10.9.1"]);
        let b = blocks("10.32.0.0/12");
        assert_eq!(
            (b.len(), b[0].as_str(), b[4095].as_str()),
            (4096, "10.32.0", "10.47.255")
        );
    }

    /// Two hosts pick in blocks of their own; once no block is left unclaimed, a host takes
    /// what is free in the others' blocks, so the whole range fills, each address once.
    #[tokio::test]
    async fn hosts_pick_in_their_own_blocks_and_fill_the_range() {
        let cluster: Arc<dyn Cluster> = Arc::new(crate::cluster::local::LocalCluster::memory());
        let host = |h: &str| Ipam::new(cluster.clone(), h.into(), Duration::from_secs(0));
        let (a, b) = (host("h1"), host("h2"));
        let pool = Cidr::parse("10.9.0.0/23").unwrap();
        let mut seen = std::collections::HashSet::new();
        for _ in 0..10 {
            let x = a.allocate(&pool, None, Holder::Endpoint).await.unwrap();
            assert_eq!(x.octets()[2], 0, "{x}");
            assert!(seen.insert(x));
            let y = b.allocate(&pool, None, Holder::Endpoint).await.unwrap();
            assert_eq!(y.octets()[2], 1, "{y}");
            assert!(seen.insert(y));
        }
        while seen.len() < 510 {
            let x = a.allocate(&pool, None, Holder::Endpoint).await.unwrap();
            assert!(seen.insert(x), "{x} twice");
        }
        let e = b
            .allocate(&pool, None, Holder::Endpoint)
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("10.9.0.0/23 is exhausted"), "{e}");
        // A released address in h2's block is h1's to take again.
        b.release(&pool, Ipv4Addr::new(10, 9, 1, 7)).await.unwrap();
        assert_eq!(
            a.allocate(&pool, None, Holder::Endpoint).await.unwrap(),
            Ipv4Addr::new(10, 9, 1, 7)
        );
    }

    /// An owner's addresses are found through its index entries, each checked against the
    /// address's record; records made before the index are indexed at the first read.
    #[tokio::test]
    async fn an_owners_addresses_are_found_through_the_index() {
        let cluster: Arc<dyn Cluster> = Arc::new(crate::cluster::local::LocalCluster::memory());
        let pool = Cidr::parse("10.9.0.0/24").unwrap();
        // Recorded by a gateway before the index: no entry.
        let early = Ipv4Addr::new(10, 9, 0, 200);
        cluster
            .create(
                &key(&pool, early),
                json!({ "host": "h1", "holder": "owner", "owner": "old/one", "at": 1 }),
            )
            .await
            .unwrap();
        let ipam = Ipam::new(cluster.clone(), "h1".into(), Duration::from_secs(0));
        let a = ipam
            .allocate(&pool, None, Holder::Owner("web"))
            .await
            .unwrap();
        let owners = ipam.owners(Duration::ZERO).await.unwrap();
        assert_eq!(owners["web"][0].address, a);
        assert_eq!(owners["old/one"][0].address, early, "{owners:?}");
        // An entry whose record says otherwise (a crash between the two writes) is dropped.
        let stray = owner_entry("h1", "web", &pool, Ipv4Addr::new(10, 9, 0, 99));
        cluster.create(&stray, json!({ "at": 1 })).await.unwrap();
        let held = ipam.held_by("web").await.unwrap();
        assert_eq!(held.iter().map(|h| h.address).collect::<Vec<_>>(), [a]);
        assert_eq!(cluster.get(&stray).await.unwrap(), None);
        // Rekeyed, then released: the entries follow, and none is left.
        assert_eq!(ipam.rekey("web", "c1").await.unwrap(), 1);
        assert!(ipam.held_by("web").await.unwrap().is_empty());
        assert_eq!(ipam.release_owner("c1").await.unwrap()[0].address, a);
        assert_eq!(
            ipam.release_owner("old/one").await.unwrap()[0].address,
            early
        );
        assert!(cluster.list(OWNERS).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn an_exhausted_range_says_so() {
        let ipam = ipam();
        let pool = Cidr::parse("10.9.0.0/30").unwrap();
        ipam.allocate(&pool, None, Holder::Endpoint).await.unwrap();
        ipam.allocate(&pool, None, Holder::Endpoint).await.unwrap();
        let e = ipam
            .allocate(&pool, None, Holder::Endpoint)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("exhausted"), "{e}");
    }

    #[tokio::test]
    async fn an_owner_keeps_its_address_until_released_and_grace_holds_it_back() {
        let cluster = Arc::new(LocalCluster::memory());
        let ipam = Ipam::new(cluster, "h1".into(), Duration::from_secs(3600));
        let pool = Cidr::parse("10.9.0.0/29").unwrap();
        let a = ipam
            .allocate(&pool, None, Holder::Owner("web"))
            .await
            .unwrap();
        // dockerd asks for it by value at every start, and gives it back at every stop.
        for _ in 0..3 {
            ipam.allocate(&pool, Some(a), Holder::Endpoint)
                .await
                .unwrap();
            ipam.release(&pool, a).await.unwrap();
        }
        ipam.allocate(&pool, Some(a), Holder::Owner("web"))
            .await
            .unwrap();
        let e = ipam
            .allocate(&pool, Some(a), Holder::Owner("db"))
            .await
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("already taken in 10.9.0.0/29 (by web)"),
            "{e}"
        );
        assert_eq!(ipam.held_by("web").await.unwrap().len(), 1);
        assert_eq!(ipam.release_owner("web").await.unwrap()[0].address, a);
        assert!(ipam.held_by("web").await.unwrap().is_empty());
        // In its grace it is not handed out…
        let b = ipam.allocate(&pool, None, Holder::Endpoint).await.unwrap();
        assert_ne!(a, b);
        // …unless asked for by value.
        ipam.allocate(&pool, Some(a), Holder::Owner("db"))
            .await
            .unwrap();
        // An endpoint's address, given back, is held back too; the message says why.
        ipam.release(&pool, b).await.unwrap();
        for _ in 0..4 {
            ipam.allocate(&pool, None, Holder::Endpoint).await.unwrap();
        }
        let e = ipam
            .allocate(&pool, None, Holder::Endpoint)
            .await
            .unwrap_err();
        assert!(
            e.to_string().contains("1 released less than 3600 s ago"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn an_owners_address_goes_only_to_the_endpoint_with_its_claim() {
        let ipam = ipam();
        let pool = Cidr::parse("10.9.0.0/24").unwrap();
        let a = ipam
            .allocate(&pool, None, Holder::Owner("ow-1"))
            .await
            .unwrap();
        let claim = ipam.owned_claim(&pool, a, "ow-1").await.unwrap().unwrap();
        assert_eq!(claim.len(), 32, "{claim}");
        assert_eq!(ipam.owned_claim(&pool, a, "ow-2").await.unwrap(), None);
        // Handed to the container's ID, the claim stays; asking again keeps it.
        ipam.rekey("ow-1", "c1").await.unwrap();
        ipam.allocate(&pool, Some(a), Holder::Owner("c1"))
            .await
            .unwrap();
        assert_eq!(
            ipam.held_by("c1").await.unwrap()[0].claim,
            Some(claim.clone())
        );
        ipam.endpoint_may_take(&pool, a, Some(&claim), None)
            .await
            .unwrap();
        for wrong in [None, Some(""), Some("0123")] {
            let e = ipam
                .endpoint_may_take(&pool, a, wrong, None)
                .await
                .unwrap_err();
            assert!(
                e.to_string()
                    .contains(&format!("{a} is the overlay address of container c1")),
                "{e}"
            );
        }
        // Endpoints' and gateways' addresses, and free ones, carry no claim.
        let b = ipam.allocate(&pool, None, Holder::Endpoint).await.unwrap();
        ipam.endpoint_may_take(&pool, b, None, None).await.unwrap();
        ipam.endpoint_may_take(&pool, "10.9.0.200".parse().unwrap(), None, None)
            .await
            .unwrap();
        // Released and asked for again by value: a new claim, the old one is refused.
        ipam.release_owner("c1").await.unwrap();
        ipam.allocate(&pool, Some(a), Holder::Owner("c2"))
            .await
            .unwrap();
        let again = ipam.owned_claim(&pool, a, "c2").await.unwrap().unwrap();
        assert_ne!(again, claim);
        assert!(ipam
            .endpoint_may_take(&pool, a, Some(&claim), None)
            .await
            .is_err());
    }
}
