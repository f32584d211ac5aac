//! The in-memory services: the contract suite etcd and ZooKeeper pass, and an expiry that takes
//! leadership away as a lost lease or session does.

#[path = "support/contract.rs"]
mod contract;

use std::sync::Arc;
use std::time::Duration;

use contract::{me, within};
use weir_core::Error;
use weir_core::config::HaSettings;
use weir_ha::HaServices;
use weir_ha::memory::InMemory;

/// Clients of one in-memory service (every cluster name shares it, as clusters share a server).
fn connect(service: &InMemory) -> impl contract::Connect {
    let service = service.clone();
    move |_cluster: &str| {
        let client = service.clone();
        Box::pin(async move { Arc::new(client) as Arc<dyn HaServices> })
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn one_leader_at_a_time_and_deposed_writes_are_refused() {
    contract::one_leader_at_a_time_and_deposed_writes_are_refused(connect(&InMemory::new())).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_list_by_directory_and_delete_recursively() {
    contract::keys_list_by_directory_and_delete_recursively(connect(&InMemory::new())).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn stores_keep_jobs_ids_checkpoints_and_results_across_leaders() {
    let dir = tempfile::tempdir().expect("tempdir");
    let settings = HaSettings {
        kind: "memory".into(),
        cluster_id: "stores".into(),
        storage_dir: Some(dir.path().display().to_string()),
        ..HaSettings::default()
    };
    contract::stores_keep_jobs_ids_checkpoints_and_results_across_leaders(connect(&InMemory::new()), settings).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_expired_leader_knows_it_before_the_next_leads_and_cannot_write() {
    let service = InMemory::new();
    let (a, b) = (service.clone(), service.clone());
    let first = within("the first election", Duration::from_secs(5), a.campaign(me("a"))).await.expect("a leads");
    let waiting = tokio::spawn(async move { b.campaign(me("b")).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!waiting.is_finished(), "b waits while a leads");
    service.expire();
    assert!(first.is_lost(), "the loss is reported at the expiry itself");
    let second = within("the next election", Duration::from_secs(5), waiting).await.expect("join").expect("b leads");
    assert!(second.epoch > first.epoch);
    assert!(matches!(a.put(first.epoch, "k", vec![1]).await, Err(Error::NotLeader(_))));
    assert_eq!(a.get("/k/").await.expect("get"), None, "a refused write leaves nothing");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_leader_watch_wakes_on_a_change_only() {
    contract::a_leader_watch_wakes_on_a_change_only(connect(&InMemory::new()), true).await;
}
