//! The option registry across processes: every job key is taken by the JobManager and the
//! TaskManagers as a default for their jobs and reaches the job; what a client sets travels with
//! its job; settings that contradict each other stop a process at start, with a clear error.

use std::process::{Command, Stdio};
use std::time::Duration;

use weir_core::config::Scope;
use weir_core::config::registry;

use super::cluster::{Cluster, job_id, text, wait_exit};

const WEIR: &str = env!("CARGO_BIN_EXE_weir");

/// `-D key=value` for every job key, with its registry example (directories under `tmp`; no
/// savepoint to start from, which would make every job restore).
fn every_job_key(tmp: &std::path::Path) -> Vec<(String, String)> {
    registry::options()
        .iter()
        .filter(|o| o.scope == Scope::Job && o.key != "execution.savepoint.path")
        .map(|o| {
            let value = match o.key {
                "execution.checkpointing.dir" => tmp.join("checkpoints").display().to_string(),
                "execution.checkpointing.savepoint-dir" => tmp.join("savepoints").display().to_string(),
                "state.backend.disk.dir" => tmp.join("state").display().to_string(),
                _ => o.example.to_string(),
            };
            (o.key.to_string(), value)
        })
        .collect()
}

#[test]
fn job_keys_given_to_the_cluster_processes_reach_their_jobs_under_the_jobs_own() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let keys = every_job_key(tmp.path());
    let defines: Vec<String> = keys.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let args: Vec<&str> = defines.iter().flat_map(|d| ["-D", d.as_str()]).collect();
    // The JobManager and the TaskManager accept every job key.
    let mut c = Cluster::with(&args, 0, 1);
    c.add_taskmanager_with(4, &args);
    c.wait_for(|o| o["taskmanagers"] == 1, "/overview");
    let (_, config) = c.get("/config");
    let rendered = |key: &str, value: &str| {
        registry::parse(key, value).map(|(_, v)| v.render()).unwrap_or_else(|e| panic!("{key}: {e}"))
    };
    for (k, v) in &keys {
        assert_eq!(config["weir-job-defaults"][k], rendered(k, v), "{k} did not reach the JobManager: {config}");
    }
    // A job submitted without settings of its own runs with the cluster's, but for what it set
    // (its batch size) and for what shaped its graph where it was built (its parallelism, -p here,
    // and its key groups, the client's default): those travel with it.
    let out = c.weir(&[
        "run",
        "-t",
        "remote",
        "-d",
        "generate",
        "--args",
        r#"{"rate": 500}"#,
        "-p",
        "1",
        "-D",
        "execution.batch-size=11",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let id = job_id(&out);
    let (status, job) = c.get(&format!("/jobs/{id}/config"));
    assert_eq!(status, 200, "{job}");
    let settings = &job["weir-settings"];
    for (k, v) in &keys {
        let want = match k.as_str() {
            "parallelism.default" => "1".to_string(),
            "pipeline.max-parallelism" => "128".to_string(),
            "execution.batch-size" => "11".to_string(),
            _ => rendered(k, v),
        };
        assert_eq!(settings[k], want, "{k}: {job}");
    }
    assert_eq!(settings["state.backend.disk.timer-service.factory"], "heap", "{job}");
    // The job runs on the TaskManager with them: on the disk backend, taking checkpoints every
    // 300 ms into the directory given.
    c.wait_for(|j| j["counts"]["completed"].as_u64().unwrap_or(0) >= 1, &format!("/jobs/{id}/checkpoints"));
    assert!(tmp.path().join("checkpoints").is_dir(), "no checkpoint directory where the default said");
    assert_eq!(c.job_state(&id), "RUNNING");
    let cancel = c.weir(&["cancel", &id]);
    assert!(cancel.status.success(), "{}", text(&cancel.stderr));
    c.wait_end(&id, Duration::from_secs(20));
}

#[test]
fn a_jobmanager_with_the_disk_timer_switch_starts_and_serves_rest() {
    let c = Cluster::with(&["-D", "state.backend.disk.timer-service.factory=heap"], 0, 1);
    let (status, overview) = c.get("/overview");
    assert_eq!(status, 200, "{overview}");
    assert_eq!(c.get("/config").1["weir-job-defaults"]["state.backend.disk.timer-service.factory"], "heap");
}

#[test]
fn contradicting_restart_settings_stop_a_jobmanager_at_start() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let mut child = Command::new(WEIR)
        .args(["jobmanager", "-D", "rest.port=0", "-D", "jobmanager.rpc.port=0"])
        .args(["-D", "restart-strategy.type=exponential-delay"])
        .args(["-D", "restart-strategy.exponential-delay.initial-backoff=2min"])
        .args(["-D", "restart-strategy.exponential-delay.max-backoff=1min"])
        .env("TMPDIR", tmp.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start weir: {e}"));
    let status = wait_exit(&mut child, "a JobManager with contradicting restart settings");
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut e, &mut stderr);
    }
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("initial-backoff (120000 ms) is longer than"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn unknown_keys_name_the_closest_known_key_in_every_role() {
    for role in ["jobmanager", "taskmanager"] {
        let out = Command::new(WEIR)
            .args([role, "-D", "heartbeat.timout=5s"])
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run weir: {e}"));
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{role}: {err}");
        assert!(err.contains("-D heartbeat.timout=5s") && err.contains("did you mean 'heartbeat.timeout'"), "{err}");
    }
}
