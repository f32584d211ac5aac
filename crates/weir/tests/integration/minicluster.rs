//! The mini cluster: a JobManager and TaskManagers in the test's own process, over the real
//! protocols on loopback. Jobs are this test binary's own. The JobManager's own behaviour (slots,
//! cancellation, restarts, REST errors) is tested here; `cluster.rs` and `cluster_failures.rs`
//! keep what needs processes (the CLI's own cluster, kill -9, a stopped process, ports).

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use weir::{Job, JobStatus, MiniCluster, Registry, StreamEnv};

use super::cluster::{bundled, http, text};

const WEIR: &str = env!("CARGO_BIN_EXE_weir");

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

/// Polls REST `path` on `rest` until `ok` holds (bounded: 20 s).
fn wait_rest(rest: &str, path: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let start = Instant::now();
    loop {
        let (_, v) = http("GET", rest, path, None);
        if ok(&v) {
            return v;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "{path} never satisfied the condition: {v}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn state(rest: &str, id: &weir::JobId) -> String {
    http("GET", rest, &format!("/jobs/{id}"), None).1["state"].as_str().unwrap_or_default().to_string()
}

/// The `weir` CLI, against the mini cluster's REST endpoint.
fn cli(rest: &str, args: &[&str]) -> std::process::Output {
    Command::new(WEIR).args(args).args(["-m", rest]).output().unwrap_or_else(|e| panic!("cannot run weir: {e}"))
}

#[test]
fn jobs_share_and_wait_for_slots_and_cancel_through_rest_and_the_cli() -> weir::Result<()> {
    let cluster = MiniCluster::start(registry(), 1, 2)?;
    let rest = cluster.rest_address();
    let one = [("parallelism.default", "1")];
    let a = cluster.submit(&SLOW, (1_000_000, 200.0), &one)?;
    let b = cluster.submit(&SLOW, (1_000_000, 200.0), &one)?;
    wait_rest(&rest, "/overview", |o| o["slots-available"] == 0);
    // A third job needs both slots: it waits.
    let w = cluster.submit(&SLOW, (1_000_000, 200.0), &[("parallelism.default", "2")])?;
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(state(&rest, &w), "CREATED");
    for id in [&a, &b] {
        assert_eq!(state(&rest, id), "RUNNING");
        let (status, _) = http("PATCH", &rest, &format!("/jobs/{id}?mode=cancel"), None);
        assert_eq!(status, 202);
    }
    wait_rest(&rest, &format!("/jobs/{w}"), |j| j["state"] == "RUNNING");
    assert_eq!(state(&rest, &a), "CANCELED");
    let out = cli(&rest, &["cancel", &w.to_string()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    wait_rest(&rest, &format!("/jobs/{w}"), |j| j["state"] == "CANCELED");
    wait_rest(&rest, "/overview", |o| o["slots-available"] == 2);
    Ok(())
}

#[test]
fn without_a_restart_strategy_a_job_whose_taskmanager_is_lost_stays_failed() -> weir::Result<()> {
    let mut cluster = MiniCluster::start(registry(), 2, 1)?;
    let rest = cluster.rest_address();
    let id = cluster.submit(&SLOW, (1_000_000, 100.0), &[("parallelism.default", "1")])?;
    let job = wait_rest(&rest, &format!("/jobs/{id}"), |j| j["state"] == "RUNNING");
    let tm = job["weir-taskmanagers"][0].as_str().unwrap_or_default().to_string();
    cluster.stop_taskmanager(&tm)?;
    assert_eq!(cluster.wait(id, WAIT)?, JobStatus::Failed);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(cluster.status(id)?, JobStatus::Failed, "no restart strategy: no restart");
    let exceptions = cluster.exceptions(id);
    assert!(exceptions.iter().any(|e| e.contains(&tm) && e.contains("was lost")), "{exceptions:?}");
    Ok(())
}

#[test]
fn a_job_that_cannot_get_its_slots_fails_after_the_slot_request_timeout() -> weir::Result<()> {
    let cluster = MiniCluster::with_settings(registry(), 1, 1, &[("slot.request.timeout", "300ms")])?;
    let rest = cluster.rest_address();
    let id = cluster.submit(&COUNTS, 70, &[("parallelism.default", "2")])?;
    assert_eq!(cluster.wait(id, WAIT)?, JobStatus::Failed);
    let (_, ex) = http("GET", &rest, &format!("/jobs/{id}/exceptions"), None);
    let root = ex["root-exception"].as_str().unwrap_or_default();
    assert!(root.contains("could not get 2 slots within 300 ms") && root.contains("add TaskManagers or slots"), "{ex}");
    // An attached client reports the failure and exits non-zero.
    let out = cli(&rest, &["run", "-t", "remote", "generate", "--args", r#"{"count": 10}"#, "-p", "2"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("could not get 2 slots"), "{}", text(&out.stderr));
    Ok(())
}

#[test]
fn malformed_requests_get_4xx_with_a_json_error() -> weir::Result<()> {
    let cluster = MiniCluster::start(registry(), 0, 1)?;
    let rest = cluster.rest_address();
    for (method, path, body, want) in [
        ("GET", "/jobs/not-a-job-id", None, 400),
        ("GET", "/jobs/0123456789abcdef0123456789abcdef", None, 404),
        ("PATCH", "/jobs/0123456789abcdef0123456789abcdef?mode=stop", None, 400),
        ("POST", "/jobs", Some("{not json"), 400),
        ("POST", "/jobs", Some(r#"{"graph": 1}"#), 400),
        ("GET", "/no/such/path", None, 404),
        ("GET", "/taskmanagers/nobody", None, 404),
    ] {
        let (status, v) = http(method, &rest, path, body);
        assert_eq!(status, want, "{method} {path}: {v}");
        assert!(v["errors"][0].is_string(), "{method} {path}: {v}");
    }
    // A job graph altered after it was built, or written by another format version, is refused.
    let args: Value = serde_json::from_str(&bundled()).unwrap_or(Value::Null);
    let graph = weir::Driver::local(weir::builtin::registry()).job_graph("wordcount", &args)?;
    let mut altered = graph.clone();
    altered.plan.vertices[1].name = "Renamed".into();
    let mut foreign = graph.clone();
    foreign.format_version = 99;
    for (g, want) in [(altered, "fingerprint does not match"), (foreign, "format version 99")] {
        let body = serde_json::json!({ "graph": g }).to_string();
        let (status, v) = http("POST", &rest, "/jobs", Some(&body));
        assert_eq!(status, 400, "{v}");
        assert!(v["errors"][0].as_str().unwrap_or_default().contains(want), "{v}");
    }
    Ok(())
}

#[test]
fn ended_jobs_leave_the_jobmanager_beyond_its_capacity_and_after_their_time() -> weir::Result<()> {
    let cluster = MiniCluster::with_settings(registry(), 1, 2, &[("jobstore.max-capacity", "2")])?;
    let rest = cluster.rest_address();
    let mut ids = Vec::new();
    for _ in 0..4 {
        let id = cluster.submit(&COUNTS, 70, &[("parallelism.default", "1")])?;
        assert_eq!(cluster.wait(id, WAIT)?, JobStatus::Finished);
        // Fetched, as a client does: only then may it go before its time.
        let (_, result) = http("GET", &rest, &format!("/jobs/{id}/execution-result"), None);
        assert_eq!(result["status"]["id"], "COMPLETED", "{result}");
        ids.push(id);
        // Ends a millisecond apart at least, so that which ended first is clear.
        std::thread::sleep(Duration::from_millis(2));
    }
    // The two that ended last stay; the others go (404, as an unknown job).
    let listed = wait_rest(&rest, "/jobs", |v| v["jobs"].as_array().is_some_and(|j| j.len() == 2));
    for id in &ids[2..] {
        assert!(listed["jobs"].as_array().into_iter().flatten().any(|j| j["id"] == id.to_string()), "{listed}");
    }
    assert_eq!(http("GET", &rest, &format!("/jobs/{}", ids[0]), None).0, 404);
    // A job past its time goes too, and a running one stays whatever its age.
    let cluster = MiniCluster::with_settings(registry(), 1, 2, &[("jobstore.expiration-time", "1s")])?;
    let rest = cluster.rest_address();
    let running = cluster.submit(&SLOW, (1_000_000, 100.0), &[("parallelism.default", "1")])?;
    let ended = cluster.submit(&COUNTS, 70, &[("parallelism.default", "1")])?;
    assert_eq!(cluster.wait(ended, WAIT)?, JobStatus::Finished);
    wait_rest(&rest, &format!("/jobs/{ended}"), |v| v["errors"].is_array());
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(cluster.status(running)?, JobStatus::Running);
    Ok(())
}

#[test]
fn a_job_needing_more_slots_than_the_cluster_may_offer_is_refused_at_submission() -> weir::Result<()> {
    let cluster = MiniCluster::with_settings(registry(), 1, 2, &[("slotmanager.number-of-slots.max", "2")])?;
    let e = cluster.submit(&COUNTS, 70, &[("parallelism.default", "3")]).err().map(|e| e.to_string());
    let e = e.unwrap_or_default();
    assert!(e.contains("needs 3 slots") && e.contains("slotmanager.number-of-slots.max"), "{e}");
    let id = cluster.submit(&COUNTS, 70, &[("parallelism.default", "2")])?;
    assert_eq!(cluster.wait(id, WAIT)?, JobStatus::Finished);
    Ok(())
}

/// The newest completed checkpoint's directory under `root` (`<root>/<job>/chk-N`), and `N`.
fn newest_checkpoint(root: &std::path::Path) -> Option<(u64, std::path::PathBuf)> {
    let jobs = std::fs::read_dir(root).ok()?.flatten();
    jobs.flat_map(|j| std::fs::read_dir(j.path()).into_iter().flatten().flatten())
        .filter_map(|c| {
            let n = c.file_name().to_str()?.strip_prefix("chk-")?.parse::<u64>().ok()?;
            c.path().join("_metadata").exists().then(|| (n, c.path()))
        })
        .max()
}

#[test]
fn a_damaged_checkpoint_is_skipped_and_the_job_goes_on_from_the_one_before() -> weir::Result<()> {
    let io = |e: std::io::Error| weir::Error::internal(e.to_string());
    let dir = tempfile::tempdir().map_err(io)?;
    let restart = [
        ("restart-strategy.type", "fixed-delay"),
        ("restart-strategy.fixed-delay.attempts", "5"),
        ("restart-strategy.fixed-delay.delay", "10ms"),
    ];
    let mut cluster = MiniCluster::with_settings(registry(), 2, 1, &restart)?;
    let rest = cluster.rest_address();
    let cp = dir.path().display().to_string();
    let settings = [
        ("parallelism.default", "1"),
        ("execution.checkpointing.interval", "1s"),
        ("execution.checkpointing.dir", cp.as_str()),
        ("execution.checkpointing.num-retained", "3"),
    ];
    let id = cluster.submit(&SLOW, (6000, 1000.0), &settings)?;
    wait_rest(&rest, &format!("/jobs/{id}/checkpoints"), |v| v["counts"]["completed"].as_u64().unwrap_or(0) >= 2);
    // At once (the next checkpoint is a second away): one byte of the newest checkpoint's state
    // flipped, and the TaskManager running the job stopped.
    let (damaged, chk) = newest_checkpoint(dir.path()).ok_or_else(|| weir::Error::internal("no checkpoint"))?;
    let state = std::fs::read_dir(&chk)
        .map_err(io)?
        .flatten()
        .map(|f| f.path())
        .filter(|p| p.file_name().is_some_and(|n| n != "_metadata"))
        .filter(|p| std::fs::metadata(p).is_ok_and(|m| m.len() > 8))
        .max_by_key(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .ok_or_else(|| weir::Error::internal(format!("no state file in {}", chk.display())))?;
    let mut bytes = std::fs::read(&state).map_err(io)?;
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&state, bytes).map_err(io)?;
    let (_, job) = http("GET", &rest, &format!("/jobs/{id}"), None);
    let victim = job["weir-taskmanagers"][0].as_str().unwrap_or_default().to_string();
    cluster.stop_taskmanager(&victim)?;
    // It finishes: the run that restored the damaged checkpoint failed saying so, and the next
    // one restored the checkpoint before it.
    assert_eq!(cluster.wait(id, WAIT)?, JobStatus::Finished, "{:?}", cluster.exceptions(id));
    let exceptions = cluster.exceptions(id);
    assert!(
        exceptions.iter().any(|e| e.contains("damaged")),
        "no run failed on the damaged checkpoint {damaged}: {exceptions:?}"
    );
    let (_, cps) = http("GET", &rest, &format!("/jobs/{id}/checkpoints"), None);
    let restored = cps["latest"]["restored"]["id"].as_u64().unwrap_or(u64::MAX);
    assert!(restored < damaged, "restored {restored}, damaged {damaged}: {cps}");
    Ok(())
}
