//! Application mode: `run-application` starts a cluster that runs the program's `main`, and the
//! job result store keeps the outcome after the cluster is gone. Also per-job mode for a program's
//! own `main`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::cluster::{http, text};
use crate::modes::processes_of;

const WEIR: &str = env!("CARGO_BIN_EXE_weir");

/// A test's private directory: `TMPDIR` of every process it starts, and its job result store.
struct Place {
    tmp: tempfile::TempDir,
}

impl Place {
    fn new() -> Place {
        Place { tmp: tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}")) }
    }

    fn store(&self) -> PathBuf {
        self.tmp.path().join("results")
    }

    fn define(&self) -> String {
        format!("job-result-store.storage-path={}", self.store().display())
    }

    fn weir(&self, args: &[&str]) -> Output {
        let define = self.define();
        Command::new(WEIR)
            .args(args)
            .args(["-D", &define])
            .env("TMPDIR", self.tmp.path())
            .output()
            .unwrap_or_else(|e| panic!("cannot run weir: {e}"))
    }

    /// `run-application` of the application example with `args`; the application's id.
    fn start(&self, args: &[&str]) -> String {
        let program = crate::example("application");
        let program = program.display().to_string();
        let mut all = vec!["run-application", "-t", "process", &program, "--"];
        all.extend_from_slice(args);
        // Settings go before `--`; what follows is main's.
        let define = self.define();
        let out = Command::new(WEIR)
            .args(&all[..4])
            .args(["-D", &define])
            .args(&all[4..])
            .env("TMPDIR", self.tmp.path())
            .output()
            .unwrap_or_else(|e| panic!("cannot run weir: {e}"));
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout)
            .lines()
            .find_map(|l| l.strip_prefix("Application ").and_then(|r| r.split_whitespace().next()).map(String::from))
            .unwrap_or_else(|| panic!("no application id in: {}", text(&out.stdout)))
    }

    fn record(&self, id: &str) -> Value {
        let bytes = std::fs::read(self.store().join(format!("{id}.json"))).unwrap_or_default();
        serde_json::from_slice(&bytes).unwrap_or(Value::Null)
    }

    /// Waits (bounded) for the application's record to satisfy `ok`.
    fn wait(&self, id: &str, ok: impl Fn(&Value) -> bool) -> Value {
        let start = Instant::now();
        loop {
            let r = self.record(id);
            if ok(&r) {
                return r;
            }
            assert!(start.elapsed() < Duration::from_secs(60), "application {id} never got there: {r}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits (bounded) until the application ended and its cluster is gone: no process, and no
    /// file but the job result store.
    fn ended(&self, id: &str) -> Value {
        let r = self.wait(id, |r| r["status"].as_str().is_some_and(|s| s != "RUNNING"));
        let start = Instant::now();
        while !processes_of(self.tmp.path()).is_empty() {
            assert!(start.elapsed() < Duration::from_secs(20), "the application's processes stay");
            std::thread::sleep(Duration::from_millis(10));
        }
        let left: Vec<PathBuf> =
            std::fs::read_dir(self.tmp.path()).map(|d| d.flatten().map(|e| e.path()).collect()).unwrap_or_default();
        assert_eq!(left, vec![self.store()], "left behind");
        r
    }

    fn log(&self, id: &str) -> String {
        std::fs::read_to_string(self.store().join(format!("{id}.log"))).unwrap_or_default()
    }
}

fn statuses(record: &Value) -> Vec<&str> {
    record["jobs"].as_array().map(|a| a.iter().filter_map(|j| j["status"].as_str()).collect()).unwrap_or_default()
}

#[test]
fn an_application_runs_main_on_its_own_cluster_job_after_job_and_side_by_side() {
    let place = Place::new();
    let id = place.start(&["sequential", "3"]);
    let r = place.ended(&id);
    assert_eq!(r["status"], "SUCCEEDED", "{r}");
    assert_eq!(statuses(&r), vec!["FINISHED"; 3], "{r}");
    // One after the other: each job's result was back before the next was submitted.
    let log = place.log(&id);
    let sums: Vec<&str> = log.lines().filter(|l| l.starts_with("job ")).collect();
    assert_eq!(sums, vec!["job 0 finished: sum 499500", "job 1 finished: sum 1999000", "job 2 finished: sum 4498500"]);
    // Job ids derive from the application's id.
    let ids: Vec<&str> =
        r["jobs"].as_array().map(|a| a.iter().filter_map(|j| j["id"].as_str()).collect()).unwrap_or_default();
    assert!(ids.iter().all(|j| j[..6] == id[..6] && **j != id), "{ids:?} of {id}");

    let id = place.start(&["concurrent", "2"]);
    let r = place.ended(&id);
    assert_eq!(r["status"], "SUCCEEDED", "{r}");
    assert!(place.log(&id).contains("2 jobs running at once"), "{}", place.log(&id));
}

#[test]
fn cancelling_one_job_of_an_application_cancels_all_and_ends_its_cluster() {
    let place = Place::new();
    let id = place.start(&["endless"]);
    let r = place.wait(&id, |r| statuses(r) == vec!["RUNNING", "RUNNING"]);
    let rest = r["rest"].as_str().unwrap_or_default().to_string();
    let first = r["jobs"][0]["id"].as_str().unwrap_or_default().to_string();
    let (status, body) = http("PATCH", &rest, &format!("/jobs/{first}?mode=cancel"), None);
    assert_eq!(status, 202, "{body}");
    let r = place.ended(&id);
    assert_eq!(r["status"], "CANCELED", "{r}");
    assert_eq!(statuses(&r), vec!["CANCELED", "CANCELED"], "{r}");
    assert!(r["error"].as_str().unwrap_or_default().contains(&first), "{r}");
}

#[test]
fn a_failed_main_stays_visible_through_the_cli_and_rest_after_its_cluster_is_gone() {
    let place = Place::new();
    let id = place.start(&["fail"]);
    let r = place.ended(&id);
    assert_eq!(r["status"], "FAILED", "{r}");
    let error = r["error"].as_str().unwrap_or_default();
    assert!(error.contains("before any job") && error.contains("no input given"), "{r}");
    let out = place.weir(&["applications", &id]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    assert!(shown.contains("status: FAILED") && shown.contains("no input given"), "{shown}");
    // Any JobManager reading the same store serves it over REST.
    let define = place.define();
    let session = crate::cluster::Cluster::with(&["-D", &define], 0, 1);
    let (status, body) = session.get(&format!("/applications/{id}"));
    assert_eq!((status, body["status"].as_str()), (200, Some("FAILED")), "{body}");
    let (status, body) = session.get("/applications/00000000000000000000000000000001");
    assert_eq!(status, 404, "{body}");
}

#[test]
fn cached_files_reach_every_task_and_an_unreachable_one_names_its_path() {
    let place = Place::new();
    let text_file = format!("{}/../../examples/data/gettysburg.txt", env!("CARGO_MANIFEST_DIR"));
    let id = place.start(&["cached", &text_file]);
    let r = place.ended(&id);
    assert_eq!(r["status"], "SUCCEEDED", "{r}");
    assert!(place.log(&id).contains("lines: [19]"), "{}", place.log(&id));

    let missing = place.tmp.path().join("nowhere.txt").display().to_string();
    let id = place.start(&["cached", &missing]);
    let r = place.ended(&id);
    let error = r["error"].as_str().unwrap_or_default();
    assert!(error.contains(&missing) && error.contains("not reachable from the JobManager"), "{r}");
}

#[test]
fn run_application_refuses_what_it_cannot_start_and_starts_nothing() {
    let place = Place::new();
    let not_executable = place.tmp.path().join("plain");
    std::fs::write(&not_executable, b"data").unwrap_or_else(|e| panic!("write: {e}"));
    let not_executable = not_executable.display().to_string();
    let cases = [
        ("process", "/nonexistent/app", "cannot be read"),
        ("process", not_executable.as_str(), "is not executable"),
        ("process", "/bin/true", "is not a weir artifact"),
        ("yarn", WEIR, "unknown target 'yarn'; valid targets of run-application: process, docker"),
    ];
    for (target, artifact, message) in cases {
        let out = place.weir(&["run-application", "-t", target, artifact]);
        assert_eq!(out.status.code(), Some(2), "{target} {artifact}: {}", text(&out.stderr));
        assert!(text(&out.stderr).contains(message), "{}", text(&out.stderr));
    }
    assert!(processes_of(place.tmp.path()).is_empty());
    assert!(!place.store().exists());
}

#[test]
fn a_programs_own_main_runs_per_job_when_the_configuration_says_so() {
    let place = Place::new();
    let conf = place.tmp.path().join("conf");
    std::fs::create_dir(&conf).unwrap_or_else(|e| panic!("mkdir: {e}"));
    std::fs::write(conf.join("config.yaml"), "execution.target: per-job\n").unwrap_or_else(|e| panic!("write: {e}"));
    let wordcount = crate::example("wordcount");
    let run = |dir: Option<&Path>| {
        let mut c = Command::new(&wordcount);
        c.env("TMPDIR", place.tmp.path());
        if let Some(d) = dir {
            c.env("WEIR_CONF_DIR", d);
        }
        c.output().unwrap_or_else(|e| panic!("cannot run the example: {e}"))
    };
    let local = run(None);
    let per_job = run(Some(&conf));
    assert!(per_job.status.success(), "{}", text(&per_job.stderr));
    assert!(text(&per_job.stderr).contains("Per-job cluster started"), "{}", text(&per_job.stderr));
    assert_eq!(text(&per_job.stdout), text(&local.stdout));
    assert!(text(&local.stdout).contains("    13  that"), "{}", text(&local.stdout));
    assert!(processes_of(place.tmp.path()).is_empty());
    let left: Vec<PathBuf> =
        std::fs::read_dir(place.tmp.path()).map(|d| d.flatten().map(|e| e.path()).collect()).unwrap_or_default();
    assert_eq!(left, vec![conf]);
}
