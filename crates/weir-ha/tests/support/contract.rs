//! The contract every [`HaServices`] keeps, as one suite each implementation runs: etcd and
//! ZooKeeper against real servers, the in-memory one in process. A JobManager relies on nothing
//! else, so an implementation that passes this can stand in for the others.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use weir_core::Error;
use weir_core::config::HaSettings;
use weir_ha::stores::Stores;
use weir_ha::{HaServices, LeaderInfo};

/// Makes one more client of the service under test, for the cluster the suite names.
pub trait Connect: Fn(&str) -> Pin<Box<dyn Future<Output = Arc<dyn HaServices>> + Send>> {}
impl<F: Fn(&str) -> Pin<Box<dyn Future<Output = Arc<dyn HaServices>> + Send>>> Connect for F {}

pub fn me(id: &str) -> LeaderInfo {
    LeaderInfo { id: id.into(), rpc: format!("{id}:6123"), rest: format!("{id}:8081") }
}

pub async fn within<T>(what: &str, limit: Duration, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(limit, f).await.unwrap_or_else(|_| panic!("{what} took over {limit:?}"))
}

/// One leader at a time; epochs grow; a deposed leader's writes are refused and leave nothing.
pub async fn one_leader_at_a_time_and_deposed_writes_are_refused(connect: impl Connect) {
    let a = connect("election").await;
    let b = connect("election").await;
    let observer = connect("election").await;

    let first = within("the first election", Duration::from_secs(10), a.campaign(me("a"))).await.expect("a leads");
    let b2 = b.clone();
    let second = tokio::spawn(async move { b2.campaign(me("b")).await });
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(!second.is_finished(), "b must not lead while a does");
    let leader = observer.leader().await.expect("leader").expect("someone leads");
    assert_eq!((leader.info.id.as_str(), leader.epoch), ("a", first.epoch));
    assert!(!first.is_lost());

    a.put(first.epoch, "jobs/x", b"from a".to_vec()).await.expect("the leader writes");
    a.resign(&first).await.expect("resign");
    within("noticing the resignation", Duration::from_secs(5), first.lost()).await;
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
    b.resign(&second).await.expect("resign");
}

/// Values by key; directories list the keys directly in them, sorted; deletes are recursive and
/// stop at a sibling that only shares a prefix.
pub async fn keys_list_by_directory_and_delete_recursively(connect: impl Connect) {
    let ha = connect("kv").await;
    let reader = connect("kv").await;
    let l = within("election", Duration::from_secs(10), ha.campaign(me("a"))).await.expect("lead");
    let epoch = l.epoch;

    assert_eq!(reader.get("jobgraphs/0123abc").await.expect("get"), None);
    assert!(reader.list("no/such/dir").await.expect("list").is_empty(), "a missing directory lists nothing");
    ha.put(epoch, "jobgraphs/0123abc", b"graph-1".to_vec()).await.expect("put");
    ha.put(epoch, "jobgraphs/0123abc", b"graph-2".to_vec()).await.expect("overwrite");
    assert_eq!(reader.get("jobgraphs/0123abc").await.expect("get"), Some(b"graph-2".to_vec()));
    ha.put(epoch, "jobgraphs/empty", Vec::new()).await.expect("an empty value");
    assert_eq!(reader.get("jobgraphs/empty").await.expect("get"), Some(Vec::new()));

    for n in [12u32, 3, 7] {
        ha.put(epoch, &format!("checkpoints/JOB/completed/{n:010}"), format!("chk-{n}").into_bytes())
            .await
            .expect("put nested");
    }
    ha.put(epoch, "checkpoints/JOB/counter", b"13".to_vec()).await.expect("put counter");
    ha.put(epoch, "checkpoints/JOB2/counter", b"1".to_vec()).await.expect("put a sibling with a common prefix");
    assert_eq!(
        reader.list("checkpoints/JOB/completed").await.expect("list"),
        vec![
            ("0000000003".to_string(), b"chk-3".to_vec()),
            ("0000000007".to_string(), b"chk-7".to_vec()),
            ("0000000012".to_string(), b"chk-12".to_vec()),
        ]
    );

    ha.delete(epoch, "checkpoints/JOB/completed/0000000003").await.expect("delete one");
    let names: Vec<String> =
        reader.list("checkpoints/JOB/completed").await.expect("list").into_iter().map(|(k, _)| k).collect();
    assert_eq!(names, vec!["0000000007".to_string(), "0000000012".to_string()]);
    ha.delete(epoch, "checkpoints/JOB").await.expect("delete recursively");
    assert_eq!(reader.get("checkpoints/JOB/counter").await.expect("get"), None);
    assert_eq!(reader.get("checkpoints/JOB/completed/0000000007").await.expect("get"), None);
    assert!(reader.list("checkpoints/JOB/completed").await.expect("list").is_empty());
    assert_eq!(reader.get("checkpoints/JOB2/counter").await.expect("get"), Some(b"1".to_vec()), "a sibling stays");
    ha.delete(epoch, "checkpoints/JOB").await.expect("deleting a missing key is fine");
    ha.resign(&l).await.expect("resign");
}

/// The stores a new leader recovers from: job graphs (bulky data in the storage directory),
/// checkpoint ids never handed out twice, retained checkpoints, job results; all fenced.
pub async fn stores_keep_jobs_ids_checkpoints_and_results_across_leaders(connect: impl Connect, settings: HaSettings) {
    let dir = std::path::PathBuf::from(settings.storage_dir.clone().expect("a storage directory"));
    let root = dir.join(&settings.cluster_id);
    let first = connect(&settings.cluster_id).await;
    let stores = Stores::open(first.clone(), &settings).expect("stores");
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
    let second = connect(&settings.cluster_id).await;
    let stores = Stores::open(second.clone(), &settings).expect("stores");
    let l2 = within("election", Duration::from_secs(10), second.campaign(me("b"))).await.expect("lead");
    assert_eq!(stores.jobs().await.expect("jobs"), vec!["job1".to_string()]);
    assert_eq!(stores.job("job1").await.expect("job"), Some(b"graph one, again".to_vec()));
    assert_eq!(std::fs::read_dir(root.join("jobgraphs")).expect("dir").count(), 1, "the replaced file went");
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
    std::fs::create_dir_all(root.join("jobgraphs")).expect("mkdir");
    std::fs::write(root.join("jobgraphs/orphan-1"), b"x").expect("write");
    assert_eq!(stores.sweep().await.expect("sweep"), 1);
    second.resign(&l2).await.expect("resign");
}

/// A watch of the leader wakes on a change, well before [`weir_ha::WATCH_BOUND`], and not without
/// one (for a service that polls, `polls`: it wakes after the retrieval interval either way).
pub async fn a_leader_watch_wakes_on_a_change_only(connect: impl Connect, polls: bool) {
    let a = connect("watch").await;
    let observer = connect("watch").await;
    let quiet = observer.watch_leader().await.expect("a watch");
    let woke = tokio::time::timeout(Duration::from_millis(600), quiet).await.is_ok();
    assert_eq!(woke, polls, "a watch woke without a change of the leader");
    let change = observer.watch_leader().await.expect("a watch");
    let started = std::time::Instant::now();
    let leading = a.campaign(me("a")).await.expect("a leads");
    within("the watch to wake", weir_ha::WATCH_BOUND - Duration::from_millis(500), change).await;
    eprintln!("woke {:?} after the campaign started", started.elapsed());
    let gone = observer.watch_leader().await.expect("a watch");
    a.resign(&leading).await.expect("resign");
    within("the watch to wake on the resignation", weir_ha::WATCH_BOUND - Duration::from_millis(500), gone).await;
}
