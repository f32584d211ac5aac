//! The mini cluster: a JobManager and TaskManagers in the test's own process, over the real
//! protocols on loopback. Jobs are this test binary's own.

use std::collections::BTreeMap;
use std::time::Duration;

use weir::{Job, JobStatus, MiniCluster, Registry, StreamEnv};

use super::cluster::http;

/// Counts of `0..n` by `i % 7`, keyed across `parallelism` subtasks, collected.
fn counts(env: &mut StreamEnv, n: u64) -> weir::Result<()> {
    env.from_sequence(0, n as i64 - 1)
        .map(|i| ((i % 7) as u64, 1u64))
        .key_by(|t: &(u64, u64)| t.0)
        .sum(|t| &mut t.1)
        .collect("counts");
    Ok(())
}
static COUNTS: Job<u64> = Job::new("mini-counts", counts);

/// Numbers at `rate` per second until `count`, keyed and summed, discarded: a job that runs a while.
fn slow(env: &mut StreamEnv, (count, rate): (u64, f64)) -> weir::Result<()> {
    env.datagen(Some(count), Some(rate), |i| i)
        .map(|i| (i % 10, i))
        .key_by(|t: &(u64, u64)| t.0)
        .sum(|t| &mut t.1)
        .discard();
    Ok(())
}
static SLOW: Job<(u64, f64)> = Job::new("mini-slow", slow);

fn registry() -> Registry {
    Registry::new().register(&COUNTS).register(&SLOW)
}

const WAIT: Duration = Duration::from_secs(30);

#[test]
fn a_job_across_two_taskmanagers_exchanges_records_and_collects_every_count() -> weir::Result<()> {
    // One slot each: subtask 0 runs on one TaskManager, subtask 1 on the other, and the keyed
    // exchange crosses between them over TCP.
    let cluster = MiniCluster::start(registry(), 2, 1)?;
    let id = cluster.submit(&COUNTS, 7000, &[("parallelism.default", "2")])?;
    assert_eq!(cluster.wait(id, WAIT)?, JobStatus::Finished, "{:?}", cluster.exceptions(id));
    let result = cluster.result(id).ok_or_else(|| weir::Error::internal("no result"))?;
    let mut last: BTreeMap<u64, u64> = BTreeMap::new();
    for part in result.collected_by_subtask::<(u64, u64)>("counts")? {
        for (k, n) in part {
            let e = last.entry(k).or_default();
            *e = (*e).max(n);
        }
    }
    assert_eq!(last, (0..7).map(|k| (k, 1000)).collect::<BTreeMap<_, _>>());
    // Both TaskManagers ran a part: the REST endpoint saw two.
    let (status, overview) = http("GET", &cluster.rest_address(), "/overview", None);
    assert_eq!(status, 200);
    assert_eq!(overview["taskmanagers"], 2, "{overview}");
    assert_eq!(overview["slots-available"], 2, "a finished job holds no slots: {overview}");
    Ok(())
}

#[test]
fn a_stopped_taskmanager_fails_its_job_over_to_a_spare() -> weir::Result<()> {
    let settings = [("restart-strategy.type", "fixed-delay"), ("restart-strategy.fixed-delay.delay", "50ms")];
    let mut cluster = MiniCluster::with_settings(registry(), 3, 1, &settings)?;
    let id = cluster.submit(&SLOW, (3000, 3000.0), &[("parallelism.default", "2")])?;
    let deadline = std::time::Instant::now() + WAIT;
    while cluster.status(id)? != JobStatus::Running {
        assert!(std::time::Instant::now() < deadline, "the job never ran");
        std::thread::sleep(Duration::from_millis(5));
    }
    let (_, job) = http("GET", &cluster.rest_address(), &format!("/jobs/{id}"), None);
    let victim = job["weir-taskmanagers"][0].as_str().unwrap_or_default().to_string();
    assert!(!victim.is_empty(), "{job}");
    cluster.stop_taskmanager(&victim)?;
    assert_eq!(cluster.wait(id, WAIT)?, JobStatus::Finished, "{:?}", cluster.exceptions(id));
    let exceptions = cluster.exceptions(id);
    assert_eq!(exceptions.len(), 1, "one failure, then a run that finished: {exceptions:?}");
    assert!(exceptions[0].contains(&victim), "the failure names the lost TaskManager: {exceptions:?}");
    assert_eq!(cluster.taskmanagers().len(), 2);
    Ok(())
}

#[test]
fn jobs_wait_for_slots_and_checkpoint_on_a_mini_cluster() -> weir::Result<()> {
    let dir = tempfile::tempdir().map_err(|e| weir::Error::io("tempdir", "/tmp", e))?;
    let mut cluster = MiniCluster::start(registry(), 1, 1)?;
    let cp = dir.path().display().to_string();
    let settings = [
        ("parallelism.default", "1"),
        ("execution.checkpointing.interval", "50ms"),
        ("execution.checkpointing.dir", &cp),
    ];
    let first = cluster.submit(&SLOW, (1500, 3000.0), &settings)?;
    let second = cluster.submit(&SLOW, (10, 1000.0), &[("parallelism.default", "1")])?;
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(cluster.status(second)?, JobStatus::Created, "the only slot is taken: it waits");
    assert_eq!(cluster.wait(first, WAIT)?, JobStatus::Finished, "{:?}", cluster.exceptions(first));
    let (_, cps) = http("GET", &cluster.rest_address(), &format!("/jobs/{first}/checkpoints"), None);
    assert!(cps["counts"]["completed"].as_u64().unwrap_or(0) >= 2, "{cps}");
    assert_eq!(cluster.wait(second, WAIT)?, JobStatus::Finished);
    // A TaskManager added later takes jobs too.
    cluster.add_taskmanager()?;
    let third = cluster.submit(&COUNTS, 70, &[("parallelism.default", "2")])?;
    assert_eq!(cluster.wait(third, WAIT)?, JobStatus::Finished, "{:?}", cluster.exceptions(third));
    Ok(())
}

#[test]
fn bad_settings_and_unknown_taskmanagers_are_clear_errors() {
    let e = MiniCluster::with_settings(registry(), 1, 1, &[("heartbeat.timout", "5s")]).err().map(|e| e.to_string());
    assert!(e.as_deref().unwrap_or_default().contains("did you mean 'heartbeat.timeout'"), "{e:?}");
    let e = MiniCluster::start(registry(), 0, 1).and_then(|mut c| c.stop_taskmanager("nobody")).err();
    assert!(e.map(|e| e.to_string()).unwrap_or_default().contains("no TaskManager 'nobody'"));
    let e = MiniCluster::start(registry(), 0, 1)
        .and_then(|c| c.submit(&COUNTS, 7, &[("restart-strategy.type", "none")]))
        .err()
        .map(|e| e.to_string());
    assert!(e.as_deref().unwrap_or_default().contains("is a cluster key"), "{e:?}");
}

#[test]
fn every_path_the_openapi_document_lists_is_served_and_documented() -> weir::Result<()> {
    let cluster = MiniCluster::start(registry(), 1, 1)?;
    let rest = cluster.rest_address();
    let (status, doc) = http("GET", &rest, "/openapi.json", None);
    assert_eq!(status, 200);
    assert_eq!(doc["openapi"], "3.0.3");
    let paths = doc["paths"].as_object().map(|p| p.len()).unwrap_or(0);
    assert!(paths >= 20, "{doc}");
    let mut asked = 0;
    for (path, methods) in doc["paths"].as_object().into_iter().flatten() {
        for (method, op) in methods.as_object().into_iter().flatten() {
            assert!(op["summary"].as_str().is_some_and(|s| !s.is_empty()), "{method} {path}: {op}");
            assert!(op["responses"].as_object().is_some_and(|r| !r.is_empty()), "{method} {path}: {op}");
            // Every path parameter in the path is declared, with a schema.
            for name in path.split('/').filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}'))) {
                let declared =
                    op["parameters"].as_array().into_iter().flatten().any(|p| p["name"] == name && p["in"] == "path");
                assert!(declared, "{method} {path}: parameter {name} undeclared");
            }
            if method != "get" {
                continue;
            }
            // Served: a request to it reaches a handler (a 404 of the handler names the job, not
            // the path).
            let concrete = path
                .replace("{jobid}", &"0".repeat(32))
                .replace("{appid}", &"0".repeat(32))
                .replace("{id}", &"a".repeat(64))
                .replace("{triggerid}", "t")
                .replace("{tmid}", "taskmanager-1");
            for prefix in ["", "/v1"] {
                let (status, body) = http("GET", &rest, &format!("{prefix}{concrete}"), None);
                let fallback = body["errors"][0].as_str().is_some_and(|e| e.contains("no such REST path"));
                assert!(!fallback && status != 405, "GET {prefix}{concrete}: {status} {body}");
                let documented = op["responses"].get(status.to_string()).is_some();
                assert!(
                    documented,
                    "GET {prefix}{concrete} answered {status}, which the document does not list: {body}"
                );
                asked += 1;
            }
        }
    }
    assert!(asked >= 30, "{asked} requests");
    // A path the document does not list is the router's 404.
    let (status, body) = http("GET", &rest, "/nope", None);
    assert_eq!(status, 404, "{body}");
    assert!(body["errors"][0].as_str().unwrap_or_default().contains("see /openapi.json"), "{body}");
    Ok(())
}
