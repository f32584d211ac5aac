//! Applications with high availability: a multi-job application survives the kill of its
//! JobManager (a standby runs `main` again without running finished jobs again), and an
//! application waits out the loss of its coordination service. On a real etcd and ZooKeeper.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use weir::Result;

use crate::cluster::{http, text};
use crate::ha::{HaCluster, WEIR, exactly_once};

/// Kills (by pid) every process left with `TMPDIR` in a directory, when dropped.
struct Reaper(std::path::PathBuf);

impl Drop for Reaper {
    fn drop(&mut self) {
        for pid in crate::modes::processes_of(&self.0) {
            let _ = std::process::Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
    }
}

/// A number after `prefix` in `text`.
fn number_after(text: &str, prefix: &str) -> u32 {
    text.split(prefix).nth(1).and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()).unwrap_or(0)
}

/// A three-job application (`keyed-sums` three times, the second one slow, with checkpoints and
/// exactly-once output) on its own HA cluster, started with `run-application -t process`.
struct HaApplication {
    /// Kills whatever stays, on a failure (first: before the cluster's directory goes).
    _reaper: Reaper,
    c: HaCluster,
    settings: Vec<String>,
    jobs: [(u64, u64, Option<u64>); 3],
    outs: Vec<std::path::PathBuf>,
}

impl HaApplication {
    fn new(kind: &'static str) -> HaApplication {
        let c = HaCluster::new(kind);
        let dir = c.dir.path().to_path_buf();
        let mut settings = c.settings(&c.service.address());
        settings.extend([
            format!("job-result-store.storage-path={}", dir.join("results").display()),
            "execution.checkpointing.interval=200ms".to_string(),
            format!("execution.checkpointing.dir={}", dir.join("cp").display()),
            "restart-strategy.type=fixed-delay".to_string(),
            "restart-strategy.fixed-delay.attempts=20".to_string(),
            "restart-strategy.fixed-delay.delay=100ms".to_string(),
        ]);
        HaApplication {
            settings,
            jobs: [(3000, 10, None), (8000, 20, Some(2000)), (2000, 5, None)],
            outs: (0..3).map(|i| dir.join(format!("out-{i}"))).collect(),
            _reaper: Reaper(dir),
            c,
        }
    }

    fn dir(&self) -> &Path {
        self.c.dir.path()
    }

    /// `run-application -t process weir -D ... -- keyed-sums A keyed-sums B keyed-sums C`.
    fn run(&self) -> std::process::Output {
        let mut cmd = std::process::Command::new(WEIR);
        cmd.args(["run-application", "-t", "process", WEIR]);
        for s in &self.settings {
            cmd.args(["-D", s]);
        }
        cmd.arg("--");
        for ((count, keys, rate), out) in self.jobs.iter().zip(&self.outs) {
            let rate = rate.map(|r| format!(r#", "rate": {r}"#)).unwrap_or_default();
            cmd.args([
                "keyed-sums".to_string(),
                format!(r#"{{"count": {count}, "keys": {keys}, "output": "{}"{rate}}}"#, out.display()),
            ]);
        }
        cmd.env("TMPDIR", self.dir())
            .env("WEIR_LOG", "info")
            .output()
            .unwrap_or_else(|e| panic!("cannot run weir: {e}"))
    }

    /// Starts the application; its id and its JobManager's pid.
    fn start(&self) -> (String, u32) {
        let first = self.run();
        assert!(first.status.success(), "{}", text(&first.stderr));
        let said = text(&first.stdout);
        let id = said.split_whitespace().nth(1).unwrap_or_default().to_string();
        let pid = number_after(&said, "JobManager pid ");
        assert!(id.len() == 32 && pid > 0, "{said}");
        (id, pid)
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir().join("results").join(name)).unwrap_or_default()
    }

    fn record(&self, id: &str) -> Value {
        serde_json::from_str(&self.log(&format!("{id}.json"))).unwrap_or(Value::Null)
    }

    /// Waits (bounded) until the first job finished and the second completed two checkpoints;
    /// the second's id, and the record then.
    fn second_job_checkpointed(&self, id: &str) -> (String, Value) {
        let start = Instant::now();
        loop {
            let r = self.record(id);
            if r["jobs"][1]["status"] == "RUNNING" {
                let job = r["jobs"][1]["id"].as_str().unwrap_or_default().to_string();
                let rest = r["rest"].as_str().unwrap_or_default().to_string();
                let (_, cp) = http("GET", &rest, &format!("/jobs/{job}/checkpoints"), None);
                if cp["counts"]["completed"].as_u64().unwrap_or(0) >= 2 {
                    assert_eq!(r["jobs"][0]["status"], "FINISHED", "{r}");
                    return (job, r);
                }
            }
            assert!(start.elapsed() < Duration::from_secs(60), "the second job never ran with checkpoints: {r}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits (bounded) until the application ended with three finished jobs, each output exactly
    /// once, and every process of it is gone; its record.
    fn succeeded(&self, id: &str) -> Result<Value> {
        let start = Instant::now();
        let done = loop {
            let r = self.record(id);
            if r["status"].as_str().is_some_and(|s| s != "RUNNING") {
                break r;
            }
            assert!(start.elapsed() < Duration::from_secs(90), "the application did not end: {r}");
            std::thread::sleep(Duration::from_millis(50));
        };
        assert_eq!(done["status"], "SUCCEEDED", "{done}");
        let statuses: Vec<&str> = done["jobs"]
            .as_array()
            .map(|a| a.iter().filter_map(|j| j["status"].as_str()).collect())
            .unwrap_or_default();
        assert_eq!(statuses, vec!["FINISHED"; 3], "{done}");
        for ((count, keys, _), out) in self.jobs.iter().zip(&self.outs) {
            exactly_once(out, *count, *keys)?;
        }
        let start = Instant::now();
        while !crate::modes::processes_of(self.dir()).is_empty() {
            let stay: Vec<String> = crate::modes::processes_of(self.dir())
                .iter()
                .map(|pid| std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default())
                .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
                .collect();
            assert!(start.elapsed() < Duration::from_secs(20), "processes stay: {stay:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(done)
    }
}

/// A multi-`execute` application on its own HA cluster (`run-application -t process`, run twice:
/// the second JobManager stands by): its leader is killed with `kill -9` during the second of three
/// jobs. The standby runs `main` again: the first job, which ended, is not run again; the second
/// resumes from its latest checkpoint; the third runs. Every output is exactly once.
fn application_failover(kind: &'static str) -> Result<()> {
    let app = HaApplication::new(kind);
    let (id, leader_pid) = app.start();
    // The same command again: a standby for the same application (its id derives from the cluster id).
    let second = app.run();
    assert!(second.status.success(), "{}", text(&second.stderr));
    let said = text(&second.stdout);
    assert!(said.contains(&format!("Application {id} already runs")) && said.contains("stands by"), "{said}");
    let standby_pid = number_after(&said, "a standby JobManager (pid ");
    assert!(standby_pid > 0, "{said}");
    let (second_job, _) = app.second_job_checkpointed(&id);
    let killed = std::process::Command::new("kill").args(["-9", &leader_pid.to_string()]).status();
    assert!(killed.is_ok_and(|s| s.success()), "cannot kill the leading JobManager {leader_pid}");

    let done = app.succeeded(&id)?;
    assert_eq!(done["pid"], standby_pid, "the standby ended the application: {done}");
    assert_eq!(done["jobs"][1]["id"], second_job.as_str(), "{done}");
    let log = app.log(&format!("{id}.standby-1.log"));
    assert!(log.contains("the job ended under an earlier leader: not run again"), "{log}");
    assert!(log.contains("the job was recovered: main follows it"), "{log}");
    // main got the first job's result from the job result store, as if it had run it.
    assert_eq!(log.matches("(keyed-sums) FINISHED").count(), 3, "{log}");
    // One application per cluster id: the same command now says it ended.
    let again = app.run();
    assert_eq!(again.status.code(), Some(2), "{}", text(&again.stdout));
    assert!(text(&again.stderr).contains("ended already (SUCCEEDED)"), "{}", text(&again.stderr));
    Ok(())
}

/// The leader killed with no standby: its record still says RUNNING. The same command again does
/// not answer "already runs" for the dead JobManager: the new one takes the application over.
#[test]
fn etcd_an_application_whose_only_jobmanager_was_killed_is_taken_over_by_the_next_run() -> Result<()> {
    let app = HaApplication::new("etcd");
    let (id, leader_pid) = app.start();
    app.second_job_checkpointed(&id);
    let killed = std::process::Command::new("kill").args(["-9", &leader_pid.to_string()]).status();
    assert!(killed.is_ok_and(|s| s.success()), "cannot kill the leading JobManager {leader_pid}");
    let again = app.run();
    assert!(again.status.success(), "{}", text(&again.stderr));
    let said = text(&again.stdout);
    assert!(said.contains(&format!("was left RUNNING by a JobManager that is gone (pid {leader_pid})")), "{said}");
    assert!(!said.contains("already runs"), "{said}");
    let done = app.succeeded(&id)?;
    assert_ne!(done["pid"], leader_pid, "{done}");
    Ok(())
}

#[test]
fn etcd_a_multi_job_application_survives_the_kill_of_its_jobmanager() -> Result<()> {
    application_failover("etcd")
}

#[test]
fn zookeeper_a_multi_job_application_survives_the_kill_of_its_jobmanager() -> Result<()> {
    application_failover("zookeeper")
}

/// An application with a single JobManager whose coordination service stops during the second
/// job and comes back: the JobManager suspends the job, `main` waits (it is not failed), and once
/// the JobManager leads again the job resumes from its checkpoint and `main` goes on.
fn application_service_restart(kind: &'static str) -> Result<()> {
    let mut app = HaApplication::new(kind);
    let (id, pid) = app.start();
    let (_, record) = app.second_job_checkpointed(&id);
    let rest = record["rest"].as_str().unwrap_or_default().to_string();
    app.c.service.stop();
    let start = Instant::now();
    while http("GET", &rest, "/weir/ha", None).1["leading"] == true {
        assert!(start.elapsed() < Duration::from_secs(10), "the JobManager kept leading without the service");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(app.record(&id)["status"], "RUNNING", "the application outlives the loss of leadership");
    app.c.service.restart();
    let done = app.succeeded(&id)?;
    assert_eq!(done["pid"], pid, "{done}");
    let log = app.log(&format!("{id}.log"));
    assert!(log.contains("leadership lost: suspending every job"), "{log}");
    Ok(())
}

#[test]
fn etcd_an_application_waits_out_the_loss_of_etcd() -> Result<()> {
    application_service_restart("etcd")
}

#[test]
fn zookeeper_an_application_waits_out_the_loss_of_zookeeper() -> Result<()> {
    application_service_restart("zookeeper")
}
