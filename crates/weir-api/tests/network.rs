//! A job split into parts that exchange records over TCP on loopback, in one process: two data
//! servers stand for two TaskManagers.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use sha2::Digest;
use weir_api::{Job, Registry, StreamEnv};
use weir_core::protocol::Assignment;
use weir_core::result::JobResult;
use weir_core::{Error, JobId, Result};
use weir_runtime::ExecutionConfig;
use weir_runtime::local::{JobHandle, submit_part};
use weir_runtime::net::{DataServer, Placement};
use weir_security::testing::Certificates;
use weir_security::{Internal, Secret};

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
struct Args {
    n: i64,
    keys: i64,
}

/// Counts per key through a keyed exchange, plus a rebalance and a broadcast of the totals.
fn counting(env: &mut StreamEnv, args: Args) -> Result<()> {
    let keys = args.keys;
    env.from_sequence(0, args.n - 1)
        .map(move |x| (x % keys, 1u64))
        .key_by(|t: &(i64, u64)| t.0)
        .sum(|t| &mut t.1)
        .rebalance()
        .collect("out");
    Ok(())
}

static COUNTING: Job<Args> = Job::new("counting", counting);

/// A trickle: 20 records a second from one source subtask, dealt round-robin to two mappers.
fn trickle(env: &mut StreamEnv, _: Args) -> Result<()> {
    env.datagen(None, Some(20.0), |i| i as i64).set_parallelism(1).rebalance().map(|x| x + 1).discard();
    Ok(())
}

static TRICKLE: Job<Args> = Job::new("trickle", trickle);

fn config(p: u32) -> Result<ExecutionConfig> {
    let mut c = ExecutionConfig::default();
    c.set("parallelism.default", &p.to_string())?;
    // Small batches and queues: many frames, and senders that run out of credit all the time.
    c.set("execution.batch-size", "7")?;
    c.set("execution.channel-capacity", "2")?;
    Ok(c)
}

fn servers(n: usize) -> Result<Vec<Arc<DataServer>>> {
    secured(n, &Internal::open())
}

fn secured(n: usize, security: &Arc<Internal>) -> Result<Vec<Arc<DataServer>>> {
    (0..n).map(|_| DataServer::start("127.0.0.1:0", "127.0.0.1", security.clone())).collect()
}

/// Internal security as a cluster would have it: `tls` adds mutual TLS with certificates made in `dir`.
fn cluster_security(dir: &std::path::Path, tls: bool) -> Result<Arc<Internal>> {
    let mut c = weir_core::config::ClusterConfig::default();
    if tls {
        let certs = Certificates::generate(dir)?;
        c.security.internal_tls = true;
        c.security.internal_keystore = Some(certs.signed.display().to_string());
        c.security.internal_truststore = Some(certs.ca.display().to_string());
    }
    Ok(Internal::from_config(&c)?.with_secret(Secret::new("the secret of the test cluster", "the test")?))
}

/// Starts every part of `args`'s job at parallelism `p`, slot `i` in part `slot_parts[i]`.
fn start(args: &Args, p: u32, slot_parts: &[u32], servers: &[Arc<DataServer>]) -> Result<Vec<JobHandle>> {
    start_parts("counting", config(p)?, args, slot_parts, servers, servers.len())
}

/// Like [`start`], but starts only the first `started` parts (the others never come).
fn start_parts(
    name: &str,
    config: ExecutionConfig,
    args: &Args,
    slot_parts: &[u32],
    servers: &[Arc<DataServer>],
    started: usize,
) -> Result<Vec<JobHandle>> {
    let registry = Registry::new().register(&COUNTING).register(&TRICKLE);
    let job = JobId::random();
    let json = serde_json::to_value(args).map_err(|e| Error::internal(e.to_string()))?;
    let addresses: Vec<String> = servers.iter().map(|s| s.address().to_string()).collect();
    // Keys per part, as a JobMaster deals them (a forger's key for part 1 where asked).
    let keys: Vec<Vec<u8>> =
        (0..servers.len()).map(|_| weir_security::random_key().map(|k| k.to_vec())).collect::<Result<_>>()?;
    let digests: Vec<Vec<u8>> = keys.iter().map(|k| sha2::Sha256::digest(k).to_vec()).collect();
    (0..started)
        .map(|part| {
            let graph = registry.build(name, &json, &config)?;
            let send_key = if part == 1 && FORGE.with(|f| f.get()) { keys[0].clone() } else { keys[part].clone() };
            let assignment = Assignment {
                attempt: 0,
                part: part as u32,
                slot_parts: slot_parts.to_vec(),
                part_addresses: addresses.clone(),
                send_key,
                sender_digests: digests.clone(),
                taskmanager: format!("tm-{part}"),
            };
            submit_part(graph, job, Some(Placement { assignment, server: servers[part].clone() }))
        })
        .collect()
}

thread_local! {
    /// Part 1 presents part 0's key instead of its own (a part of the run posing as another).
    static FORGE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

#[test]
fn a_part_that_sends_with_another_parts_key_is_refused() -> Result<()> {
    FORGE.with(|f| f.set(true));
    let handles = start(&Args { n: 2_000, keys: 5 }, 2, &[0, 1], &servers(2)?)?;
    FORGE.with(|f| f.set(false));
    let errors: Vec<String> =
        handles.iter().map(|h| h.wait().err().map(|e| e.to_string()).unwrap_or_default()).collect();
    assert!(errors.iter().all(|e| !e.is_empty()), "a part finished without its peer: {errors:?}");
    assert!(errors.iter().any(|e| e.contains("without that part's key")), "{errors:?}");
    Ok(())
}

#[test]
fn a_job_split_over_two_processes_counts_exactly_as_on_one() -> Result<()> {
    split_count(&servers(2)?)
}

#[test]
fn a_split_job_counts_the_same_over_authenticated_and_tls_connections() -> Result<()> {
    let dir = tempfile::tempdir().map_err(|e| Error::internal(e.to_string()))?;
    split_count(&secured(2, &cluster_security(dir.path(), false)?)?)?;
    split_count(&secured(2, &cluster_security(dir.path(), true)?)?)
}

#[test]
fn a_sender_without_the_cluster_secret_is_refused() -> Result<()> {
    let dir = tempfile::tempdir().map_err(|e| Error::internal(e.to_string()))?;
    // Part 1's server holds another secret: part 0 cannot deliver to it, nor it to part 0.
    let servers = vec![secured(1, &cluster_security(dir.path(), false)?)?.remove(0), servers(1)?.remove(0)];
    let handles = start(&Args { n: 2_000, keys: 5 }, 2, &[0, 1], &servers)?;
    for h in &handles {
        let e = h.wait().expect_err("no part finishes without its peer");
        let text = e.to_string();
        assert!(text.contains("cluster secret") || text.contains("closed") || text.contains("lost"), "{text}");
    }
    Ok(())
}

fn split_count(servers: &[Arc<DataServer>]) -> Result<()> {
    let args = Args { n: 20_000, keys: 37 };
    // Slots interleaved over the parts: every exchange crosses between them both ways.
    let handles = start(&args, 4, &[0, 1, 0, 1], servers)?;
    let results: Vec<JobResult> = handles.iter().map(|h| h.wait()).collect::<Result<_>>()?;
    let merged = JobResult::merge(results).ok_or_else(|| Error::internal("no parts"))?;
    let out = &merged.accumulators["out"];
    assert_eq!(out.keys().copied().collect::<Vec<_>>(), vec![0, 1, 2, 3], "every subtask's output, from both parts");
    let mut finals: BTreeMap<i64, u64> = BTreeMap::new();
    let mut records = 0;
    for bytes in out.values() {
        let part: Vec<(i64, u64)> = weir_connectors::collect::decode("out", bytes)?;
        records += part.len();
        for (k, c) in part {
            let best = finals.entry(k).or_insert(0);
            *best = c.max(*best);
        }
    }
    assert_eq!(records, 20_000, "one running count per record");
    let want: BTreeMap<i64, u64> = (0..37).map(|k| (k, (0..20_000).filter(|x| x % 37 == k).count() as u64)).collect();
    assert_eq!(finals, want);
    for h in &handles {
        assert_eq!(h.live_tasks(), 0);
    }
    Ok(())
}

#[test]
fn a_part_whose_peer_stops_fails_instead_of_hanging() -> Result<()> {
    let servers = servers(2)?;
    // Enough records that the job is still running when one part is cancelled.
    let args = Args { n: 50_000_000, keys: 1000 };
    let handles = start(&args, 2, &[0, 1], &servers)?;
    std::thread::sleep(Duration::from_millis(200));
    handles[1].cancel();
    let e = match handles[0].wait_timeout(Duration::from_secs(20)) {
        Err(e) => e,
        Ok(r) => panic!("the surviving part cannot finish without its peer: {r:?}"),
    };
    assert!(matches!(e, Error::ChannelClosed(_) | Error::Network { .. }), "{e:?}");
    assert!(e.to_string().contains("stopped") || e.to_string().contains("lost the data connection"), "{e}");
    assert!(matches!(handles[1].wait(), Err(Error::Cancelled(_))));
    for h in &handles {
        assert_eq!(h.live_tasks(), 0);
    }
    Ok(())
}

#[test]
fn a_part_waiting_for_a_peer_that_never_comes_can_be_cancelled() -> Result<()> {
    let servers = servers(2)?;
    let args = Args { n: 1000, keys: 10 };
    // Only part 0 is started; its senders wait for part 1's answer.
    let h = start_parts("counting", config(2)?, &args, &[0, 1], &servers, 1)?.remove(0);
    std::thread::sleep(Duration::from_millis(300));
    assert!(h.wait_timeout(Duration::ZERO)?.is_none(), "still waiting for its peer");
    h.cancel();
    let ended = h.wait_timeout(Duration::from_secs(5));
    assert!(matches!(ended, Err(Error::Cancelled(_))), "{ended:?}");
    assert_eq!(h.live_tasks(), 0);
    Ok(())
}

#[test]
fn records_that_trickle_cross_without_waiting_for_a_full_frame() -> Result<()> {
    // Frames to another process fill up to 4 batches (4096 records here) before they are sent;
    // at 20 records a second that takes minutes. The source's processing-time ticks flush them.
    let servers = servers(2)?;
    let mut c = ExecutionConfig::default();
    c.set("parallelism.default", "2")?;
    c.set("pipeline.auto-watermark-interval", "100ms")?;
    let handles = start_parts("trickle", c, &Args { n: 0, keys: 0 }, &[0, 1], &servers, 2)?;
    // The source runs in part 0: every record part 1's mapper gets crossed the network.
    let started = std::time::Instant::now();
    let crossed = loop {
        let n = handles[1].counts().get(1).map(|v| v.records_in).unwrap_or(0);
        if n > 0 || started.elapsed() > Duration::from_secs(5) {
            break n;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let waited = started.elapsed();
    for h in &handles {
        h.cancel();
    }
    assert!(crossed > 0, "no record crossed within 5 s");
    assert!(waited < Duration::from_secs(2), "the first records took {waited:?} to cross");
    // Part 0 is cancelled first; part 1 may see its peer's connections close before its own
    // cancellation comes, which ends it as in the test above (a JobManager cancelling the job
    // takes either end).
    for (i, h) in handles.iter().enumerate() {
        let ended = h.wait_timeout(Duration::from_secs(10));
        let peer_gone = i == 1
            && ended.as_ref().is_err_and(|e| {
                let text = e.to_string();
                text.contains("stopped") || text.contains("lost the data connection")
            });
        assert!(matches!(ended, Err(Error::Cancelled(_))) || peer_gone, "part {i}: {ended:?}");
        assert_eq!(h.live_tasks(), 0);
    }
    Ok(())
}
