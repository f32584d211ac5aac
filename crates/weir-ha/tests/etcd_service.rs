//! The etcd services against a real etcd server: election, fencing, retrieval, the stores, and a
//! leader that loses the server.

#[path = "support/contract.rs"]
mod contract;
#[path = "support/etcd.rs"]
mod etcd_support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use contract::{me, within};
use etcd_support::EtcdServer;
use weir_core::config::HaSettings;
use weir_ha::{HaServices, etcd::Etcd};

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

/// A client of `server` for `cluster`, as the contract suite makes them.
fn connect(server: &EtcdServer, ttl_ms: u64) -> impl contract::Connect {
    let address = server.address();
    move |cluster: &str| {
        let (address, cluster) = (address.clone(), cluster.to_string());
        Box::pin(async move {
            let s = HaSettings {
                kind: "etcd".into(),
                cluster_id: cluster.clone(),
                etcd_endpoints: Some(address),
                etcd_lease_ttl_ms: ttl_ms,
                storage_dir: Some(std::env::temp_dir().join(format!("weir-ha-{cluster}")).display().to_string()),
                ..HaSettings::default()
            };
            Arc::new(Etcd::connect(&s).await.expect("connect")) as Arc<dyn HaServices>
        })
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn one_leader_at_a_time_and_deposed_writes_are_refused() {
    let server = EtcdServer::start();
    contract::one_leader_at_a_time_and_deposed_writes_are_refused(connect(&server, 4_000)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_list_by_directory_and_delete_recursively() {
    let server = EtcdServer::start();
    contract::keys_list_by_directory_and_delete_recursively(connect(&server, 4_000)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn stores_keep_jobs_ids_checkpoints_and_results_across_leaders() {
    let server = EtcdServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = settings(&server, "stores", 4_000);
    s.storage_dir = Some(dir.path().display().to_string());
    contract::stores_keep_jobs_ids_checkpoints_and_results_across_leaders(connect(&server, 4_000), s).await;
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

#[tokio::test(flavor = "multi_thread")]
async fn a_leader_watch_wakes_on_a_change_only() {
    let server = EtcdServer::start();
    contract::a_leader_watch_wakes_on_a_change_only(connect(&server, 4_000), false).await;
}
