//! A JobManager and TaskManagers as real processes, when something goes wrong: lost and killed
//! TaskManagers, JobManagers that go away or never answer, ports in use, restarts, and a cluster
//! started and stopped as a whole.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::cluster::{
    Cluster, RESTART, bundled, final_counts, gettysburg, http, job_id, reference_counts, text, wait_exit,
};

const WEIR: &str = env!("CARGO_BIN_EXE_weir");

#[test]
fn delete_cluster_stops_the_jobmanager_and_its_taskmanagers() {
    let mut c = Cluster::new(2, 1);
    let (status, _) = http("DELETE", &c.rest, "/cluster", None);
    assert_eq!(status, 202);
    let start = Instant::now();
    for tm in c.taskmanagers.iter_mut().chain(std::iter::once(&mut c._jobmanager)) {
        loop {
            if let Ok(Some(s)) = tm.child.try_wait() {
                assert!(s.success(), "exited with {s}");
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(20), "a process did not exit after DELETE /cluster");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[test]
fn after_a_kill_9_the_job_restarts_on_a_spare_taskmanager_and_finishes() {
    let mut c = Cluster::with(&RESTART, 2, 1);
    let load = r#"{"count": 3000, "rate": 1500}"#;
    let id = job_id(&c.weir(&["run", "-t", "remote", "-d", "generate", "--args", load, "-p", "1"]));
    let job = c.wait_for(|j| j["state"] == "RUNNING", &format!("/jobs/{id}"));
    // Kill the TaskManager the job runs on.
    let tm = job["weir-taskmanagers"][0].as_str().unwrap_or_default().to_string();
    c.kill_taskmanager(&tm);
    // It restarts on the spare and runs to the end, all 3000 records.
    let done = c.wait_for(|j| j["state"] == "FINISHED" || j["state"] == "FAILED", &format!("/jobs/{id}"));
    assert_eq!(done["state"], "FINISHED", "{done}");
    assert_ne!(done["weir-taskmanagers"][0], json_str(&tm));
    let (_, ex) = c.get(&format!("/jobs/{id}/exceptions"));
    assert!(ex["root-exception"].as_str().unwrap_or_default().contains("was lost"), "{ex}");
    let (_, result) = c.get(&format!("/jobs/{id}/execution-result"));
    let counts = &result["job-execution-result"]["weir-result"]["counts"];
    assert_eq!(counts[0]["numRecordsOut"], 3000, "{result}");
    assert_eq!(counts[3]["numRecordsIn"], 3000, "{result}");
}

fn json_str(s: &str) -> Value {
    Value::String(s.to_string())
}

#[test]
fn cluster_start_status_and_stop_leave_nothing_running() {
    let parent = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    // A directory `start` makes is private to this user.
    let dir = parent.path().join("cluster");
    let d = dir.to_string_lossy().to_string();
    let ports = ["-D", "rest.port=0", "-D", "jobmanager.rpc.port=0"];
    let run = |args: &[&str]| Command::new(WEIR).args(args).output().unwrap_or_else(|e| panic!("{e}"));
    let mut start = vec!["cluster", "start", "--taskmanagers", "2", "--slots", "2", "--dir", &d];
    start.extend(ports);
    let out = run(&start);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let rest = text(&out.stdout).trim().to_string();
    let state: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("cluster.json")).unwrap_or_default())
        .unwrap_or(Value::Null);
    let pids: Vec<u64> = std::iter::once(state["jobmanager"].as_u64().unwrap_or(0))
        .chain(state["taskmanagers"].as_array().into_iter().flatten().filter_map(Value::as_u64))
        .collect();
    assert_eq!(pids.len(), 3);
    // The directory is this user's alone, and the state file knows when each process started.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&dir).map(|m| m.permissions().mode() & 0o777).unwrap_or(0);
    assert_eq!(mode, 0o700);
    assert_eq!(state["started"].as_object().map(|m| m.len()), Some(3), "{state}");
    let status = run(&["cluster", "status", "--dir", &d]);
    assert!(text(&status.stdout).contains("2 registered, 4 slots"), "{}", text(&status.stdout));
    let job = run(&["run", "-t", "remote", "-m", &rest, "wordcount", "--args", &bundled(), "-p", "2"]);
    assert!(job.status.success(), "{}", text(&job.stderr));
    // Its processes prove a secret of their own, kept in the private directory: a TaskManager
    // without it is refused, one pointed at the file joins.
    let secret = dir.join("cluster.secret");
    assert_eq!(std::fs::metadata(&secret).map(|m| m.permissions().mode() & 0o777).unwrap_or(0), 0o600);
    let rpc = state["rpc"].as_str().unwrap_or_default().rsplit(':').next().unwrap_or_default().to_string();
    let port = format!("jobmanager.rpc.port={rpc}");
    let stranger = run(&["taskmanager", "-D", &port]);
    assert!(!stranger.status.success());
    assert!(text(&stranger.stderr).contains("requires a cluster secret"), "{}", text(&stranger.stderr));
    assert!(text(&run(&["cluster", "status", "--dir", &d]).stdout).contains("2 registered"));
    // A second start from the same directory is refused while the first runs.
    let mut again = vec!["cluster", "start", "--dir", &d];
    again.extend(ports);
    let out = run(&again);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("is still running"), "{}", text(&out.stderr));
    let out = run(&["cluster", "stop", "--dir", &d]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    for pid in pids {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let gone = stat.is_empty() || stat.rsplit(')').next().is_some_and(|r| r.trim_start().starts_with('Z'));
        assert!(gone, "process {pid} is still running");
    }
    let out = run(&["cluster", "status", "--dir", &d]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("run `weir cluster start` first"), "{}", text(&out.stderr));
}

#[test]
fn a_taskmanager_whose_jobmanager_does_not_answer_gives_up_with_a_clear_error() {
    // Port 1 (tcpmux): nothing listens there, and no test binds it. (A port bound and released
    // here could be taken by another test's server before the TaskManager connects, which then
    // answers with something that is not a JobManager.)
    let closed = 1;
    assert!(std::net::TcpStream::connect(("127.0.0.1", closed)).is_err(), "something listens on port {closed}");
    let start = Instant::now();
    let out = Command::new(WEIR)
        .args(["taskmanager", "-D", &format!("jobmanager.rpc.port={closed}")])
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("cannot reach the JobManager") && err.contains(&format!("127.0.0.1:{closed}")), "{err}");
    assert!(start.elapsed() < Duration::from_secs(30));
}

#[test]
fn a_job_whose_subtasks_span_two_taskmanagers_exchanges_records_over_tcp() {
    // One slot each: a job of parallelism 2 must run subtask 0 on one and subtask 1 on the other,
    // and the keyed exchange between Tokenizer and Count crosses between them.
    let c = Cluster::new(2, 1);
    let out_dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let args = format!("{{\"input\": \"{}\", \"output\": \"{}\"}}", gettysburg(), out_dir.path().display());
    let out = c.weir(&["run", "-t", "remote", "wordcount", "--args", &args, "-p", "2"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let id = job_id(&out);
    let (_, job) = c.get(&format!("/jobs/{id}"));
    assert_eq!(job["state"], "FINISHED", "{job}");
    let tms = job["weir-taskmanagers"].as_array().map(Vec::len).unwrap_or(0);
    assert_eq!(tms, 0, "a finished job holds no TaskManagers: {job}");
    // Both parts' counters add up, and every word's count is right.
    assert_eq!(job["vertices"][2]["metrics"]["read-records"], 272, "{job}");
    let (_, result) = c.get(&format!("/jobs/{id}/execution-result"));
    let counts = &result["job-execution-result"]["weir-result"]["counts"];
    let path = gettysburg();
    let lines = std::fs::read_to_string(&path).map(|t| t.lines().count()).unwrap_or(0);
    assert_eq!(counts[0]["numRecordsOut"], lines, "both halves of the file were read: {result}");
    assert_eq!(final_counts(out_dir.path()), reference_counts());
    let files = std::fs::read_dir(out_dir.path()).map(|d| d.count()).unwrap_or(0);
    assert_eq!(files, 2, "one output file per subtask");
}

#[test]
fn a_running_job_spans_taskmanagers_and_restarts_across_the_survivors_after_a_kill_9() {
    let mut c = Cluster::with(&RESTART, 3, 1);
    let load = r#"{"count": 4000, "rate": 2000}"#;
    let id = job_id(&c.weir(&["run", "-t", "remote", "-d", "generate", "--args", load, "-p", "2"]));
    // The job is RUNNING once deployed; its tasks are once both parts have initialized.
    let job = c.wait_for(|j| j["state"] == "RUNNING", &format!("/jobs/{id}"));
    let tasks_up = |j: &serde_json::Value| j["tasks"]["running"] == j["tasks"]["total"];
    let up = c.wait_for(tasks_up, &format!("/jobs/{id}"));
    for v in up["vertices"].as_array().into_iter().flatten() {
        assert_eq!((&v["status"], &v["tasks"]["RUNNING"]), (&serde_json::json!("RUNNING"), &v["parallelism"]), "{v}");
    }
    assert_eq!(up["tasks"]["initializing"], 0, "{up}");
    let placed: Vec<String> = job["weir-taskmanagers"]
        .as_array()
        .map(|a| a.iter().filter_map(|t| t.as_str().map(String::from)).collect())
        .unwrap_or_default();
    assert_eq!(placed.len(), 2, "parallelism 2 on one-slot TaskManagers spans two: {job}");
    let (_, overview) = c.get("/overview");
    assert_eq!(overview["slots-available"], 1, "{overview}");
    // Kill one of the two.
    c.kill_taskmanager(&placed[1]);
    // The other part is cancelled, and the job runs again on the survivor and the spare.
    let done = c.wait_for(|j| j["state"] == "FINISHED" || j["state"] == "FAILED", &format!("/jobs/{id}"));
    assert_eq!(done["state"], "FINISHED", "{done}");
    let (_, ex) = c.get(&format!("/jobs/{id}/exceptions"));
    assert!(ex["root-exception"].as_str().unwrap_or_default().contains("was lost"), "{ex}");
    let (_, result) = c.get(&format!("/jobs/{id}/execution-result"));
    let counts = &result["job-execution-result"]["weir-result"]["counts"];
    assert_eq!(counts[0]["numRecordsOut"], 4000, "{result}");
    assert_eq!(counts[3]["numRecordsIn"], 4000, "{result}");
    c.wait_for(|o| o["slots-available"] == 2, "/overview");
}

#[test]
fn a_taskmanager_whose_data_port_is_taken_says_so_and_exits() {
    let c = Cluster::new(0, 1);
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("bind: {e}"));
    let port = taken.local_addr().map(|a| a.port()).unwrap_or(0);
    let out = Command::new(WEIR)
        .args(["taskmanager", "-D", &format!("jobmanager.rpc.port={}", c.rpc_port)])
        .args(["-D", &format!("taskmanager.data.port={port}")])
        .output()
        .unwrap_or_else(|e| panic!("cannot run weir: {e}"));
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("taskmanager.data.port") && err.contains(&port.to_string()), "{err}");
    assert_eq!(c.get("/overview").1["taskmanagers"], 0, "nothing half-registered");
}

#[test]
fn a_taskmanager_that_loses_its_jobmanager_says_so_and_blames_no_configuration() {
    let c = Cluster::new(0, 1);
    let mut tm = Command::new(WEIR)
        .args(["taskmanager", "-D", &format!("jobmanager.rpc.port={}", c.rpc_port)])
        .args(["-D", "heartbeat.interval=200", "-D", "heartbeat.timeout=1500"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run weir: {e}"));
    let mut stderr = tm.stderr.take().unwrap_or_else(|| panic!("no stderr"));
    let drained = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    c.wait_for(|o| o["taskmanagers"] == 1, "/overview");
    // The JobManager goes away (dropping the cluster kills it).
    drop(c);
    let status = wait_exit(&mut tm, "a TaskManager without its JobManager");
    let err = drained.join().unwrap_or_default();
    // Exit 1: nothing for the user to fix in its settings (2 would say so).
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("lost the JobManager at"), "{err}");
    assert!(!err.contains("invalid configuration"), "{err}");
}

#[test]
fn an_attached_remote_run_shows_progress_and_rest_shows_live_counts() {
    let c = Cluster::new(1, 1);
    let load = r#"{"count": 3000, "rate": 1000}"#;
    let client = Command::new(WEIR)
        .args(["run", "-t", "remote", "generate", "--args", load, "-p", "1", "-m", &c.rest])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run weir: {e}"));
    // While the client waits, REST shows the source's count growing.
    let jobs = c.wait_for(|o| o["jobs"].as_array().is_some_and(|a| !a.is_empty()), "/jobs");
    let id = jobs["jobs"][0]["id"].as_str().unwrap_or_default().to_string();
    let live = c.wait_for(
        |j| j["state"] == "RUNNING" && j["vertices"][0]["metrics"]["write-records"].as_u64().is_some_and(|n| n > 0),
        &format!("/jobs/{id}"),
    );
    let seen = live["vertices"][0]["metrics"]["write-records"].as_u64().unwrap_or(0);
    assert!(seen < 3000, "counted while running: {live}");
    let out = client.wait_with_output().unwrap_or_else(|e| panic!("client: {e}"));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(err.contains(&format!("Job {id} is RUNNING: ")) && err.contains(" records read"), "{err}");
    let (_, done) = c.get(&format!("/jobs/{id}"));
    assert_eq!(done["vertices"][0]["metrics"]["write-records"], 3000, "{done}");
}

#[test]
fn cluster_stop_never_signals_a_process_it_did_not_start() {
    // A state file whose pids now belong to another process (here, one this test starts): the
    // system reused them, or someone wrote the file. `stop` leaves that process alone and says so.
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let mut bystander = Command::new("sleep").arg("30").spawn().unwrap_or_else(|e| panic!("{e}"));
    let pid = bystander.id();
    let state = serde_json::json!({
        "rest": "127.0.0.1:1", "rpc": "127.0.0.1:1", "jobmanager": pid, "taskmanagers": [pid],
        "started": { pid.to_string(): 1 },
    });
    std::fs::write(dir.path().join("cluster.json"), state.to_string()).unwrap_or_else(|e| panic!("{e}"));
    let d = dir.path().to_string_lossy().to_string();
    let out = Command::new(WEIR).args(["cluster", "stop", "--dir", &d]).output().unwrap_or_else(|e| panic!("{e}"));
    assert!(text(&out.stderr).contains(&format!("Not signalling pids [{pid}, {pid}]")), "{}", text(&out.stderr));
    std::thread::sleep(Duration::from_millis(200));
    assert!(matches!(bystander.try_wait(), Ok(None)), "the bystander was signalled");
    let _ = bystander.kill();
    let _ = bystander.wait();
    // Without --dir, the directory is the user's own state directory, not a shared /tmp path.
    let home = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let out = Command::new(WEIR)
        .args(["cluster", "status"])
        .env("HOME", home.path())
        .env_remove("XDG_STATE_HOME")
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(out.status.code(), Some(2));
    let expected = home.path().join(".local/state/weir/cluster/cluster.json");
    assert!(text(&out.stderr).contains(&expected.display().to_string()), "{}", text(&out.stderr));
}
