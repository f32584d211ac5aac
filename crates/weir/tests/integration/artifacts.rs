//! Artifacts: the blob store, uploads, and jobs of other programs in worker processes.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::cluster::{Cluster, RESTART, bundled, final_counts, gettysburg, http, job_id, reference_counts, text};

const WEIR: &str = env!("CARGO_BIN_EXE_weir");

/// `POST /artifacts/upload{query}` with `body`, announcing `announced` bytes; with `close_early`
/// the connection's sending side closes after the body, as a client that broke off would.
fn upload(address: &str, query: &str, body: &[u8], announced: usize) -> (u16, Value) {
    let mut s = std::net::TcpStream::connect(address).unwrap_or_else(|e| panic!("cannot connect to {address}: {e}"));
    let head = format!(
        "POST /artifacts/upload{query} HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/octet-stream\r\n\
         Content-Length: {announced}\r\nConnection: close\r\n\r\n"
    );
    let _ = s.write_all(head.as_bytes());
    let _ = s.write_all(body);
    if body.len() < announced {
        let _ = s.shutdown(std::net::Shutdown::Write);
    }
    let mut response = String::new();
    let _ = s.read_to_string(&mut response);
    let status = response.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let json = response.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (status, serde_json::from_str(json).unwrap_or(Value::Null))
}

fn sha256_hex(path: &std::path::Path) -> String {
    let digest = weir_core::ArtifactDigest::of_file(path).unwrap_or_else(|e| panic!("{e}"));
    digest.hex().to_string()
}

fn errors(v: &Value) -> String {
    v["errors"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join("; "))
        .unwrap_or_default()
}

/// A REST endpoint, with the one helper the tests on a mini cluster need.
struct Rest<'a>(&'a str);

impl Rest<'_> {
    fn get(&self, path: &str) -> (u16, Value) {
        http("GET", self.0, path, None)
    }
}

/// The files in a directory, without the digest cache.
fn entries(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    v.retain(|n| n != ".digests");
    v.sort();
    v
}

/// Polls (bounded: 20 s) until `ok` holds.
fn eventually(what: &str, ok: impl Fn() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < Duration::from_secs(20), "{what} did not happen within 20 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The word counts a wordcount job collected, merged over its subtasks.
fn collected_counts(result: &Value) -> BTreeMap<String, u64> {
    let parts = &result["job-execution-result"]["weir-result"]["accumulators"]["counts"];
    let parts = parts.as_object().unwrap_or_else(|| panic!("no collected counts: {result}"));
    let mut finals = BTreeMap::new();
    for bytes in parts.values() {
        let bytes: Vec<u8> = serde_json::from_value(bytes.clone()).unwrap_or_default();
        let share: Vec<(String, u64)> = weir::connectors::collect::decode("counts", &bytes).unwrap_or_default();
        for (w, n) in share {
            let best = finals.entry(w).or_insert(0);
            *best = n.max(*best);
        }
    }
    finals
}

/// What the wordcount example counts (it splits on anything not alphanumeric).
fn example_counts() -> BTreeMap<String, u64> {
    let text_in = std::fs::read_to_string(gettysburg()).unwrap_or_default();
    let mut want = BTreeMap::new();
    for w in text_in.split(|ch: char| !ch.is_alphanumeric()).filter(|w| !w.is_empty()) {
        *want.entry(w.to_lowercase()).or_insert(0u64) += 1;
    }
    want
}

#[test]
fn a_user_program_is_its_own_cluster_image_and_runs_other_programs_jobs_in_worker_processes() {
    // The wordcount example plays JobManager, TaskManagers and client behind `--weir`.
    let program = crate::example("wordcount");
    let c = Cluster::of(&program, &["--weir"], &[], 2, 1);
    let out = c.weir(&["run", "-t", "remote", "wordcount", "--args", &bundled(), "-p", "2"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!text(&out.stderr).contains("Uploading"), "the cluster has its own program: {}", text(&out.stderr));
    let (_, result) = c.get(&format!("/jobs/{}/execution-result", job_id(&out)));
    let parts = result["job-execution-result"]["weir-result"]["accumulators"]["counts"].as_object().map(|o| o.len());
    assert_eq!(parts, Some(2), "one share per subtask: {result}");
    assert_eq!(collected_counts(&result), example_counts());
    // The stock weir executable is another program: its job is uploaded once, fetched by both
    // TaskManagers and run in worker processes of that program, spanning both TaskManagers.
    let out_dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let args = format!("{{\"input\": \"{}\", \"output\": \"{}\"}}", gettysburg(), out_dir.path().display());
    let run = || {
        Command::new(WEIR)
            .args(["run", "-t", "remote", "wordcount", "--args", &args, "-p", "2", "-m", &c.rest])
            .output()
            .unwrap_or_else(|e| panic!("cannot run weir: {e}"))
    };
    let out = run();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("Uploading artifact sha256:"), "{}", text(&out.stderr));
    assert_eq!(final_counts(out_dir.path()), reference_counts());
    let (_, job) = c.get(&format!("/jobs/{}", job_id(&out)));
    assert_eq!(job["vertices"][2]["metrics"]["read-records"], 272, "{job}");
    let weir_id = sha256_hex(std::path::Path::new(WEIR));
    for tm in 0..2 {
        let cache = c.blobs.path().join(format!("taskmanager-{tm}"));
        assert_eq!(entries(&cache), vec![weir_id.clone()], "TaskManager {tm} cached the artifact it fetched");
    }
    let (_, listed) = c.get("/artifacts");
    let ids: Vec<&str> =
        listed["artifacts"].as_array().map(|a| a.iter().filter_map(|x| x["id"].as_str()).collect()).unwrap_or_default();
    assert_eq!(ids, vec![sha256_hex(&program).as_str(), weir_id.as_str()], "{listed}");
    eventually("the workers exit after their job", || c.workers().is_empty());
    // Again: nothing is uploaded, and the cached artifact serves.
    let out = run();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!text(&out.stderr).contains("Uploading"), "{}", text(&out.stderr));
    // Its help names the program, with the prefix.
    let help = Command::new(&program).args(["--weir", "--help"]).output().map(|o| text(&o.stdout)).unwrap_or_default();
    assert!(help.contains("wordcount --weir"), "{help}");
}

/// Two jobs of `client`'s program on one TaskManager of `c`; a `kill -9` of one job's worker
/// process fails that job alone, which restarts and finishes; the other never notices.
fn a_worker_death_fails_only_its_job(c: &Cluster, client: &std::path::Path, prefix: &[&str]) {
    // 4 s each: long enough that both still run when the second one's worker has started, even
    // when a loaded machine is slow to start workers.
    let load = r#"{"count": 8000, "rate": 2000}"#;
    let submit = || {
        let out = Command::new(client)
            .args(prefix)
            .args(["run", "-t", "remote", "-d", "generate", "--args", load, "-p", "1", "-m", &c.rest])
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", client.display()));
        assert!(out.status.success(), "{}", text(&out.stderr));
        job_id(&out)
    };
    let (a, b) = (submit(), submit());
    // Every task of both jobs runs: each worker connected back and started its part.
    let tasks_run = |id: &str| {
        let (_, j) = c.get(&format!("/jobs/{id}"));
        j["state"] == "RUNNING" && j["tasks"]["running"] == j["tasks"]["total"]
    };
    eventually("both jobs run in workers", || tasks_run(&a) && tasks_run(&b) && c.workers().len() == 2);
    // Their secret is in their environment (readable by this user only), not on a command line
    // every user sees in `ps`.
    for (pid, _) in c.workers() {
        let cmdline = String::from_utf8_lossy(&std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default())
            .replace('\0', " ");
        assert!(!cmdline.contains("token"), "a secret on a worker's command line: {cmdline}");
        let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        assert!(
            String::from_utf8_lossy(&environ).contains("WEIR_WORKER_TOKEN="),
            "no token in worker {pid}'s environment"
        );
    }
    let victim = c.workers().into_iter().find(|(_, job)| *job == a).unwrap_or_else(|| panic!("no worker for {a}"));
    let killed = Command::new("kill").args(["-9", &victim.0.to_string()]).status().map(|s| s.success());
    assert_eq!(killed.ok(), Some(true), "kill -9 {}", victim.0);
    // The victim's job fails, restarts in a new worker, and finishes with every record.
    let done = c.wait_for(|j| j["state"] == "FINISHED" || j["state"] == "FAILED", &format!("/jobs/{a}"));
    assert_eq!(done["state"], "FINISHED", "{done}");
    let (_, ex) = c.get(&format!("/jobs/{a}/exceptions"));
    let root = ex["root-exception"].as_str().unwrap_or_default();
    assert!(root.contains(&format!("worker process (pid {}) of this job died: killed (signal 9", victim.0)), "{ex}");
    let (_, result) = c.get(&format!("/jobs/{a}/execution-result"));
    assert_eq!(result["job-execution-result"]["weir-result"]["counts"][0]["numRecordsOut"], 8000, "{result}");
    // The other job, on the same TaskManager, never noticed.
    let other = c.wait_for(|j| j["state"] == "FINISHED" || j["state"] == "FAILED", &format!("/jobs/{b}"));
    assert_eq!(other["state"], "FINISHED", "{other}");
    let (_, ex) = c.get(&format!("/jobs/{b}/exceptions"));
    assert_eq!(ex["all-exceptions"].as_array().map(Vec::len), Some(0), "{ex}");
    eventually("the workers exit after their jobs", || c.workers().is_empty());
}

#[test]
fn a_worker_process_that_dies_fails_only_its_own_job_which_restarts_and_finishes() {
    // Jobs of the cluster's own program run in worker processes too (taskmanager.job-isolation:
    // process, the default), so one that crashes its process cannot take the others down.
    let c = Cluster::with(&RESTART, 1, 2);
    a_worker_death_fails_only_its_job(&c, std::path::Path::new(WEIR), &[]);
}

#[test]
fn another_programs_worker_that_dies_fails_only_its_own_job() {
    // A cluster of the wordcount example; the stock executable's jobs run in its worker processes.
    let program = crate::example("wordcount");
    let c = Cluster::of(&program, &["--weir"], &RESTART, 1, 2);
    a_worker_death_fails_only_its_job(&c, std::path::Path::new(WEIR), &[]);
}

#[test]
fn with_shared_isolation_the_clusters_own_jobs_run_in_the_taskmanager() {
    // The setting is the TaskManager's: a cluster whose TaskManager shares its process.
    let mut c = Cluster::new(0, 1);
    c.add_taskmanager_with(1, &["-D", "taskmanager.job-isolation=shared"]);
    c.wait_for(|o| o["taskmanagers"] == 1, "/overview");
    let out =
        c.weir(&["run", "-t", "remote", "-d", "generate", "--args", r#"{"count": 2000, "rate": 2000}"#, "-p", "1"]);
    let id = job_id(&out);
    c.wait_for(|j| j["state"] == "RUNNING", &format!("/jobs/{id}"));
    assert!(c.workers().is_empty(), "no worker process: {:?}", c.workers());
    c.wait_for(|j| j["state"] == "FINISHED", &format!("/jobs/{id}"));
    let out = Command::new(WEIR)
        .args(["taskmanager", "-D", "taskmanager.job-isolation=threads"])
        .output()
        .unwrap_or_else(|e| panic!("cannot run weir: {e}"));
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("'threads' is not one of process, shared"), "{}", text(&out.stderr));
}

#[test]
fn bad_uploads_are_refused_and_leave_nothing_behind() {
    // The JobManager's blob store alone: a mini cluster without TaskManagers.
    let blobs = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let store = blobs.path().to_path_buf();
    let dir = store.display().to_string();
    let settings = [("blob.artifact.max-size", "1kb"), ("blob.storage.directory", dir.as_str())];
    let mini = weir::MiniCluster::with_settings(weir::Registry::new(), 0, 1, &settings)
        .unwrap_or_else(|e| panic!("mini cluster: {e}"));
    let rest = mini.rest_address();
    let c = Rest(&rest);
    let body = vec![b'x'; 600];
    let scratch = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let file = scratch.path().join("body");
    std::fs::write(&file, &body).unwrap_or_else(|e| panic!("write: {e}"));
    let id = sha256_hex(&file);
    // Broken off after half of what it announced.
    let (status, v) = upload(c.0, "", &body[..300], 600);
    assert_eq!(status, 400, "{v}");
    assert!(errors(&v).contains("truncated upload: 300 of 600 announced bytes arrived"), "{v}");
    // Bytes that do not match the declared digest.
    let wrong = "ab".repeat(32);
    let (status, v) = upload(c.0, &format!("?digest={wrong}"), &body, 600);
    assert_eq!(status, 400, "{v}");
    assert!(
        errors(&v).contains(&format!("hash to sha256:{id} but the artifact was declared as sha256:{wrong}")),
        "{v}"
    );
    // Over the limit, announced or not.
    let (status, v) = upload(c.0, "", &vec![b'y'; 2000], 2000);
    assert_eq!(status, 413, "{v}");
    assert!(errors(&v).contains("blob.artifact.max-size (1024 bytes)"), "{v}");
    // Not a digest, or another parameter.
    let (status, v) = upload(c.0, "?digest=../../etc/passwd", &body, 600);
    assert_eq!((status, errors(&v).contains("is not an artifact id")), (400, true), "{v}");
    let (status, v) = upload(c.0, "?name=x", &body, 600);
    assert_eq!((status, errors(&v).contains("unknown query parameter 'name'")), (400, true), "{v}");
    assert_eq!(entries(&store), Vec::<String>::new(), "nothing refused is stored, no temporary file stays");
    let (_, listed) = c.get("/artifacts");
    assert_eq!(listed["artifacts"].as_array().map(Vec::len), Some(1), "only the JobManager's own: {listed}");
    // A good one is stored under its digest, can be looked at and deleted; the own one cannot.
    let (status, v) = upload(c.0, &format!("?digest={id}"), &body, 600);
    assert_eq!((status, v["id"].as_str()), (200, Some(id.as_str())), "{v}");
    assert_eq!(entries(&store), vec![id.clone()]);
    assert_eq!(c.get(&format!("/artifacts/{id}")).1["size"], 600);
    assert_eq!(http("DELETE", c.0, &format!("/artifacts/{id}"), None).0, 200);
    assert_eq!(c.get(&format!("/artifacts/{id}")).0, 404);
    let own = listed["artifacts"][0]["id"].as_str().unwrap_or_default().to_string();
    let (status, v) = http("DELETE", c.0, &format!("/artifacts/{own}"), None);
    assert_eq!((status, errors(&v).contains("own executable")), (409, true), "{v}");
    assert_eq!(c.get("/overview").0, 200, "the JobManager is unharmed");
}

#[test]
fn jobs_of_artifacts_the_cluster_lacks_or_that_are_not_weir_programs_fail_clearly_without_retries() {
    let restart = ["-D", "restart-strategy.type=fixed-delay", "-D", "restart-strategy.fixed-delay.attempts=5"];
    let c = Cluster::with(&restart, 1, 2);
    let args: Value = serde_json::from_str(&bundled()).unwrap_or(Value::Null);
    let graph = weir::Driver::local(weir::builtin::registry()).job_graph("wordcount", &args);
    let mut graph = graph.unwrap_or_else(|e| panic!("{e}"));
    // An artifact the blob store does not have: refused at submission.
    graph.artifact = weir_core::graph::ArtifactDigest(format!("sha256:{}", "ab".repeat(32)));
    let (status, v) = http("POST", &c.rest, "/jobs", Some(&serde_json::json!({ "graph": graph }).to_string()));
    assert_eq!(status, 400, "{v}");
    assert!(errors(&v).contains("is not in this cluster's blob store: upload it first"), "{v}");
    // An uploaded program that is not a weir program: its job fails once, with what to do.
    let script = b"#!/bin/sh\necho 'not weir'\nexit 3\n";
    let (status, v) = upload(&c.rest, "", script, script.len());
    assert_eq!(status, 200, "{v}");
    let id = v["id"].as_str().unwrap_or_default().to_string();
    graph.artifact = weir_core::graph::ArtifactDigest(format!("sha256:{id}"));
    let (status, v) = http("POST", &c.rest, "/jobs", Some(&serde_json::json!({ "graph": graph }).to_string()));
    assert_eq!(status, 202, "{v}");
    let job = v["jobid"].as_str().unwrap_or_default().to_string();
    c.wait_for(|j| j["state"] == "FAILED", &format!("/jobs/{job}"));
    let (_, ex) = c.get(&format!("/jobs/{job}/exceptions"));
    let root = ex["root-exception"].as_str().unwrap_or_default();
    assert!(root.contains("is not a weir program of this version") && root.contains("exit code 3"), "{ex}");
    assert_eq!(ex["all-exceptions"].as_array().map(Vec::len), Some(1), "not retried: {ex}");
    // Running it through REST says the same before any job exists.
    let run = serde_json::json!({ "job": "wordcount" }).to_string();
    let (status, v) = http("POST", &c.rest, &format!("/artifacts/{id}/run"), Some(&run));
    assert_eq!((status, errors(&v).contains("is not a weir program")), (400, true), "{v}");
}

#[test]
fn an_uploaded_program_runs_through_rest() {
    let c = Cluster::new(1, 2);
    let program = crate::example("wordcount");
    let bytes = std::fs::read(&program).unwrap_or_else(|e| panic!("cannot read {}: {e}", program.display()));
    let id = sha256_hex(&program);
    let (status, v) = upload(&c.rest, &format!("?digest={id}"), &bytes, bytes.len());
    assert_eq!(status, 200, "{v}");
    let run = |body: Value| http("POST", &c.rest, &format!("/artifacts/{id}/run"), Some(&body.to_string()));
    let args: Value = serde_json::from_str(&bundled()).unwrap_or(Value::Null);
    let (status, v) = run(serde_json::json!({ "job": "wordcount", "args": args, "parallelism": 2 }));
    assert_eq!(status, 200, "{v}");
    let job = v["jobid"].as_str().unwrap_or_default().to_string();
    c.wait_for(|j| j["state"] == "FINISHED", &format!("/jobs/{job}"));
    let (_, result) = c.get(&format!("/jobs/{job}/execution-result"));
    assert_eq!(collected_counts(&result), example_counts());
    // The program's own errors come back as they are.
    let (status, v) = run(serde_json::json!({ "job": "nope" }));
    assert_eq!(status, 400, "{v}");
    assert!(errors(&v).contains("unknown job 'nope'; this artifact registers: wordcount"), "{v}");
    let (status, v) =
        run(serde_json::json!({ "job": "wordcount", "args": args, "config": { "parallelism.defualt": "2" } }));
    assert_eq!((status, errors(&v).contains("unknown configuration key 'parallelism.defualt'")), (400, true), "{v}");
    let (status, v) = run(serde_json::json!({ "jobb": "wordcount" }));
    assert_eq!((status, errors(&v).contains("unknown field `jobb`")), (400, true), "{v}");
}

#[test]
fn the_blob_store_keeps_to_its_quota_and_takes_a_bounded_number_of_uploads() {
    let c =
        Cluster::with(&["-D", "weir.blob.storage.max-total-size=1mb", "-D", "weir.rest.upload.max-concurrent=1"], 0, 1);
    // Over the quota, announced: refused before a byte is stored, saying what to do.
    let big = vec![1u8; 2 << 20];
    let (status, v) = upload(&c.rest, "", &big, big.len());
    assert_eq!(status, 507, "{v}");
    assert!(errors(&v).contains("weir.blob.storage.max-total-size") && errors(&v).contains("DELETE /artifacts"), "{v}");
    // Within it: stored.
    let small = vec![2u8; 600 << 10];
    let (status, v) = upload(&c.rest, "", &small, small.len());
    assert_eq!(status, 200, "{v}");
    // What is left is smaller than the next one.
    let (status, v) = upload(&c.rest, "", &small, small.len());
    assert_eq!(status, 507, "{v}");
    // One upload at a time: while one is held open (its body never completes), another is
    // answered 503. (The held one is opened again if it was itself refused: a request of an
    // earlier step may still have been finishing.)
    let head = format!(
        "POST /artifacts/upload HTTP/1.1\r\nHost: {}\r\nContent-Type: application/octet-stream\r\nContent-Length: 1000\r\n\r\nabc",
        c.rest
    );
    let start = Instant::now();
    let held = loop {
        let mut held = std::net::TcpStream::connect(&c.rest).unwrap_or_else(|e| panic!("{e}"));
        let _ = held.write_all(head.as_bytes());
        let _ = held.set_read_timeout(Some(Duration::from_millis(300)));
        let mut first = [0u8; 1];
        // Nothing to read in time: it is being received, holding its place.
        if held.read(&mut first).is_err() {
            break held;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "the held upload was never taken");
    };
    let (status, v) = upload(&c.rest, "", b"tiny", 4);
    assert!(errors(&v).contains("weir.rest.upload.max-concurrent"), "{status} {v}");
    assert_eq!(status, 503);
    drop(held);
}
