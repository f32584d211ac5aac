//! The ZooKeeper services against a real ZooKeeper server: election, fencing, retrieval, the
//! key-value space, and a leader that loses the server (stopped, or frozen as when the network
//! drops packets).

#[path = "support/contract.rs"]
mod contract;
#[path = "support/zookeeper.rs"]
mod zookeeper_support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use weir_core::Error;
use weir_core::config::HaSettings;
use weir_ha::HaServices;
use weir_ha::zookeeper::ZooKeeper;
use zookeeper_support::ZkServer;

fn settings(address: &str, cluster: &str, session_timeout_ms: u64) -> HaSettings {
    HaSettings {
        kind: "zookeeper".into(),
        cluster_id: cluster.into(),
        zookeeper_quorum: Some(address.into()),
        zookeeper_root: "/weir-test".into(),
        zookeeper_session_timeout_ms: session_timeout_ms,
        storage_dir: Some(std::env::temp_dir().join(format!("weir-ha-zk-{cluster}")).display().to_string()),
        ..HaSettings::default()
    }
}

async fn connect(server: &ZkServer, cluster: &str, session_timeout_ms: u64) -> ZooKeeper {
    let settings = settings(&server.address(), cluster, session_timeout_ms);
    within("connecting", Duration::from_secs(20), ZooKeeper::connect(&settings))
        .await
        .unwrap_or_else(|e| panic!("cannot connect: {e}\n{}", server.log_tail()))
}

use contract::{me, within};

/// A client of `server` for a cluster, as the contract suite makes them.
fn contract_client(server: &ZkServer) -> impl contract::Connect {
    let address = server.address();
    move |cluster: &str| {
        let s = settings(&address, cluster, 6_000);
        Box::pin(async move {
            let zk = within("connecting", Duration::from_secs(20), ZooKeeper::connect(&s)).await.expect("connect");
            Arc::new(zk) as Arc<dyn HaServices>
        })
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn contract_one_leader_at_a_time_and_deposed_writes_are_refused() {
    let server = ZkServer::start();
    contract::one_leader_at_a_time_and_deposed_writes_are_refused(contract_client(&server)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn contract_keys_list_by_directory_and_delete_recursively() {
    let server = ZkServer::start();
    contract::keys_list_by_directory_and_delete_recursively(contract_client(&server)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn contract_stores_keep_jobs_ids_checkpoints_and_results_across_leaders() {
    let server = ZkServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = settings(&server.address(), "stores", 6_000);
    s.storage_dir = Some(dir.path().display().to_string());
    contract::stores_keep_jobs_ids_checkpoints_and_results_across_leaders(contract_client(&server), s).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn one_leader_at_a_time_and_the_next_takes_over_on_resignation() {
    let server = ZkServer::start();
    let a = connect(&server, "election", 6_000).await;
    let b = Arc::new(connect(&server, "election", 6_000).await);
    let observer = connect(&server, "election", 6_000).await;
    assert_eq!(a.describe(), format!("ZooKeeper at {}", server.address()));
    assert!(observer.leader().await.expect("leader").is_none(), "nobody leads before a campaign");

    let first = within("the first election", Duration::from_secs(10), a.campaign(me("a"))).await.expect("a leads");
    let b2 = b.clone();
    let second = tokio::spawn(async move { b2.campaign(me("b")).await });
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    assert!(!second.is_finished(), "b must not lead while a does");
    assert!(!first.is_lost());
    let leader = observer.leader().await.expect("leader").expect("someone leads");
    assert_eq!((leader.info, leader.epoch), (me("a"), first.epoch));

    let resigned = Instant::now();
    within("resigning", Duration::from_secs(10), a.resign(&first)).await.expect("resign");
    assert!(first.is_lost(), "a resigned leadership is lost");
    let second = within("the second election", Duration::from_secs(10), second).await.expect("join").expect("b leads");
    assert!(resigned.elapsed() < Duration::from_secs(3), "b took over {:?} after a resigned", resigned.elapsed());
    assert!(second.epoch > first.epoch, "epochs grow: {} then {}", first.epoch, second.epoch);
    assert!(!second.is_lost());
    let leader = observer.leader().await.expect("leader").expect("someone leads");
    assert_eq!((leader.info, leader.epoch), (me("b"), second.epoch));

    // a stands by again and takes over when b resigns, with a larger epoch still.
    let a = Arc::new(a);
    let a2 = a.clone();
    let third = tokio::spawn(async move { a2.campaign(me("a")).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!third.is_finished(), "a must not lead while b does");
    b.resign(&second).await.expect("b resigns");
    let third = within("the third election", Duration::from_secs(10), third).await.expect("join").expect("a leads");
    assert!(third.epoch > second.epoch);
    within("a's loss", Duration::from_secs(5), second.lost()).await;
    a.resign(&third).await.expect("a resigns");
    let none = within("the leader", Duration::from_secs(5), observer.leader()).await.expect("leader");
    assert!(none.is_none(), "nobody leads after every contender resigned: {none:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deposed_leader_cannot_write() {
    let server = ZkServer::start();
    let a = connect(&server, "fencing", 6_000).await;
    let b = connect(&server, "fencing", 6_000).await;

    let first = within("a's election", Duration::from_secs(10), a.campaign(me("a"))).await.expect("a leads");
    a.put(first.epoch, "jobgraphs/j1", b"from a".to_vec()).await.expect("the leader writes");
    a.resign(&first).await.expect("a resigns");
    let second = within("b's election", Duration::from_secs(10), b.campaign(me("b"))).await.expect("b leads");

    let refused = a.put(first.epoch, "jobgraphs/j2", b"stale".to_vec()).await;
    assert!(matches!(refused, Err(Error::NotLeader(_))), "{refused:?}");
    let refused = a.put(first.epoch, "jobgraphs/j1", b"stale".to_vec()).await;
    assert!(matches!(refused, Err(Error::NotLeader(_))), "{refused:?}");
    let refused = a.delete(first.epoch, "jobgraphs").await;
    assert!(matches!(refused, Err(Error::NotLeader(_))), "{refused:?}");
    assert_eq!(b.get("jobgraphs/j2").await.expect("get"), None, "a refused write leaves nothing");
    assert_eq!(b.get("jobgraphs/j1").await.expect("get"), Some(b"from a".to_vec()));
    // An epoch this process never held is refused too.
    let refused = b.put(second.epoch + 1, "jobgraphs/j2", b"forged".to_vec()).await;
    assert!(matches!(refused, Err(Error::NotLeader(_))), "{refused:?}");

    b.put(second.epoch, "jobgraphs/j2", b"from b".to_vec()).await.expect("the new leader writes");
    assert_eq!(a.get("jobgraphs/j2").await.expect("get"), Some(b"from b".to_vec()));
    b.delete(second.epoch, "jobgraphs/j1").await.expect("the new leader deletes");
    assert_eq!(a.get("jobgraphs/j1").await.expect("get"), None);
}

/// The fence is in the server: when the latch is deleted behind the leader's back (as ZooKeeper
/// does when it expires a session), the leader's writes are refused even if it has not noticed.
#[tokio::test(flavor = "multi_thread")]
async fn writes_are_fenced_by_the_latch_in_the_server() {
    let server = ZkServer::start();
    let a = connect(&server, "server-fence", 6_000).await;
    let leadership = within("a's election", Duration::from_secs(10), a.campaign(me("a"))).await.expect("a leads");
    a.put(leadership.epoch, "results/r0", b"before".to_vec()).await.expect("the leader writes");

    let raw = zookeeper_client::Client::connector()
        .with_session_timeout(Duration::from_secs(6))
        .connect(&server.address())
        .await
        .expect("raw client");
    let dir = "/weir-test/server-fence/leader";
    let latches = raw.list_children(dir).await.expect("latches");
    assert_eq!(latches.len(), 1, "{latches:?}");
    raw.delete(&format!("{dir}/{}", latches[0]), None).await.expect("delete the latch");

    for i in 0..20 {
        let refused = a.put(leadership.epoch, &format!("results/r{i}"), b"after".to_vec()).await;
        assert!(matches!(refused, Err(Error::NotLeader(_))), "write {i}: {refused:?}");
    }
    within("the loss", Duration::from_secs(5), leadership.lost()).await;
    assert_eq!(a.get("results/r0").await.expect("get"), Some(b"before".to_vec()));
    assert_eq!(a.get("results/r1").await.expect("get"), None);
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_values_and_directories() {
    let server = ZkServer::start();
    let zk = connect(&server, "kv", 6_000).await;
    let reader = connect(&server, "kv", 6_000).await;
    let l = within("the election", Duration::from_secs(10), zk.campaign(me("a"))).await.expect("leads");
    let epoch = l.epoch;

    assert_eq!(zk.get("jobgraphs/0123abc").await.expect("get"), None);
    assert!(zk.list("jobgraphs").await.expect("list").is_empty(), "a missing directory lists nothing");
    assert!(zk.list("no/such/dir").await.expect("list").is_empty());

    zk.put(epoch, "jobgraphs/0123abc", b"graph-1".to_vec()).await.expect("put");
    assert_eq!(reader.get("jobgraphs/0123abc").await.expect("get"), Some(b"graph-1".to_vec()));
    zk.put(epoch, "jobgraphs/0123abc", b"graph-2".to_vec()).await.expect("overwrite");
    assert_eq!(reader.get("jobgraphs/0123abc").await.expect("get"), Some(b"graph-2".to_vec()));
    zk.put(epoch, "jobgraphs/empty", Vec::new()).await.expect("an empty value");
    assert_eq!(reader.get("jobgraphs/empty").await.expect("get"), Some(Vec::new()));

    for n in [12u32, 3, 7] {
        let key = format!("checkpoints/JOB/completed/{n:010}");
        zk.put(epoch, &key, format!("chk-{n}").into_bytes()).await.expect("put nested");
    }
    zk.put(epoch, "checkpoints/JOB/counter", b"13".to_vec()).await.expect("put counter");
    zk.put(epoch, "checkpoints/OTHER/counter", b"1".to_vec()).await.expect("put other");
    let listed = reader.list("checkpoints/JOB/completed").await.expect("list");
    assert_eq!(
        listed,
        vec![
            ("0000000003".to_string(), b"chk-3".to_vec()),
            ("0000000007".to_string(), b"chk-7".to_vec()),
            ("0000000012".to_string(), b"chk-12".to_vec()),
        ]
    );
    let names: Vec<String> = reader.list("checkpoints/JOB").await.expect("list").into_iter().map(|(k, _)| k).collect();
    assert_eq!(names, vec!["completed".to_string(), "counter".to_string()]);
    // Slashes around a key do not matter.
    assert_eq!(reader.get("/checkpoints/JOB/counter/").await.expect("get"), Some(b"13".to_vec()));

    // A single key, then a whole tree.
    zk.delete(epoch, "checkpoints/JOB/completed/0000000003").await.expect("delete one");
    let names: Vec<String> =
        reader.list("checkpoints/JOB/completed").await.expect("list").into_iter().map(|(k, _)| k).collect();
    assert_eq!(names, vec!["0000000007".to_string(), "0000000012".to_string()]);
    zk.delete(epoch, "checkpoints/JOB").await.expect("delete recursively");
    assert_eq!(reader.get("checkpoints/JOB/counter").await.expect("get"), None);
    assert_eq!(reader.get("checkpoints/JOB/completed/0000000007").await.expect("get"), None);
    assert_eq!(reader.get("checkpoints/JOB").await.expect("get"), None);
    assert!(reader.list("checkpoints/JOB/completed").await.expect("list").is_empty());
    assert_eq!(reader.get("checkpoints/OTHER/counter").await.expect("get"), Some(b"1".to_vec()), "a sibling stays");
    zk.delete(epoch, "checkpoints/JOB").await.expect("deleting a missing key is fine");

    // A tree larger than one transaction.
    for n in 0..450u32 {
        zk.put(epoch, &format!("big/d{}/k{n:04}", n % 3), vec![1]).await.expect("put many");
    }
    assert_eq!(reader.list("big/d0").await.expect("list").len(), 150);
    zk.delete(epoch, "big").await.expect("delete a large tree");
    assert!(reader.list("big").await.expect("list").is_empty());
    assert!(reader.list("big/d1").await.expect("list").is_empty());

    // The key-value space does not see the election's znodes.
    let names: Vec<String> = reader.list("").await.expect("list the root").into_iter().map(|(k, _)| k).collect();
    assert!(!names.iter().any(|n| n.starts_with("latch")), "{names:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_leader_that_loses_the_server_knows_it_in_time_and_leads_again_later() {
    let mut server = ZkServer::start();
    let timeout = Duration::from_millis(2_000);
    let a = connect(&server, "outage", timeout.as_millis() as u64).await;
    let first = within("the election", Duration::from_secs(10), a.campaign(me("a"))).await.expect("a leads");
    a.put(first.epoch, "k", b"v1".to_vec()).await.expect("put");

    let stopped = Instant::now();
    server.stop();
    within("the loss after the server stopped", Duration::from_secs(10), first.lost()).await;
    let noticed = stopped.elapsed();
    eprintln!("the loss was reported {noticed:?} after the server stopped");
    assert!(
        noticed < timeout,
        "the loss was reported {noticed:?} after the server stopped (session timeout {timeout:?})"
    );
    let refused = a.put(first.epoch, "k", b"v2".to_vec()).await;
    assert!(matches!(refused, Err(Error::NotLeader(_))), "{refused:?}");

    // A campaign while the server is down waits for it; the same object leads again after it
    // is back, with a new session if the old one expired.
    let a = Arc::new(a);
    let a2 = a.clone();
    let again = tokio::spawn(async move { a2.campaign(me("a")).await });
    tokio::time::sleep(Duration::from_millis(3_000)).await;
    assert!(!again.is_finished(), "nobody can lead while the server is down");
    server.restart();
    let second = within("the election after the restart", Duration::from_secs(30), again)
        .await
        .expect("join")
        .unwrap_or_else(|e| panic!("a leads again: {e}\n{}", server.log_tail()));
    assert!(second.epoch > first.epoch, "epochs grow: {} then {}", first.epoch, second.epoch);
    assert!(!second.is_lost());
    a.put(second.epoch, "k", b"v3".to_vec()).await.expect("the new leadership writes");
    assert_eq!(a.get("k").await.expect("get"), Some(b"v3".to_vec()));
    let leader = a.leader().await.expect("leader").expect("someone leads");
    assert_eq!(leader.epoch, second.epoch);
}

/// A server that answers nothing while connections stay open, as when packets are dropped.
#[tokio::test(flavor = "multi_thread")]
async fn a_leader_whose_server_goes_silent_knows_it_in_time() {
    let server = ZkServer::start();
    let timeout = Duration::from_millis(2_000);
    let a = connect(&server, "silence", timeout.as_millis() as u64).await;
    let b = connect(&server, "silence", 10_000).await;
    let first = within("the election", Duration::from_secs(10), a.campaign(me("a"))).await.expect("a leads");

    let frozen = Instant::now();
    server.pause();
    within("the loss after the server went silent", Duration::from_secs(10), first.lost()).await;
    let noticed = frozen.elapsed();
    eprintln!("the loss was reported {noticed:?} after the server froze");
    server.resume();
    assert!(
        noticed < timeout,
        "the loss was reported {noticed:?} after the server froze (session timeout {timeout:?})"
    );

    // After the server is back, b (whose session outlives the freeze) takes over, then a leads
    // again once b resigns.
    let second = within("b's election", Duration::from_secs(30), b.campaign(me("b"))).await.expect("b leads");
    assert!(second.epoch > first.epoch);
    let refused = a.put(first.epoch, "k", b"stale".to_vec()).await;
    assert!(matches!(refused, Err(Error::NotLeader(_))), "{refused:?}");
    b.resign(&second).await.expect("b resigns");
    let third = within("a's election", Duration::from_secs(30), a.campaign(me("a"))).await.expect("a leads again");
    assert!(third.epoch > second.epoch);
    a.put(third.epoch, "k", b"fresh".to_vec()).await.expect("put");
}

#[tokio::test(flavor = "multi_thread")]
async fn connecting_where_nothing_listens_fails_clearly_and_in_time() {
    let port = zookeeper_support::free_port();
    let address = format!("127.0.0.1:{port}");
    let started = Instant::now();
    let result = within(
        "connecting to nothing",
        Duration::from_secs(15),
        ZooKeeper::connect(&settings(&address, "nothing", 2_000)),
    )
    .await;
    let elapsed = started.elapsed();
    let Err(e) = result else { panic!("connecting to {address}, where nothing listens, succeeded") };
    assert!(elapsed < Duration::from_secs(5), "failing took {elapsed:?}");
    let message = e.to_string();
    assert!(matches!(e, Error::Coordination { retryable: true, .. }), "{e:?}");
    assert!(message.contains(&address), "{message}");
    assert!(message.contains("high-availability.zookeeper.quorum"), "{message}");

    let bad = HaSettings { zookeeper_quorum: Some(" , ".into()), ..settings(&address, "nothing", 2_000) };
    let e = ZooKeeper::connect(&bad).await.err().expect("no server named");
    assert!(matches!(e, Error::Config(_)), "{e:?}");
    let bad = HaSettings { zookeeper_root: "weir".into(), ..settings(&address, "nothing", 2_000) };
    let e = ZooKeeper::connect(&bad).await.err().expect("a relative root");
    assert!(matches!(e, Error::Config(_)), "{e:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_leader_watch_wakes_on_a_change_only() {
    let server = ZkServer::start();
    contract::a_leader_watch_wakes_on_a_change_only(contract_client(&server), false).await;
}
