//! The cluster store's costs, measured side by side on the local file and on a real 3-member
//! etcd (started by `bench/cluster.sh`, which passes its URL): allocations per second through
//! the overlay's allocator, ownership changes per second (a volume's owner record swapped back
//! and forth), and how the cost of one allocation grows with the records already in its pool.
//! Every contender gets the same runtime (2 worker threads) and the same 8 concurrent tasks.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use luastrip::cluster::{self, Cluster};
use luastrip::overlay::ipam::{Cidr, Holder, Ipam};
use serde_json::json;

const TASKS: usize = 8;
const SECONDS: u64 = 5;

/// Allocations per second: `TASKS` tasks allocating from one /16 for `SECONDS`.
async fn allocations(c: Arc<dyn Cluster>, prefix: &str) -> f64 {
    let ipam = Arc::new(Ipam::new(c, format!("bench-{prefix}"), Duration::ZERO));
    let pool = Cidr::parse("10.200.0.0/16").unwrap();
    let done = Arc::new(AtomicU64::new(0));
    let until = Instant::now() + Duration::from_secs(SECONDS);
    let tasks: Vec<_> = (0..TASKS)
        .map(|_| {
            let (ipam, done) = (ipam.clone(), done.clone());
            tokio::spawn(async move {
                while Instant::now() < until {
                    ipam.allocate(&pool, None, Holder::Endpoint).await.unwrap();
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    done.load(Ordering::Relaxed) as f64 / SECONDS as f64
}

/// Ownership changes per second: each task swaps the owner of its own volume record between
/// two hosts, compare-and-swap at the revision it read.
async fn ownership_changes(c: Arc<dyn Cluster>, prefix: &str) -> f64 {
    let done = Arc::new(AtomicU64::new(0));
    let until = Instant::now() + Duration::from_secs(SECONDS);
    let tasks: Vec<_> = (0..TASKS)
        .map(|i| {
            let (c, done) = (c.clone(), done.clone());
            let key = format!("{prefix}volumes/v{i}");
            tokio::spawn(async move {
                let mut rev = c.create(&key, json!({ "owner": "h1" })).await.unwrap();
                let mut n = 0u64;
                while Instant::now() < until {
                    let owner = if n % 2 == 0 { "h2" } else { "h1" };
                    rev = c.swap(&key, json!({ "owner": owner }), rev).await.unwrap();
                    n += 1;
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    done.load(Ordering::Relaxed) as f64 / SECONDS as f64
}

/// Milliseconds per allocation, one at a time, over each `step` of the first `upto`
/// allocations into a fresh /16.
async fn growth(c: Arc<dyn Cluster>, prefix: &str, upto: usize, step: usize) -> Vec<(usize, f64)> {
    let ipam = Ipam::new(c, format!("grow-{prefix}"), Duration::ZERO);
    let pool = Cidr::parse("10.201.0.0/16").unwrap();
    let mut out = Vec::new();
    let mut n = 0;
    while n < upto {
        let t = Instant::now();
        for _ in 0..step {
            ipam.allocate(&pool, None, Holder::Endpoint).await.unwrap();
        }
        n += step;
        out.push((n, t.elapsed().as_secs_f64() * 1000.0 / step as f64));
    }
    out
}

/// Fill one /16 with `n` owners' addresses (`TASKS` tasks, each owner a 64-hex ID as Docker's);
/// the seconds it took.
async fn fill(c: Arc<dyn Cluster>, n: usize) -> f64 {
    let ipam = Arc::new(Ipam::new(c, "fill".into(), Duration::ZERO));
    let pool = Cidr::parse("10.203.0.0/16").unwrap();
    let next = Arc::new(AtomicU64::new(0));
    let t = Instant::now();
    let tasks: Vec<_> = (0..TASKS)
        .map(|_| {
            let (ipam, next) = (ipam.clone(), next.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n as u64 {
                        return;
                    }
                    let owner = format!("{i:064x}");
                    ipam.allocate(&pool, None, Holder::Owner(&owner))
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    t.elapsed().as_secs_f64()
}

/// Milliseconds `f` takes, once.
async fn timed<T>(f: impl std::future::Future<Output = T>) -> (T, f64) {
    let t = Instant::now();
    let out = f.await;
    (out, t.elapsed().as_secs_f64() * 1000.0)
}

fn main() {
    let etcd_url = std::env::args()
        .skip(1)
        .find(|a| a.starts_with("etcd://"))
        .expect("usage: cargo bench --bench cluster -- etcd://HOST:PORT,… (bench/cluster.sh)");
    let upto: usize = std::env::var("GROWTH")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let dir = std::env::temp_dir().join(format!("luastrip-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = cluster::open(&cluster::Config {
            file: dir.join("cluster.json"),
            etcd: None,
        })
        .await
        .unwrap();
        let prefix = format!("/luastrip-bench-{}/", std::process::id());
        let etcd = cluster::open(&cluster::Config {
            file: dir.join("unused.json"),
            etcd: Some(
                cluster::etcd::Config::parse(&etcd_url, &prefix, Default::default()).unwrap(),
            ),
        })
        .await
        .unwrap();
        println!("| store | allocations/s | ownership changes/s |");
        println!("|---|---:|---:|");
        for (name, c) in [("file", file.clone()), ("etcd", etcd.clone())] {
            let a = allocations(c.clone(), name).await;
            let o = ownership_changes(c.clone(), name).await;
            println!("| {name} | {a:.0} | {o:.0} |");
        }
        println!();
        println!("ms per allocation into one /16, one at a time, by records already there:");
        println!();
        println!("| after | file ms | etcd ms |");
        println!("|---:|---:|---:|");
        let f = growth(file, "file", upto, 500).await;
        let e = growth(etcd.clone(), "etcd", upto, 500).await;
        for ((n, fm), (_, em)) in f.iter().zip(&e) {
            println!("| {n} | {fm:.2} | {em:.2} |");
        }
        // The size of the records, as stored (key and JSON value), for what fits in one answer.
        let ipam = Ipam::new(etcd.clone(), "sizes".into(), Duration::ZERO);
        let pool = Cidr::parse("10.202.0.0/16").unwrap();
        let owner = "0".repeat(64);
        ipam.allocate(&pool, None, Holder::Owner(&owner))
            .await
            .unwrap();
        ipam.allocate(&pool, None, Holder::Endpoint).await.unwrap();
        println!();
        for (k, r) in etcd.list("overlay/addresses/10.202.0.0_16/").await.unwrap() {
            let bytes = prefix.len() + k.len() + r.value.to_string().len();
            println!(
                "a record of {}: {bytes} bytes of key and value",
                r.value["holder"]
            );
        }
        let n: usize = std::env::var("FILL")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(60_000);
        if n > 0 {
            let secs = fill(etcd.clone(), n).await;
            println!();
            println!(
                "filled 10.203.0.0/16 with {n} owners' addresses through etcd in {secs:.1} s \
                 ({:.0} allocations/s, {TASKS} tasks)",
                n as f64 / secs
            );
            let ipam = Ipam::new(etcd.clone(), "fill".into(), Duration::ZERO);
            let pool = Cidr::parse("10.203.0.0/16").unwrap();
            let (next, ms) = timed(ipam.allocate(&pool, None, Holder::Endpoint)).await;
            println!("then one more allocation: {ms:.1} ms ({})", next.unwrap());
            let (held, ms) = timed(ipam.held_by(&format!("{:064x}", n / 2))).await;
            println!(
                "one owner's addresses (its index): {ms:.1} ms ({} found)",
                held.unwrap().len()
            );
            let (owners, ms) = timed(ipam.owners(Duration::ZERO)).await;
            println!(
                "every owner of the host (reconcile): {ms:.0} ms ({} owners)",
                owners.unwrap().len()
            );
            let (all, ms) = timed(etcd.list("overlay/addresses/10.203.0.0_16/")).await;
            println!(
                "the whole /16 listed (cluster hosts, forget): {ms:.0} ms ({} records, in pages)",
                all.unwrap().len()
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
    });
}
