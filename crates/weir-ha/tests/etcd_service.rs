//! The etcd services against a real etcd server: election, fencing, retrieval, the stores, and a
//! leader that loses the server.

#[path = "support/etcd.rs"]
mod etcd_support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_support::EtcdServer;
use weir_core::Error;
use weir_core::config::HaSettings;
use weir_ha::stores::Stores;
use weir_ha::{HaServices, LeaderInfo, etcd::Etcd};

fn settings(server: &EtcdServer, cluster: &str, ttl_ms: u64) -> HaSettings {
    HaSettings {
        kind: "etcd".into(),
        cluster_id: cluster.into(),
        etcd_endpoints: Some(server.address()),
        etcd_lease_ttl_ms: ttl_ms,
        storage_dir: Some(std::env::temp_dir().join(format!("weir-ha-{cluster}")).display().to_string()),
        ..HaSettings::default()
    }
}

fn me(id: &str) -> LeaderInfo {
    LeaderInfo { id: id.into(), rpc: format!("{id}:6123"), rest: format!("{id}:8081") }
}

async fn within<T>(what: &str, limit: Duration, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(limit, f).await.unwrap_or_else(|_| panic!("{what} took over {limit:?}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn one_leader_at_a_time_and_deposed_writes_are_refused() {
    let server = EtcdServer::start();
    let a = Etcd::connect(&settings(&server, "election", 4_000)).await.expect("connect a");
    let b = Arc::new(Etcd::connect(&settings(&server, "election", 4_000)).await.expect("connect b"));
    let observer = Etcd::connect(&settings(&server, "election", 4_000)).await.expect("connect observer");

    let first = within("the first election", Duration::from_secs(10), a.campaign(me("a"))).await.expect("a leads");
    let b2 = b.clone();
    let second = tokio::spawn(async move { b2.campaign(me("b")).await });
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(!second.is_finished(), "b must not lead while a does");
    let leader = observer.leader().await.expect("leader").expect("someone leads");
    assert_eq!((leader.info.id.as_str(), leader.epoch), ("a", first.epoch));

    a.put(first.epoch, "jobs/x", b"from a".to_vec()).await.expect("the leader writes");
    a.resign(&first).await.expect("resign");
    assert!(first.is_lost());
    let second = within("the second election", Duration::from_secs(10), second).await.expect("join").expect("b leads");
    assert!(second.epoch > first.epoch, "epochs grow: {} then {}", first.epoch, second.epoch);
    let leader = observer.leader().await.expect("leader").expect("someone leads");
    assert_eq!(leader.info, me("b"));

    // a's orders are refused now, and leave nothing behind.
    let refused = a.put(first.epoch, "jobs/x", b"stale".to_vec()).await;
    assert!(matches!(refused, Err(Error::NotLeader(_))), "{refused:?}");
    assert!(matches!(a.delete(first.epoch, "jobs/x").await, Err(Error::NotLeader(_))));
    assert_eq!(observer.get("jobs/x").await.expect("get"), Some(b"from a".to_vec()));
    b.put(second.epoch, "jobs/x", b"from b".to_vec()).await.expect("the new leader writes");
    assert_eq!(observer.get("jobs/x").await.expect("get"), Some(b"from b".to_vec()));
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_list_by_directory_and_delete_recursively() {
    let server = EtcdServer::start();
    let ha = Etcd::connect(&settings(&server, "kv", 4_000)).await.expect("connect");
    let l = within("election", Duration::from_secs(10), ha.campaign(me("a"))).await.expect("lead");
    for (k, v) in [("d/b", "2"), ("d/a", "1"), ("d/a/deeper", "x"), ("d2/z", "9"), ("e", "top")] {
        ha.put(l.epoch, k, v.as_bytes().to_vec()).await.expect("put");
    }
    let listed = ha.list("d").await.expect("list");
    assert_eq!(listed, vec![("a".to_string(), b"1".to_vec()), ("b".to_string(), b"2".to_vec())]);
    ha.delete(l.epoch, "d/a").await.expect("delete");
    assert_eq!(ha.get("d/a/deeper").await.expect("get"), None);
    assert_eq!(ha.list("d").await.expect("list").len(), 1);
    assert_eq!(ha.list("d2").await.expect("list").len(), 1, "a sibling with a common prefix is untouched");
    assert!(ha.list("nothing").await.expect("list").is_empty());
    assert_eq!(ha.get("e").await.expect("get"), Some(b"top".to_vec()));
}

#[tokio::test(flavor = "multi_thread")]
async fn stores_keep_jobs_ids_checkpoints_and_results_across_leaders() {
    let server = EtcdServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = settings(&server, "stores", 4_000);
    s.storage_dir = Some(dir.path().display().to_string());
    let first: Arc<dyn HaServices> = Arc::new(Etcd::connect(&s).await.expect("connect"));
    let stores = Stores::open(first.clone(), &s).expect("stores");
    let l1 = within("election", Duration::from_secs(10), first.campaign(me("a"))).await.expect("lead");
    stores.put_job(l1.epoch, "job1", b"graph one".to_vec()).await.expect("put job");
    stores.put_job(l1.epoch, "job1", b"graph one, again".to_vec()).await.expect("replace job");
    assert_eq!(stores.reserve_checkpoint_ids(l1.epoch, "job1", 1, 10).await.expect("ids"), 1..11);
    assert_eq!(stores.reserve_checkpoint_ids(l1.epoch, "job1", 5, 10).await.expect("ids"), 11..21);
    for id in 1..=4 {
        stores.add_checkpoint(l1.epoch, "job1", id, &format!("/cp/chk-{id}"), 2).await.expect("add");
    }
    first.resign(&l1).await.expect("resign");

    // Another JobManager, the next leader, finds all of it.
    let second: Arc<dyn HaServices> = Arc::new(Etcd::connect(&s).await.expect("connect"));
    let stores = Stores::open(second.clone(), &s).expect("stores");
    let l2 = within("election", Duration::from_secs(10), second.campaign(me("b"))).await.expect("lead");
    assert_eq!(stores.jobs().await.expect("jobs"), vec!["job1".to_string()]);
    assert_eq!(stores.job("job1").await.expect("job"), Some(b"graph one, again".to_vec()));
    assert_eq!(
        std::fs::read_dir(dir.path().join("stores/jobgraphs")).expect("dir").count(),
        1,
        "the replaced file went"
    );
    assert_eq!(stores.reserve_checkpoint_ids(l2.epoch, "job1", 1, 10).await.expect("ids"), 21..31, "never again");
    assert_eq!(stores.reserve_checkpoint_ids(l2.epoch, "job1", 100, 10).await.expect("ids"), 100..110);
    assert_eq!(stores.latest_checkpoint("job1").await.expect("latest"), Some((4, "/cp/chk-4".into())));
    assert_eq!(second.list("checkpoints/job1/completed").await.expect("list").len(), 2, "two retained");
    // The old leader's writes are refused by every store.
    assert!(matches!(stores.put_result(l1.epoch, "job1", b"x".to_vec()).await, Err(Error::NotLeader(_))));
    stores.put_result(l2.epoch, "job1", b"FINISHED".to_vec()).await.expect("result");
    stores.remove_job(l2.epoch, "job1").await.expect("remove");
    assert!(stores.jobs().await.expect("jobs").is_empty());
    assert_eq!(stores.latest_checkpoint("job1").await.expect("latest"), None);
    assert_eq!(stores.result("job1").await.expect("result"), Some(b"FINISHED".to_vec()));
    // A file a dying leader left without a pointer is swept.
    std::fs::create_dir_all(dir.path().join("stores/jobgraphs")).expect("mkdir");
    std::fs::write(dir.path().join("stores/jobgraphs/orphan-1"), b"x").expect("write");
    assert_eq!(stores.sweep().await.expect("sweep"), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_leader_that_loses_etcd_gives_up_before_its_lease_ends_and_leads_again_after() {
    let mut server = EtcdServer::start();
    let ttl = Duration::from_secs(3);
    let ha = Etcd::connect(&settings(&server, "loss", ttl.as_millis() as u64)).await.expect("connect");
    let l = within("election", Duration::from_secs(10), ha.campaign(me("a"))).await.expect("lead");
    // Held well past its TTL while etcd answers: the lease is renewed.
    tokio::time::sleep(ttl + ttl / 2).await;
    assert!(!l.is_lost(), "a renewed lease is not lost");
    let stopped = Instant::now();
    server.stop();
    within("the loss", ttl, l.lost()).await;
    let after = stopped.elapsed();
    assert!(after < ttl, "lost after {after:?}, not before the lease could end ({ttl:?})");
    server.restart();
    let again = within("the next election", Duration::from_secs(20), ha.campaign(me("a"))).await.expect("lead again");
    assert!(again.epoch > l.epoch);
}

#[tokio::test(flavor = "multi_thread")]
async fn nothing_listening_is_a_clear_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("port").port();
    let s = HaSettings {
        kind: "etcd".into(),
        etcd_endpoints: Some(format!("127.0.0.1:{port}")),
        storage_dir: Some("/tmp".into()),
        ..HaSettings::default()
    };
    let started = Instant::now();
    let e = Etcd::connect(&s).await.err().expect("no etcd there");
    assert!(started.elapsed() < Duration::from_secs(10));
    let text = e.to_string();
    assert!(text.contains("high-availability.etcd.endpoints") && text.contains(&port.to_string()), "{text}");
    assert!(e.is_retryable());
}
