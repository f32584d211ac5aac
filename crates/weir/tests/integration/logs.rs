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
        let (_, detail) = get(&format!("/taskmanagers/{tm}"));
        let heap = &detail["metrics"];
        assert!(heap["heapUsed"].as_u64().is_some() && heap["garbageCollectors"] == serde_json::json!([]), "{detail}");
        assert_eq!(detail["memoryConfiguration"]["frameworkHeap"], 0, "{detail}");
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

/// The endpoints Flink's dashboard reads for a job and its vertices, on a running job: the shapes
/// its pages need (from Flink's REST message classes), with weir's figures in them.
#[test]
fn the_vertex_application_and_cancel_endpoints_flinks_dashboard_reads() {
    let c = crate::cluster::Cluster::new(2, 2);
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let id = c.generate_checkpointed(r#"{"rate": 2000}"#, "2", "300ms", dir.path());
    // Running, with figures reported for every subtask.
    let job = c.wait_for(
        |j| {
            j["state"] == "RUNNING"
                && j["vertices"].as_array().is_some_and(|v| {
                    v.iter().all(|x| {
                        x["metrics"]["write-records"].as_u64().unwrap_or(0) > 0
                            || x["metrics"]["read-records"].as_u64().unwrap_or(0) > 0
                    })
                })
        },
        &format!("/jobs/{id}"),
    );
    assert_eq!(job["plan"]["jid"], id.as_str(), "the graph's calls are built from plan.jid");
    assert!(job["vertices"].as_array().is_some_and(|v| v.iter().all(|x| x["duration"].as_i64().is_some())), "{job}");
    assert_eq!(job["timestamps"].as_object().map(|t| t.len()), Some(11), "{job}");
    assert!(job["status-counts"]["RUNNING"].as_u64().is_some_and(|n| n > 0), "{job}");
    let vid = job["vertices"][0]["id"].as_str().unwrap_or_default().to_string();
    let v = |path: &str| c.get(&format!("/jobs/{id}/vertices/{vid}{path}"));
    let start = std::time::Instant::now();
    let details = loop {
        let (status, d) = v("");
        assert_eq!(status, 200, "{d}");
        if d["subtasks"].as_array().is_some_and(|s| s.len() == 2)
            || start.elapsed() > std::time::Duration::from_secs(20)
        {
            break d;
        }
        std::thread::sleep(std::time::Duration::from_millis(300));
    };
    let subtasks = details["subtasks"].as_array().cloned().unwrap_or_default();
    assert_eq!(subtasks.len(), 2, "{details}");
    for (i, s) in subtasks.iter().enumerate() {
        assert_eq!(s["subtask"], i, "{details}");
        assert_eq!(s["status"], "RUNNING", "{details}");
        assert!(s["taskmanager-id"].as_str().is_some_and(|t| !t.is_empty()), "{details}");
        assert!(s["metrics"]["write-records"].as_u64().is_some(), "{details}");
    }
    assert!(details["aggregated"]["metrics"]["write-records"]["sum"].as_f64().is_some(), "{details}");
    let (status, tms) = v("/taskmanagers");
    assert_eq!(status, 200);
    let listed: u64 = tms["taskmanagers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| t["status-counts"]["RUNNING"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(listed, 2, "{tms}");
    let (status, bp) = v("/backpressure");
    assert_eq!(status, 200);
    assert_eq!(bp["status"], "ok");
    assert!(
        bp["subtasks"]
            .as_array()
            .is_some_and(|s| s.len() == 2
                && s.iter().all(|x| x["ratio"].as_f64().is_some_and(|r| (0.0..=1.0).contains(&r))
                    && x["busyRatio"].as_f64().is_some())),
        "{bp}"
    );
    assert!(["ok", "low", "high"].contains(&bp["backpressure-level"].as_str().unwrap_or_default()), "{bp}");
    assert_eq!(v("/accumulators").1["user-accumulators"], serde_json::json!([]));
    assert_eq!(v("/subtasks/accumulators").1["subtasks"].as_array().map(Vec::len), Some(2));
    assert_eq!(v("/subtasktimes").1["subtasks"][0]["timestamps"]["CREATED"].as_i64().map(|t| t > 0), Some(true));
    assert_eq!(v("/flamegraph?type=on_cpu").1["endTimestamp"], -2);
    assert_eq!(c.get(&format!("/jobs/{id}/vertices/99")).0, 404);
    assert_eq!(c.get("/jobmanager/profiler").1["profilingList"], serde_json::json!([]));
    let cps = c.wait_for(|c| c["counts"]["completed"].as_u64().unwrap_or(0) >= 2, &format!("/jobs/{id}/checkpoints"));
    let e2e = &cps["summary"]["end_to_end_duration"];
    assert!(e2e["max"].as_u64() >= e2e["min"].as_u64() && e2e["p99"].as_f64().is_some(), "{cps}");
    assert_eq!(cps["summary"]["persisted_data"]["max"], 0, "{cps}");
    let cid = cps["latest"]["completed"]["id"].as_u64().unwrap_or_default();
    let (_, detail) = c.get(&format!("/jobs/{id}/checkpoints/details/{cid}"));
    assert_eq!(detail["tasks"][&vid]["num_acknowledged_subtasks"], 2, "every vertex's subtasks acknowledged: {detail}");
    assert_eq!(c.get("/jars").1["files"], serde_json::json!([]));
    // Flink 2.x's applications: the job as a single-job application.
    let (status, apps) = c.get("/applications/overview");
    assert_eq!(status, 200, "{apps}");
    let app = apps["applications"]
        .as_array()
        .and_then(|a| a.iter().find(|x| x["id"] == id.as_str()))
        .cloned()
        .unwrap_or_default();
    assert_eq!(app["status"], "RUNNING", "{apps}");
    assert!(app["name"].as_str().is_some_and(|n| n.starts_with("SingleJobApplication(")), "{apps}");
    let (_, one) = c.get(&format!("/applications/{id}"));
    assert_eq!(one["jobs"][0]["jid"], id.as_str(), "{one}");
    assert_eq!(
        c.get(&format!("/applications/{id}/exceptions")).1["exceptionHistory"]["entries"],
        serde_json::json!([])
    );
    // The dashboard's cancel: a GET.
    let (status, _) = c.get(&format!("/jobs/{id}/yarn-cancel"));
    assert_eq!(status, 202);
    let done = c.wait_for(|j| j["state"] == "CANCELED", &format!("/jobs/{id}"));
    assert_eq!(done["state"], "CANCELED");
    let (status, body) = crate::cluster::http("POST", &c.rest, &format!("/applications/{id}/cancel"), Some("{}"));
    assert_eq!(status, 404, "an ended application: {body}");
}
