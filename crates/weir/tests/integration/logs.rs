//! Flink's endpoints about the cluster's processes on a standalone cluster (`weir cluster start`
//! writes each process's output to a log file): the JobManager's configuration (secrets hidden),
//! environment, logs and threads, and each TaskManager's, fetched over its control connection.

use std::process::Command;

use serde_json::Value;

use crate::cluster::{WEIR, http, http_text, text};

#[test]
fn logs_stdout_threads_config_and_environment_of_the_jobmanager_and_taskmanagers() {
    let parent = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let dir = parent.path().join("cluster");
    let d = dir.to_string_lossy().to_string();
    let run = |args: &[&str]| Command::new(WEIR).args(args).output().unwrap_or_else(|e| panic!("{e}"));
    let start = run(&[
        "cluster",
        "start",
        "--taskmanagers",
        "1",
        "--slots",
        "1",
        "--dir",
        &d,
        "-D",
        "rest.port=0",
        "-D",
        "jobmanager.rpc.port=0",
        "-D",
        "security.ssl.rest.key-password=hunter2",
        "-D",
        "heartbeat.interval=1s",
    ]);
    assert!(start.status.success(), "{}", text(&start.stderr));
    let rest = text(&start.stdout).trim().trim_start_matches("http://").to_string();
    let get = |path: &str| http("GET", &rest, path, None);
    let get_text = |path: &str| http_text("GET", &rest, path, None);
    let checks = std::panic::catch_unwind(|| {
        // Configuration: explicit keys, their secrets hidden; the addresses it serves on.
        let (status, config) = get("/jobmanager/config");
        assert_eq!(status, 200, "{config}");
        let entries = config.as_array().cloned().unwrap_or_default();
        let value = |k: &str| entries.iter().find(|e| e["key"] == k).map(|e| e["value"].clone()).unwrap_or(Value::Null);
        assert_eq!(value("security.ssl.rest.key-password"), "******", "{config}");
        assert_eq!(value("heartbeat.interval"), "1s", "{config}");
        assert!(value("jobmanager.rpc.port").as_str().is_some_and(|p| p.parse::<u16>().is_ok_and(|p| p > 0)));
        assert!(!config.to_string().contains("hunter2"), "{config}");
        let (_, web) = get("/config");
        assert!(!web.to_string().contains("hunter2"), "{web}");
        let (status, env) = get("/jobmanager/environment");
        assert_eq!(status, 200);
        assert!(env["jvm"]["version"].as_str().is_some_and(|v| v.contains("weir")), "{env}");
        assert!(env["classpath"][0].as_str().is_some_and(|p| !p.is_empty()), "{env}");
        // The JobManager's log directory: its own log and the TaskManager's.
        let (status, logs) = get("/jobmanager/logs");
        assert_eq!(status, 200, "{logs}");
        let names: Vec<String> = logs["logs"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|l| l["name"].as_str().map(String::from))
            .collect();
        assert!(names.contains(&"jobmanager.log".to_string()), "{logs}");
        assert!(logs["logs"][0]["size"].as_u64().is_some() && logs["logs"][0]["mtime"].as_i64().is_some(), "{logs}");
        let (status, log) = get_text("/jobmanager/log");
        assert_eq!(status, 200, "{log}");
        assert!(log.contains("weir jobmanager ready"), "{log}");
        let (status, named) = get_text("/jobmanager/logs/jobmanager.log");
        assert_eq!(status, 200);
        assert!(named.contains("weir jobmanager ready"));
        for bad in
            ["/jobmanager/logs/cluster.json", "/jobmanager/logs/..%2Fcluster.json", "/jobmanager/logs/nothing.log"]
        {
            let (status, body) = get_text(bad);
            assert_eq!(status, 404, "{bad}: {body}");
        }
        let (status, threads) = get("/jobmanager/thread-dump");
        assert_eq!(status, 200);
        let infos = threads["threadInfos"].as_array().cloned().unwrap_or_default();
        assert!(infos.len() > 2, "{threads}");
        assert!(infos.iter().all(|t| t["stringifiedThreadInfo"].as_str().is_some_and(|s| s.contains("tid="))));
        // The TaskManager's, asked through the JobManager.
        let (_, tms) = get("/taskmanagers");
        let tm = tms["taskmanagers"][0]["id"].as_str().unwrap_or_default().to_string();
        assert!(!tm.is_empty(), "{tms}");
        let (status, log) = get_text(&format!("/taskmanagers/{tm}/log"));
        assert_eq!(status, 200, "{log}");
        assert!(log.contains(&format!("weir taskmanager ready: id={tm}")), "its own log: {log}");
        let (status, stdout) = get_text(&format!("/taskmanagers/{tm}/stdout"));
        assert_eq!(status, 200, "{stdout}");
        let (status, logs) = get(&format!("/taskmanagers/{tm}/logs"));
        assert_eq!(status, 200, "{logs}");
        assert!(logs["logs"].as_array().is_some_and(|l| !l.is_empty()), "{logs}");
        let (status, threads) = get(&format!("/taskmanagers/{tm}/thread-dump"));
        assert_eq!(status, 200);
        assert!(threads["threadInfos"].as_array().is_some_and(|t| t.len() > 2), "{threads}");
        let (status, body) = get(&format!("/taskmanagers/{tm}/logs/nothing.log"));
        assert_eq!(status, 404, "{body}");
        assert!(body["errors"][0].as_str().is_some_and(|e| e.contains("nothing.log")), "{body}");
        let (status, _) = get("/taskmanagers/no-such-tm/log");
        assert_eq!(status, 404);
    });
    let stop = run(&["cluster", "stop", "--dir", &d]);
    assert!(stop.status.success(), "{}", text(&stop.stderr));
    if let Err(panic) = checks {
        std::panic::resume_unwind(panic);
    }
}

#[test]
fn a_process_logging_to_a_pipe_says_it_has_no_log_file() {
    let c = crate::cluster::Cluster::new(1, 1);
    let (status, body) = c.get("/jobmanager/log");
    assert_eq!(status, 404, "{body}");
    assert!(body["errors"][0].as_str().is_some_and(|e| e.contains("terminal or a pipe")), "{body}");
    let (status, threads) = c.get("/jobmanager/thread-dump");
    assert_eq!(status, 200, "{threads}");
}
