//! The distributed store: etcd v3, so that what many hosts must agree on is decided by etcd's
//! consensus, not by anything of luastrip's own. Every write is one transaction with a compare:
//!
//! * create-if-absent compares `create_revision == 0`;
//! * swap and delete compare `mod_revision` with the revision the caller read (and that the key
//!   exists), so a stale read loses;
//! * a lost compare reads the key in the same transaction, and the conflict carries the record
//!   as it is now.
//!
//! A record's revision is etcd's `mod_revision`, the store-wide counter the [`Cluster`] trait was
//! written for. Keys live under `--cluster-prefix` (`/luastrip/` by default). Values are JSON;
//! one that is not is an error naming its key, never a panic or a default (whoever can write etcd
//! can write anything there).
//!
//! One client per member, each connected lazily: a gateway started while etcd is down starts,
//! and its decisions that need etcd fail with an error naming etcd until etcd answers. A request
//! goes to the member that answered last; one that fails for want of the member (down, no
//! leader, no answer within [`ATTEMPT_TIMEOUT`]) goes to the next, until [`OP_TIMEOUT`]. Every
//! request asks for a leader, so a cluster without quorum answers "no leader" instead of hanging
//! a Docker call. A write sent again after a member failed may have been applied by the first:
//! each value is stored as `{"value": …, "write": NAME}` with a name unique to the write, and a
//! lost compare that finds this very write (or, for a delete, nothing) is that write, not a
//! conflict; another writer's identical value is still a conflict.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, GetOptions, KeyValue, PutOptions, SortOrder,
    SortTarget, Txn, TxnOp, TxnOpResponse, WatchOptions,
};
use serde_json::Value;

use super::{Cluster, ClusterError, ClusterFuture, Lease, Record};

/// How many records one answer of a list carries at most: about 0.6 MB of records as luastrip
/// writes them, far below the gRPC client's 4 MiB answer limit.
const PAGE: i64 = 2000;

/// The end of the key range of everything starting with `prefix` (etcd's `--prefix`): the prefix
/// with its last byte below 0xff raised by one.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // Everything: etcd reads "\0" as "to the end of the key space".
    vec![0]
}

/// The longest one operation on the store may take, every member tried included.
pub const OP_TIMEOUT: Duration = Duration::from_secs(3);

/// After an operation found no member to answer, others fail at once for this long (with the
/// same reason), so that a Docker call that needs several decisions fails within
/// [`OP_TIMEOUT`], not once per decision.
pub const DOWN_FOR: Duration = Duration::from_secs(2);

/// The longest one member may take to answer before the next is asked.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_millis(1500);

/// Where etcd is and how to reach it (`--cluster etcd://…`, `--cluster-prefix`, and TLS).
#[derive(Debug, Clone)]
pub struct Config {
    /// `HOST:PORT` of each member.
    pub endpoints: Vec<String>,
    /// Every key luastrip writes starts with this (`/luastrip/`).
    pub prefix: String,
    /// `--cluster-ca`, `--cluster-cert`, `--cluster-key`: TLS to etcd, with a client
    /// certificate when the cert and key are given.
    pub tls: crate::tls::TlsFiles,
}

impl Config {
    /// `etcd://HOST:PORT[,HOST:PORT…]`, checked.
    pub fn parse(url: &str, prefix: &str, tls: crate::tls::TlsFiles) -> Result<Config, String> {
        let rest = url
            .strip_prefix("etcd://")
            .ok_or_else(|| format!("--cluster {url:?}: etcd://HOST:PORT[,HOST:PORT…]"))?;
        let mut endpoints = Vec::new();
        for member in rest.split(',') {
            let ok = member
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
                && !member.contains('/')
                && !member.contains('@');
            if !ok {
                return Err(format!(
                    "--cluster {url:?}: {member:?} is not HOST:PORT (etcd://HOST:PORT[,HOST:PORT…])"
                ));
            }
            endpoints.push(member.to_string());
        }
        if !prefix.starts_with('/') || !prefix.ends_with('/') || prefix.contains("//") {
            return Err(format!(
                "--cluster-prefix {prefix:?}: a key prefix that starts and ends with / (/luastrip/)"
            ));
        }
        Ok(Config {
            endpoints,
            prefix: prefix.to_string(),
            tls,
        })
    }

    fn tls_on(&self) -> bool {
        self.tls.ca.is_some() || self.tls.cert.is_some()
    }
}

pub struct EtcdCluster {
    /// Each member's address and client.
    members: Vec<(String, Client)>,
    /// The member that answered last: asked first.
    current: AtomicUsize,
    /// When an operation last found no member to answer, and why.
    down: std::sync::Mutex<Option<(tokio::time::Instant, String)>>,
    prefix: String,
    /// The members, as messages name them.
    named: String,
    /// This client's name among writers, and its count of writes: each stored value carries
    /// both, so that a write sent again can tell its own earlier attempt from another's write
    /// of the same value.
    instance: String,
    writes: std::sync::atomic::AtomicU64,
}

/// What a guarded write sent again may find if an earlier attempt applied it.
enum Applied<'a> {
    /// The value it wrote, by its write's name.
    Written(&'a str),
    /// Nothing (a delete).
    Gone,
}

/// Whether a failed request says nothing about the store, only about the member that was asked
/// (it is down or cut off, has no leader, or is shutting down): the next member is asked.
fn member_failed(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::GRpcStatus(status) => matches!(
            status.code(),
            tonic::Code::Unavailable
                | tonic::Code::DeadlineExceeded
                | tonic::Code::Cancelled
                | tonic::Code::Unknown
                | tonic::Code::Aborted
        ),
        etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => true,
        _ => false,
    }
}

/// Why etcd could not answer, naming it.
fn unreachable(named: &str, e: impl std::fmt::Display) -> ClusterError {
    ClusterError::Store(format!("etcd ({named}): {e}"))
}

impl EtcdCluster {
    /// A client for each member of `config` (no request is made yet: etcd may be down at
    /// start-up).
    pub async fn connect(config: &Config) -> Result<EtcdCluster, ClusterError> {
        let named = config.endpoints.join(",");
        let mut options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(1))
            .with_timeout(ATTEMPT_TIMEOUT)
            .with_keep_alive(Duration::from_secs(5), Duration::from_secs(3))
            .with_require_leader(true);
        let scheme = if config.tls_on() {
            options = options.with_tls(tls_options(&config.tls).map_err(ClusterError::Store)?);
            "https"
        } else {
            "http"
        };
        let mut members = Vec::new();
        for e in &config.endpoints {
            let client = Client::connect([format!("{scheme}://{e}")], Some(options.clone()))
                .await
                .map_err(|err| unreachable(e, err))?;
            members.push((e.clone(), client));
        }
        Ok(EtcdCluster {
            members,
            current: AtomicUsize::new(0),
            down: std::sync::Mutex::new(None),
            prefix: config.prefix.clone(),
            named,
            instance: instance_name(),
            writes: std::sync::atomic::AtomicU64::new(0),
        })
    }

    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    /// A value as stored: `{"value": …, "write": NAME}`, NAME unique to this write.
    fn stored(&self, value: &Value) -> (String, String) {
        let n = self.writes.fetch_add(1, Ordering::Relaxed);
        let write = format!("{}-{n}", self.instance);
        let text = serde_json::json!({ "value": value, "write": write }).to_string();
        (text, write)
    }

    /// A record read from etcd, and the name of the write that stored it. Its value must be
    /// JSON; one stored otherwise than by [`EtcdCluster::stored`] is taken whole.
    fn record(&self, kv: &KeyValue) -> Result<(Record, Option<String>), ClusterError> {
        let stored: Value = serde_json::from_slice(kv.value()).map_err(|e| {
            ClusterError::Store(format!(
                "etcd ({}): the record {} is not JSON ({e}): was it written by something else?",
                self.named,
                String::from_utf8_lossy(kv.key())
            ))
        })?;
        let revision = u64::try_from(kv.mod_revision()).unwrap_or_default();
        let (value, write) = match stored {
            Value::Object(mut o)
                if o.len() == 2 && o.contains_key("value") && o["write"].is_string() =>
            {
                let write = o
                    .remove("write")
                    .and_then(|w| w.as_str().map(str::to_string));
                (o.remove("value").unwrap_or_default(), write)
            }
            other => (other, None),
        };
        Ok((Record { value, revision }, write))
    }

    /// Run `op` on the member that answered last, and on the next while members fail, until
    /// [`OP_TIMEOUT`]. Also whether it was sent more than once (a write may have been applied
    /// by an earlier attempt).
    async fn call<T, F, Fut>(&self, op: F) -> Result<(T, bool), ClusterError>
    where
        F: Fn(Client) -> Fut,
        Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
    {
        let now = tokio::time::Instant::now();
        if let Some((at, why)) = &*self.down.lock().unwrap_or_else(|e| e.into_inner()) {
            let ago = now.duration_since(*at);
            if ago < DOWN_FOR {
                return Err(unreachable(
                    &self.named,
                    format!(
                        "no member answered {} ms ago (asked again {} s after); last: {why}",
                        ago.as_millis(),
                        DOWN_FOR.as_secs()
                    ),
                ));
            }
        }
        let deadline = now + OP_TIMEOUT;
        let first = self.current.load(Ordering::Relaxed);
        let mut why = String::new();
        for attempt in 0.. {
            let i = (first + attempt) % self.members.len();
            let (name, kv) = &self.members[i];
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                break;
            }
            match tokio::time::timeout(left.min(ATTEMPT_TIMEOUT), op(kv.clone())).await {
                Ok(Ok(v)) => {
                    self.current.store(i, Ordering::Relaxed);
                    *self.down.lock().unwrap_or_else(|e| e.into_inner()) = None;
                    return Ok((v, attempt > 0));
                }
                Ok(Err(e)) if member_failed(&e) => why = format!("{name}: {e}"),
                Ok(Err(e)) => return Err(unreachable(&self.named, e)),
                Err(_) => {
                    why = format!(
                        "{name}: no answer within {} ms",
                        ATTEMPT_TIMEOUT.as_millis()
                    )
                }
            }
            // Once round every member, a short pause before the next round.
            if (attempt + 1) % self.members.len() == 0 {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        let e = unreachable(
            &self.named,
            format!(
                "no member answered within {} s (are a majority of them up and reachable?); \
                 last: {why}",
                OP_TIMEOUT.as_secs()
            ),
        );
        *self.down.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((tokio::time::Instant::now(), why));
        Err(e)
    }

    /// Run `txn`: whether its compare held, the store's revision after it, the records its
    /// `get` found, and whether it was sent more than once.
    #[allow(clippy::type_complexity)]
    async fn txn(
        &self,
        txn: Txn,
    ) -> Result<(bool, u64, Vec<(Record, Option<String>)>, bool), ClusterError> {
        let (resp, again) = self
            .call(|c| {
                let txn = txn.clone();
                async move { c.kv_client().txn(txn).await }
            })
            .await?;
        let revision = resp
            .header()
            .map(|h| u64::try_from(h.revision()).unwrap_or_default())
            .unwrap_or_default();
        let mut found = Vec::new();
        for op in resp.op_responses() {
            if let TxnOpResponse::Get(get) = op {
                for kv in get.kvs() {
                    found.push(self.record(kv)?);
                }
            }
        }
        Ok((resp.succeeded(), revision, found, again))
    }

    fn conflict(key: &str, mut found: Vec<Record>) -> ClusterError {
        ClusterError::Conflict {
            key: key.to_string(),
            current: found.pop(),
        }
    }

    /// A write guarded by `when`; a lost compare is a conflict with the record as it is now,
    /// unless the write was sent again and finds what it did (`applied`): then an earlier
    /// attempt applied it.
    async fn guarded(
        &self,
        key: &str,
        when: Vec<Compare>,
        then: TxnOp,
        applied: Applied<'_>,
    ) -> Result<u64, ClusterError> {
        let k = self.key(key);
        let txn = Txn::new()
            .when(when)
            .and_then(vec![then])
            .or_else(vec![TxnOp::get(k, None)]);
        let (held, revision, found, again) = self.txn(txn).await?;
        if held {
            return Ok(revision);
        }
        let ours = match (&applied, found.last()) {
            (Applied::Written(mine), Some((_, Some(w)))) => w == mine,
            (Applied::Gone, None) => true,
            _ => false,
        };
        if again && ours {
            return Ok(found.last().map_or(revision, |(r, _)| r.revision));
        }
        Err(Self::conflict(
            key,
            found.into_iter().map(|(r, _)| r).collect(),
        ))
    }

    /// Create `key` if absent (`create_revision == 0`), with `options` (a lease).
    async fn create_with(
        &self,
        key: &str,
        value: Value,
        options: Option<PutOptions>,
    ) -> Result<u64, ClusterError> {
        let k = self.key(key);
        let when = vec![Compare::create_revision(k.clone(), CompareOp::Equal, 0)];
        let (text, write) = self.stored(&value);
        let put = TxnOp::put(k, text, options);
        self.guarded(key, when, put, Applied::Written(&write)).await
    }

    /// The compares of a swap or delete: the key exists, at `revision`.
    fn at_revision(&self, key: &str, revision: u64) -> Vec<Compare> {
        let k = self.key(key);
        let revision = i64::try_from(revision).unwrap_or(i64::MAX);
        vec![
            Compare::version(k.clone(), CompareOp::Greater, 0),
            Compare::mod_revision(k, CompareOp::Equal, revision),
        ]
    }
}

/// A name for this client among etcd's writers: random, so that two clients never share one.
fn instance_name() -> String {
    let mut b = [0u8; 8];
    let random = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b))
        .is_ok();
    if random {
        b.iter().map(|x| format!("{x:02x}")).collect()
    } else {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        format!("{}-{nanos}", std::process::id())
    }
}

/// Whether `lease` is still alive (etcd answers "not found" for one that expired).
async fn lease_alive(c: &mut Client, lease: Lease) -> Result<bool, etcd_client::Error> {
    match c.lease_time_to_live(lease.0, None).await {
        Ok(r) => Ok(r.ttl() > 0),
        Err(etcd_client::Error::GRpcStatus(s)) if s.code() == tonic::Code::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// The TLS of `--cluster-ca`, `--cluster-cert`, `--cluster-key` for the etcd client.
fn tls_options(files: &crate::tls::TlsFiles) -> Result<etcd_client::TlsOptions, String> {
    let read = |flag: &str, p: &std::path::Path| {
        std::fs::read(p).map_err(|e| format!("{flag} {}: {e}", p.display()))
    };
    let mut tls = etcd_client::TlsOptions::new();
    if let Some(ca) = &files.ca {
        tls = tls.ca_certificate(etcd_client::Certificate::from_pem(read(
            "--cluster-ca",
            ca,
        )?));
    }
    match (&files.cert, &files.key) {
        (Some(cert), Some(key)) => {
            tls = tls.identity(etcd_client::Identity::from_pem(
                read("--cluster-cert", cert)?,
                read("--cluster-key", key)?,
            ));
        }
        (None, None) => {}
        _ => return Err("--cluster-cert and --cluster-key go together".into()),
    }
    Ok(tls)
}

impl Cluster for EtcdCluster {
    fn distributed(&self) -> bool {
        true
    }

    fn changed<'a>(&'a self, prefix: &'a str, after: u64, wait: Duration) -> ClusterFuture<'a, ()> {
        Box::pin(async move {
            let i = self.current.load(Ordering::Relaxed);
            let mut client = self.members[i % self.members.len()].1.clone();
            let start = i64::try_from(after + 1).unwrap_or(i64::MAX);
            let options = WatchOptions::new().with_prefix().with_start_revision(start);
            let watched = async {
                let mut stream = client.watch(self.key(prefix), Some(options)).await?;
                // The first answer says the watch is set up (or that `after` was compacted
                // away: then the caller lists again); the next one is a change.
                loop {
                    match stream.message().await? {
                        None => return Ok::<_, etcd_client::Error>(()),
                        Some(r) if r.compact_revision() > 0 || r.canceled() => return Ok(()),
                        Some(r) if !r.events().is_empty() => return Ok(()),
                        Some(_) => {}
                    }
                }
            };
            match tokio::time::timeout(wait, watched).await {
                Err(_) | Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => {
                    // The next watch (and call) starts at the next member: a watch fails over
                    // as the follower asks again, which it does after listing through `call`.
                    let _ = self.current.compare_exchange(
                        i,
                        (i + 1) % self.members.len(),
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                    );
                    Err(unreachable(&self.named, e))
                }
            }
        })
    }

    fn reachable(&self) -> bool {
        self.down
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_none()
    }

    fn get<'a>(&'a self, key: &'a str) -> ClusterFuture<'a, Option<Record>> {
        Box::pin(async move {
            let txn = Txn::new().and_then(vec![TxnOp::get(self.key(key), None)]);
            let (_, _, mut found, _) = self.txn(txn).await?;
            Ok(found.pop().map(|(r, _)| r))
        })
    }

    fn list<'a>(&'a self, prefix: &'a str) -> ClusterFuture<'a, Vec<(String, Record)>> {
        Box::pin(async move {
            // In pages (an answer over the client's 4 MiB limit would fail the whole list), all
            // read at the revision of the first, so that the list is one moment's.
            let key = self.key(prefix);
            let end = prefix_end(key.as_bytes());
            let mut from = key.into_bytes();
            let mut revision = 0;
            let mut out = Vec::new();
            let mut page = PAGE;
            loop {
                let mut options = GetOptions::new()
                    .with_range(end.clone())
                    .with_limit(page)
                    .with_sort(SortTarget::Key, SortOrder::Ascend);
                if revision > 0 {
                    options = options.with_revision(revision);
                }
                let (answer, _) = self
                    .call(|c| {
                        let (from, options) = (from.clone(), options.clone());
                        async move {
                            match c.kv_client().get(from, Some(options)).await {
                                // Over the client's answer limit (records far larger than
                                // luastrip writes): the same page again, half as long.
                                Err(etcd_client::Error::GRpcStatus(s))
                                    if s.code() == tonic::Code::OutOfRange =>
                                {
                                    Ok(None)
                                }
                                other => other.map(Some),
                            }
                        }
                    })
                    .await?;
                let Some(resp) = answer else {
                    if page == 1 {
                        return Err(ClusterError::Store(format!(
                            "etcd ({}): a record under {prefix} is larger than the client takes \
                             in one answer",
                            self.named
                        )));
                    }
                    page = (page / 2).max(1);
                    continue;
                };
                if revision == 0 {
                    revision = resp.header().map_or(0, |h| h.revision());
                }
                for kv in resp.kvs() {
                    let full = String::from_utf8_lossy(kv.key());
                    let Some(key) = full.strip_prefix(&self.prefix) else {
                        continue;
                    };
                    out.push((key.to_string(), self.record(kv)?.0));
                }
                match (resp.more(), resp.kvs().last()) {
                    (true, Some(last)) => {
                        // The next page starts just after the last key.
                        from = last.key().to_vec();
                        from.push(0);
                    }
                    _ => return Ok(out),
                }
            }
        })
    }

    fn create<'a>(&'a self, key: &'a str, value: Value) -> ClusterFuture<'a, u64> {
        Box::pin(self.create_with(key, value, None))
    }

    fn swap<'a>(&'a self, key: &'a str, value: Value, revision: u64) -> ClusterFuture<'a, u64> {
        Box::pin(async move {
            let (text, write) = self.stored(&value);
            let put = TxnOp::put(self.key(key), text, None);
            self.guarded(
                key,
                self.at_revision(key, revision),
                put,
                Applied::Written(&write),
            )
            .await
        })
    }

    fn grant(&self, ttl: Duration) -> ClusterFuture<'_, Lease> {
        Box::pin(async move {
            let secs = i64::try_from(ttl.as_secs().max(1)).unwrap_or(i64::MAX);
            let (resp, _) = self
                .call(|mut c| async move { c.lease_grant(secs, None).await })
                .await?;
            Ok(Lease(resp.id()))
        })
    }

    fn keep_alive(&self, lease: Lease) -> ClusterFuture<'_, bool> {
        Box::pin(async move {
            let (alive, _) = self
                .call(|mut c| async move {
                    if !lease_alive(&mut c, lease).await? {
                        return Ok(false);
                    }
                    let kept = async {
                        let (mut keeper, mut stream) = c.lease_keep_alive(lease.0).await?;
                        keeper.keep_alive().await?;
                        Ok::<_, etcd_client::Error>(stream.message().await?.map_or(0, |r| r.ttl()))
                    };
                    match kept.await {
                        Ok(ttl) => Ok(ttl > 0),
                        // The client's error for a lease that expired meanwhile (and for a
                        // broken stream): the lease says which.
                        Err(etcd_client::Error::LeaseKeepAliveError(why)) => {
                            match lease_alive(&mut c, lease).await? {
                                false => Ok(false),
                                true => Err(etcd_client::Error::LeaseKeepAliveError(why)),
                            }
                        }
                        Err(e) => Err(e),
                    }
                })
                .await?;
            Ok(alive)
        })
    }

    fn create_leased<'a>(
        &'a self,
        key: &'a str,
        value: Value,
        lease: Lease,
    ) -> ClusterFuture<'a, u64> {
        Box::pin(self.create_with(key, value, Some(PutOptions::new().with_lease(lease.0))))
    }

    fn revoke(&self, lease: Lease) -> ClusterFuture<'_, ()> {
        Box::pin(async move {
            self.call(|mut c| async move {
                match c.lease_revoke(lease.0).await {
                    // Expired already: what revoking asks for.
                    Err(etcd_client::Error::GRpcStatus(s)) if s.code() == tonic::Code::NotFound => {
                        Ok(())
                    }
                    other => other.map(|_| ()),
                }
            })
            .await
            .map(|_| ())
        })
    }

    fn delete<'a>(&'a self, key: &'a str, revision: u64) -> ClusterFuture<'a, ()> {
        Box::pin(async move {
            let delete = TxnOp::delete(self.key(key), None);
            self.guarded(key, self.at_revision(key, revision), delete, Applied::Gone)
                .await
                .map(|_| ())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::Config;

    #[test]
    fn cluster_urls_and_prefixes_are_checked() {
        let tls = crate::tls::TlsFiles::default();
        let c = Config::parse("etcd://127.0.0.1:2379,h2:2379", "/luastrip/", tls.clone()).unwrap();
        assert_eq!(c.endpoints, ["127.0.0.1:2379", "h2:2379"]);
        for (bad, why) in [
            ("http://h:2379", "etcd://HOST:PORT"),
            ("etcd://h", "is not HOST:PORT"),
            ("etcd://h:x", "is not HOST:PORT"),
            ("etcd://h:2379,", "is not HOST:PORT"),
            ("etcd://u@h:2379", "is not HOST:PORT"),
            ("etcd://h:2379/x", "is not HOST:PORT"),
        ] {
            let e = Config::parse(bad, "/luastrip/", tls.clone()).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
        for bad in ["luastrip/", "/luastrip", "//", "/a//b/"] {
            let e = Config::parse("etcd://h:1", bad, tls.clone()).unwrap_err();
            assert!(e.contains("--cluster-prefix"), "{bad}: {e}");
        }
    }
}
