//! Deployment modes: per-job clusters started for one job and gone after it.

use std::process::{Command, Output};

const WEIR: &str = env!("CARGO_BIN_EXE_weir");

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Runs weir with `TMPDIR` set to `tmp`, which every process of a per-job cluster inherits: what
/// the cluster leaves behind shows there, and its processes can be found by it.
fn weir_in(tmp: &std::path::Path, args: &[&str]) -> Output {
    Command::new(WEIR).args(args).env("TMPDIR", tmp).output().unwrap_or_else(|e| panic!("cannot run weir: {e}"))
}

/// Processes whose environment has `TMPDIR=tmp`.
pub(crate) fn processes_of(tmp: &std::path::Path) -> Vec<u32> {
    let marker = format!("TMPDIR={}", tmp.display());
    std::fs::read_dir("/proc")
        .map(|d| d.flatten().collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<u32>().ok().map(|pid| (pid, e.path())))
        .filter(|(_, path)| {
            let env = std::fs::read(path.join("environ")).unwrap_or_default();
            env.split(|b| *b == 0).any(|v| v == marker.as_bytes())
        })
        .map(|(pid, _)| pid)
        .collect()
}

fn gettysburg() -> String {
    format!("{{\"input\": \"{}/../../examples/data/gettysburg.txt\"}}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn a_per_job_cluster_runs_its_job_then_leaves_no_process_and_no_file() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let out = weir_in(tmp.path(), &["run", "-t", "per-job", "wordcount", "--args", &gettysburg(), "-p", "2"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(err.contains("Per-job cluster started: http://127.0.0.1:") && err.contains("FINISHED"), "{err}");
    // Both subtasks ran (on two TaskManagers the JobManager started) and printed every update.
    let stdout = text(&out.stdout);
    let updates: Vec<&str> = stdout.lines().filter(|l| l.starts_with("1> (") || l.starts_with("2> (")).collect();
    assert_eq!(updates.len(), 272, "{stdout}");
    assert!(updates.iter().any(|l| l.ends_with("(\"that\", 13)")), "{stdout}");
    assert!(updates.iter().any(|l| l.starts_with("1> (")) && updates.iter().any(|l| l.starts_with("2> (")));
    // Gone: no process, no file.
    assert_eq!(processes_of(tmp.path()), Vec::<u32>::new());
    let left: Vec<_> =
        std::fs::read_dir(tmp.path()).map(|d| d.flatten().map(|e| e.path()).collect()).unwrap_or_default();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn per_job_bad_input_is_clear_and_leaves_nothing_running() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    // A job that fails its checks never starts a cluster.
    let out = weir_in(tmp.path(), &["run", "-t", "per-job", "wordcount", "--args", r#"{"input": "/nope"}"#]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(!text(&out.stderr).contains("Per-job cluster started"), "{}", text(&out.stderr));
    let out = weir_in(tmp.path(), &["run", "-t", "per-job", "-m", "localhost:1", "wordcount", "--args", &gettysburg()]);
    assert!(text(&out.stderr).contains("-m applies to -t remote only"), "{}", text(&out.stderr));
    let out = weir_in(tmp.path(), &["run", "-t", "yarn", "wordcount", "--args", &gettysburg()]);
    assert!(
        text(&out.stderr).contains("unknown target 'yarn'; valid targets: local, remote, per-job"),
        "{}",
        text(&out.stderr)
    );
    // A provider that cannot start TaskManagers (it cannot even make its directory): a clear error.
    let blocked = tmp.path().join("not-a-directory");
    std::fs::write(&blocked, b"").unwrap_or_else(|e| panic!("write: {e}"));
    let out = weir_in(&blocked, &["run", "-t", "per-job", "wordcount", "--args", &gettysburg()]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("cannot create a directory for the TaskManagers it starts") && err.contains("exited at start"),
        "{err}"
    );
    assert_eq!(processes_of(&blocked), Vec::<u32>::new());
    assert_eq!(processes_of(tmp.path()), Vec::<u32>::new());
}

/// Starts a detached per-job run of `generate` with `TMPDIR=tmp`; its REST address and job id.
fn detached_per_job(tmp: &std::path::Path) -> (String, String) {
    let load = r#"{"count": 3000, "rate": 1000}"#;
    let out = weir_in(tmp, &["run", "-t", "per-job", "-d", "generate", "--args", load, "-p", "1"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let rest = text(&out.stderr)
        .lines()
        .find_map(|l| l.strip_prefix("Per-job cluster started: http://").map(String::from))
        .unwrap_or_default();
    let id = text(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("Job has been submitted with JobID ").map(String::from))
        .unwrap_or_default();
    (rest, id)
}

/// Polls (bounded: 20 s) `GET path` at `rest` until `ok` holds.
fn wait_rest(rest: &str, path: &str, ok: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let start = std::time::Instant::now();
    loop {
        let (_, v) = crate::cluster::http("GET", rest, path, None);
        if ok(&v) {
            return v;
        }
        assert!(start.elapsed() < std::time::Duration::from_secs(20), "{path} never satisfied the condition: {v}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn two_per_job_clusters_are_apart_a_killed_taskmanager_of_one_leaves_the_other_alone() {
    let (ta, tb) = (tempfile::tempdir(), tempfile::tempdir());
    let (ta, tb) = (ta.unwrap_or_else(|e| panic!("{e}")), tb.unwrap_or_else(|e| panic!("{e}")));
    let (rest_a, job_a) = detached_per_job(ta.path());
    let (rest_b, job_b) = detached_per_job(tb.path());
    assert_ne!(rest_a, rest_b, "two clusters");
    for (rest, job) in [(&rest_a, &job_a), (&rest_b, &job_b)] {
        wait_rest(rest, &format!("/jobs/{job}"), |j| j["state"] == "RUNNING");
    }
    // kill -9 of A's TaskManager (a process of A's, started as a TaskManager).
    let (_, tms) = crate::cluster::http("GET", &rest_a, "/taskmanagers", None);
    let pid =
        tms["taskmanagers"][0]["path"].as_str().and_then(|p| p.rsplit(':').next()).unwrap_or_default().to_string();
    assert!(processes_of(ta.path()).iter().any(|p| p.to_string() == pid), "{tms}");
    let killed = Command::new("kill").args(["-9", &pid]).status().map(|s| s.success());
    assert_eq!(killed.ok(), Some(true));
    let a = wait_rest(&rest_a, &format!("/jobs/{job_a}"), |j| j["state"] == "FAILED");
    assert_eq!(a["state"], "FAILED");
    let b = wait_rest(&rest_b, &format!("/jobs/{job_b}"), |j| j["state"] == "FINISHED" || j["state"] == "FAILED");
    assert_eq!(b["state"], "FINISHED", "{b}");
    // Fetching the results lets both clusters go; then nothing of either is left.
    for (rest, job) in [(&rest_a, &job_a), (&rest_b, &job_b)] {
        crate::cluster::http("GET", rest, &format!("/jobs/{job}/execution-result"), None);
    }
    let start = std::time::Instant::now();
    while !(processes_of(ta.path()).is_empty() && processes_of(tb.path()).is_empty()) {
        assert!(start.elapsed() < std::time::Duration::from_secs(20), "per-job clusters stay after their jobs");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn a_per_job_cluster_reads_exactly_its_jobs_cached_files() {
    // A per-job cluster is its client's own: it may read the job's cached file, which a session
    // cluster would refuse from a REST client (see rest_guard.rs).
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let program = crate::example("application");
    let file = format!("{}/../../examples/data/gettysburg.txt", env!("CARGO_MANIFEST_DIR"));
    let args = format!("{{\"file\": \"{file}\"}}");
    let out = Command::new(&program)
        .args(["--weir", "run", "-t", "per-job", "lines", "--args", &args, "-p", "1"])
        .env("TMPDIR", tmp.path())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("FINISHED"), "{}", text(&out.stderr));
    assert_eq!(processes_of(tmp.path()), Vec::<u32>::new());
}
