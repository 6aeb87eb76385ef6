//! The `Cluster` contract, written once and run against every store: the local file (and its
//! in-memory form), and a real 3-member etcd cluster, also with a member down, without quorum,
//! and down when the store is opened. What the helpers rely on: create-if-absent,
//! swap and delete only at the revision read, a conflict that reports the record as it is now,
//! listing in key order under a prefix, and revisions that behave as etcd's `mod_revision` (one
//! counter for the whole store, bumped by every write).

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use luastrip::cluster::etcd::EtcdCluster;
use luastrip::cluster::local::LocalCluster;
use luastrip::cluster::{Cluster, ClusterError, Record};
use serde_json::json;
use support::etcd::Etcd;

/// Every clause of the contract, on `c`, under the key prefix `p` (so stores shared with other
/// runs are not disturbed).
async fn contract(c: Arc<dyn Cluster>, p: &str) {
    let k = |s: &str| format!("{p}{s}");

    // Create if absent: the second create loses, told what is there.
    let r1 = c
        .create(&k("volumes/db"), json!({"owner": "a"}))
        .await
        .unwrap();
    match c.create(&k("volumes/db"), json!({"owner": "b"})).await {
        Err(ClusterError::Conflict {
            current: Some(r), ..
        }) => assert_eq!(
            r,
            Record {
                value: json!({"owner": "a"}),
                revision: r1
            }
        ),
        other => panic!("a second create: {other:?}"),
    }
    assert_eq!(
        c.get(&k("volumes/db")).await.unwrap(),
        Some(Record {
            value: json!({"owner": "a"}),
            revision: r1
        })
    );
    assert_eq!(c.get(&k("volumes/none")).await.unwrap(), None);

    // Swap at the revision read; from a stale read it loses, told what is there now.
    let r2 = c
        .swap(&k("volumes/db"), json!({"owner": "b"}), r1)
        .await
        .unwrap();
    assert!(r2 > r1, "{r2} > {r1}");
    match c.swap(&k("volumes/db"), json!({"owner": "c"}), r1).await {
        Err(ClusterError::Conflict {
            current: Some(r), ..
        }) => assert_eq!(r.revision, r2),
        other => panic!("a stale swap: {other:?}"),
    }
    // A swap of a key that is not there loses too.
    assert!(matches!(
        c.swap(&k("volumes/none"), json!(1), r1).await,
        Err(ClusterError::Conflict { current: None, .. })
    ));

    // Revisions are the store's, not the key's: a write elsewhere moves them on.
    let other = c.create(&k("volumes/other"), json!(1)).await.unwrap();
    assert!(other > r2);
    let r3 = c
        .swap(&k("volumes/db"), json!({"owner": "d"}), r2)
        .await
        .unwrap();
    assert!(r3 > other, "{r3} > {other}: one counter for the store");

    // Listing: in key order, only under the prefix (not `volumesX`).
    c.create(&k("volumesX"), json!(1)).await.unwrap();
    c.create(&k("volumes/a"), json!("first")).await.unwrap();
    let listed: Vec<String> = c
        .list(&k("volumes/"))
        .await
        .unwrap()
        .into_iter()
        .map(|(key, _)| key)
        .collect();
    assert_eq!(
        listed,
        [k("volumes/a"), k("volumes/db"), k("volumes/other")]
    );

    // Delete at the revision read only.
    assert!(matches!(
        c.delete(&k("volumes/db"), r2).await,
        Err(ClusterError::Conflict {
            current: Some(_),
            ..
        })
    ));
    c.delete(&k("volumes/db"), r3).await.unwrap();
    assert_eq!(c.get(&k("volumes/db")).await.unwrap(), None);
    assert!(matches!(
        c.delete(&k("volumes/db"), r3).await,
        Err(ClusterError::Conflict { current: None, .. })
    ));
    // Made again after a delete: a new record, at a newer revision.
    assert!(c.create(&k("volumes/db"), json!(2)).await.unwrap() > r3);

    // Races: of 16 creates of one key, and of 16 swaps from one read, exactly one wins.
    let created: Vec<_> = (0..16)
        .map(|_| {
            let (c, key) = (c.clone(), k("race"));
            tokio::spawn(async move { c.create(&key, json!("x")).await })
        })
        .collect();
    let wins = winners(created).await;
    assert_eq!(wins, 1, "creates of one key");
    let read = c.get(&k("race")).await.unwrap().unwrap().revision;
    let swaps: Vec<_> = (0..16)
        .map(|i| {
            let (c, key) = (c.clone(), k("race"));
            tokio::spawn(async move { c.swap(&key, json!(i), read).await })
        })
        .collect();
    let wins = winners(swaps).await;
    assert_eq!(wins, 1, "swaps from one read");
}

/// How many of racing writes won; the others must have lost a compare, told what is there.
async fn winners(racers: Vec<tokio::task::JoinHandle<Result<u64, ClusterError>>>) -> usize {
    let mut wins = 0;
    for t in racers {
        match t.await.unwrap() {
            Ok(_) => wins += 1,
            Err(ClusterError::Conflict {
                current: Some(_), ..
            }) => {}
            Err(e) => panic!("{e}"),
        }
    }
    wins
}

/// Leases: a record under one lives while it is kept alive, and goes when it expires or is
/// revoked; an expired lease cannot be kept alive again.
async fn lease_contract(c: Arc<dyn Cluster>, p: &str) {
    let k = |s: &str| format!("{p}{s}");
    let lease = c.grant(Duration::from_secs(3)).await.unwrap();
    c.create_leased(&k("hosts/a"), json!({"peer": "x"}), lease)
        .await
        .unwrap();
    assert!(matches!(
        c.create_leased(&k("hosts/a"), json!({"peer": "y"}), lease)
            .await,
        Err(ClusterError::Conflict {
            current: Some(_),
            ..
        })
    ));
    // Kept alive past its TTL, it stays (kept every 0.5 s: well inside the TTL, however slow a
    // loaded machine answers).
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(c.keep_alive(lease).await.unwrap());
    }
    assert_eq!(
        c.get(&k("hosts/a")).await.unwrap().unwrap().value["peer"],
        "x"
    );
    assert_eq!(c.list(&k("hosts/")).await.unwrap().len(), 1);
    // Revoked: gone at once, and not kept alive again.
    c.revoke(lease).await.unwrap();
    assert_eq!(c.get(&k("hosts/a")).await.unwrap(), None);
    assert!(!c.keep_alive(lease).await.unwrap());
    c.revoke(lease).await.unwrap();
    // Left alone, it expires: not before its TTL (counted from before the grant), and not
    // never (etcd may round a short TTL up, and a loaded machine is slow: allow it 12 s).
    let granted = Instant::now();
    let lease = c.grant(Duration::from_secs(2)).await.unwrap();
    c.create_leased(&k("hosts/b"), json!(1), lease)
        .await
        .unwrap();
    c.create(&k("hosts/c"), json!("not leased")).await.unwrap();
    while c.get(&k("hosts/b")).await.unwrap().is_some() {
        assert!(
            granted.elapsed() < Duration::from_secs(12),
            "the lease never expired"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        granted.elapsed() >= Duration::from_millis(1900),
        "expired {:?} after the grant, before its TTL",
        granted.elapsed()
    );
    assert!(!c.keep_alive(lease).await.unwrap());
    // A record not under a lease stays; the name is free for another lease.
    assert!(c.get(&k("hosts/c")).await.unwrap().is_some());
    let again = c.grant(Duration::from_secs(10)).await.unwrap();
    c.create_leased(&k("hosts/b"), json!(2), again)
        .await
        .unwrap();
    c.revoke(again).await.unwrap();
}

#[tokio::test]
async fn the_local_file_keeps_the_contract() {
    let dir = support::temp_dir("cluster");
    let file = Arc::new(LocalCluster::open(&dir.join("cluster.json")).unwrap());
    contract(file.clone(), "").await;
    lease_contract(file, "").await;
    let memory = Arc::new(LocalCluster::memory());
    contract(memory.clone(), "m/").await;
    lease_contract(memory, "m/").await;
}

fn etcd_config(etcd: &Etcd, prefix: &str) -> luastrip::cluster::etcd::Config {
    luastrip::cluster::etcd::Config::parse(&etcd.url(), prefix, Default::default()).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn etcd_keeps_the_contract_with_a_member_down_and_names_itself_without_quorum() {
    let mut etcd = Etcd::start();
    let config = etcd_config(&etcd, "/luastrip-test/");
    let c: Arc<dyn Cluster> = Arc::new(EtcdCluster::connect(&config).await.unwrap());
    contract(c.clone(), "").await;
    lease_contract(c.clone(), "").await;

    // A value that is not JSON (anyone who can write etcd can write it): an error naming the
    // key, for a get and for a list.
    let mut raw = etcd.raw_client().await;
    raw.put("/luastrip-test/bad/x", "{not json", None)
        .await
        .unwrap();
    for e in [
        c.get("bad/x").await.unwrap_err(),
        c.list("bad/").await.unwrap_err(),
    ] {
        let e = e.to_string();
        assert!(e.contains("/luastrip-test/bad/x is not JSON"), "{e}");
    }
    // Keys outside the prefix are not luastrip's, however close.
    raw.delete("/luastrip-test/bad/x", None).await.unwrap();
    raw.put("/luastrip-testX/volumes/a", "1", None)
        .await
        .unwrap();
    raw.put("/other/volumes/a", "1", None).await.unwrap();
    let all = c.list("").await.unwrap();
    assert!(
        all.iter()
            .all(|(k, _)| !k.contains("volumes/a") || k == "volumes/a"),
        "{all:?}"
    );
    assert_eq!(c.list("volumes/a").await.unwrap().len(), 1);

    // One member killed: nothing changes.
    etcd.kill(0);
    contract(c.clone(), "one-down/").await;

    // Quorum lost: a decision fails within 5 s, naming etcd; nothing hangs.
    etcd.kill(1);
    let started = Instant::now();
    let e = c.create("lost/x", json!(1)).await.unwrap_err().to_string();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(e.contains("etcd (127.0.0.1:"), "{e}");
    let started = Instant::now();
    assert!(c.list("").await.is_err());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );

    // Back: the same client goes on, and nothing was half-written.
    etcd.restart(0);
    etcd.restart(1);
    etcd.wait_healthy(Duration::from_secs(30));
    let mut answered = None;
    for _ in 0..50 {
        match c.get("lost/x").await {
            Ok(r) => {
                answered = Some(r);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    // The create may have been committed before the members died, or not at all; never half.
    match answered.expect("etcd answers again") {
        None => {
            c.create("lost/x", json!(1)).await.unwrap();
        }
        Some(r) => assert_eq!(r.value, json!(1)),
    }
    contract(c, "back/").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_store_opened_while_etcd_is_down_answers_once_it_is_up() {
    let mut etcd = Etcd::start();
    for i in 0..3 {
        etcd.kill(i);
    }
    let config = etcd_config(&etcd, "/luastrip-late/");
    let c = EtcdCluster::connect(&config).await.unwrap();
    let started = Instant::now();
    let e = c.get("x").await.unwrap_err().to_string();
    assert!(e.contains("etcd (127.0.0.1:"), "{e}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    for i in 0..3 {
        etcd.restart(i);
    }
    etcd.wait_healthy(Duration::from_secs(30));
    let up = Instant::now();
    let mut created = None;
    for _ in 0..50 {
        match c.create("x", json!(1)).await {
            Ok(r) => {
                created = Some(r);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    // The same store answers again, without being made anew (a failure is remembered for
    // DOWN_FOR, 2 s; the bound is loose: this is about recovering, not about speed).
    assert!(up.elapsed() < Duration::from_secs(10), "{:?}", up.elapsed());
    assert!(created.is_some(), "the store answers once etcd is up");
}

/// TLS to etcd with client certificates (`--client-cert-auth`), as docs/cluster.md sets it up:
/// with `--cluster-ca`, `--cluster-cert` and `--cluster-key` the contract holds; without a
/// client certificate, or in plain text, etcd serves nothing, and the error names etcd.
#[tokio::test(flavor = "multi_thread")]
async fn etcd_over_tls_needs_the_client_certificate() {
    let etcd = Etcd::start_tls();
    let dir = etcd.tls.clone().unwrap();
    let files = |cert: bool| luastrip::tls::TlsFiles {
        ca: Some(dir.join("ca.pem")),
        cert: cert.then(|| dir.join("cert.pem")),
        key: cert.then(|| dir.join("key.pem")),
    };
    let parse = |files| {
        luastrip::cluster::etcd::Config::parse(&etcd.url(), "/luastrip-tls/", files).unwrap()
    };
    let c: Arc<dyn Cluster> = Arc::new(EtcdCluster::connect(&parse(files(true))).await.unwrap());
    contract(c, "").await;
    for config in [parse(files(false)), parse(Default::default())] {
        let c = EtcdCluster::connect(&config).await.unwrap();
        let e = c.get("volumes/a").await.unwrap_err().to_string();
        assert!(e.contains("etcd (127.0.0.1:"), "{e}");
    }
}

/// Issue 21 (scale): a list longer than one answer of etcd carries (2 000 records per page, so
/// that no answer nears the client's 4 MiB limit) comes whole and in key order, and stops at
/// the end of its prefix (`many/` and not `many0`, the next key in byte order). Its 2 100
/// records of 2.5 KB are more than the client takes in one answer. (They are written in
/// transactions of 100, so that the test loads etcd little: the suite's other etcd tests run
/// beside it.)
#[tokio::test(flavor = "multi_thread")]
async fn a_list_longer_than_a_page_comes_whole() {
    let etcd = Etcd::start();
    let config = etcd_config(&etcd, "/luastrip-pages/");
    let c: Arc<dyn Cluster> = Arc::new(EtcdCluster::connect(&config).await.unwrap());
    let mut raw = etcd.raw_client().await;
    let pad = "x".repeat(2560);
    let n = 2_100;
    let value = |i: usize| json!({ "i": i, "pad": pad });
    for first in (0..n).step_by(100) {
        let puts: Vec<_> = (first..n.min(first + 100))
            .map(|i| {
                etcd_client::TxnOp::put(
                    format!("/luastrip-pages/many/{i:05}"),
                    value(i).to_string(),
                    None,
                )
            })
            .collect();
        raw.txn(etcd_client::Txn::new().and_then(puts))
            .await
            .unwrap();
    }
    c.create("many0", json!("next")).await.unwrap();
    c.create("man", json!("before")).await.unwrap();
    let all = c.list("many/").await.unwrap();
    assert_eq!(all.len(), n);
    for (i, (k, r)) in all.iter().enumerate() {
        assert_eq!(k, &format!("many/{i:05}"));
        assert_eq!(r.value, value(i));
    }
}
