//! Checkpoints and savepoints on S3: a real S3-compatible server (`s3s-fs`, installed from
//! crates.io) on loopback, reached through the standard AWS environment variables.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use weir::{Error, Result};

use crate::checkpoints::{committed, expected_sums};
use crate::cluster::{Cluster, Proc, job_id, text};

/// An S3-compatible server (s3s-fs) on a loopback port, storing objects under `root`; stopped on
/// drop.
pub(crate) struct S3Server {
    server: weir_files::testing::S3Server,
    pub(crate) endpoint: String,
    root: PathBuf,
}

impl S3Server {
    pub(crate) fn start(root: &Path, bucket: &str) -> S3Server {
        let server = weir_files::testing::S3Server::start(weir_files::testing::Kind::S3sFs, root, bucket);
        S3Server { endpoint: server.endpoint.clone(), server, root: root.to_path_buf() }
    }

    /// What every weir process needs to reach the server.
    pub(crate) fn env(&self) -> Vec<(String, String)> {
        self.server.env()
    }

    /// The objects stored under `prefix` of `bucket` (relative paths, sorted).
    fn objects(&self, bucket: &str, prefix: &str) -> Vec<String> {
        fn walk(dir: &Path, base: &Path, out: &mut Vec<String>) {
            for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let p = e.path();
                if p.is_dir() {
                    walk(&p, base, out);
                } else if let Ok(rel) = p.strip_prefix(base) {
                    out.push(rel.display().to_string());
                }
            }
        }
        let base = self.root.join(bucket);
        let mut out = Vec::new();
        walk(&base.join(prefix), &base, &mut out);
        out.sort();
        out
    }
}

#[test]
fn checkpoints_and_savepoints_on_an_s3_server_survive_a_kill_and_a_rescale() -> Result<()> {
    let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", "/tmp", e))?;
    let s3 = S3Server::start(&dir.path().join("s3"), "state");
    let restart = ["-D", "restart-strategy.type=fixed-delay", "-D", "restart-strategy.fixed-delay.delay=50ms"];
    // Two one-slot TaskManagers run the job at parallelism 2; one is a spare.
    let mut c = Cluster::with_env(s3.env(), &restart, 3, 1);
    let out = dir.path().join("out");
    let (count, keys) = (30_000u64, 19u64);
    let submit = |c: &Cluster, p: &str, extra: &[&str]| {
        let args = format!(r#"{{"count": {count}, "keys": {keys}, "rate": 6000, "output": "{}"}}"#, out.display());
        let mut a = vec!["run", "-t", "remote", "-d", "keyed-sums", "--args", &args, "-p", p];
        a.extend(["-D", "execution.checkpointing.interval=200ms", "-D", "execution.checkpointing.dir=s3://state/cp"]);
        // Sums in the disk backend, checkpointed incrementally: links of earlier checkpoints on S3.
        a.extend(["-D", "state.backend.type=disk", "-D", "state.backend.incremental=true"]);
        a.extend(["-D", "state.backend.disk.cache-entries=5"]);
        a.extend(extra);
        let submitted = c.weir(&a);
        let id = job_id(&submitted);
        assert!(!id.is_empty(), "{}", text(&submitted.stderr));
        id
    };
    let first = submit(&c, "2", &[]);
    c.wait_for(|j| j["counts"]["completed"].as_u64().unwrap_or(0) >= 1, &format!("/jobs/{first}/checkpoints"));
    // Every retained checkpoint is on the server: metadata and state files.
    let stored = s3.objects("state", &format!("cp/{first}"));
    assert!(stored.iter().any(|o| o.ends_with("/_metadata")), "{stored:?}");
    assert!(stored.iter().any(|o| o.ends_with(".state")), "{stored:?}");
    // A TaskManager of the job is killed: the job restarts from the checkpoint it reads back.
    let (_, job) = c.get(&format!("/jobs/{first}"));
    let victim = job["weir-taskmanagers"][0].as_str().unwrap_or_default().to_string();
    assert!(!victim.is_empty(), "{job}");
    c.kill_taskmanager(&victim);
    let cps = c.wait_for(|j| j["counts"]["restored"] == 1, &format!("/jobs/{first}/checkpoints"));
    assert!(cps["latest"]["restored"]["external_path"].as_str().unwrap_or_default().starts_with("s3://state/cp/"));
    // RUNNING again, every vertex too.
    let all_running = |j: &serde_json::Value| {
        j["state"] == "RUNNING" && j["vertices"].as_array().is_some_and(|v| v.iter().all(|v| v["status"] == "RUNNING"))
    };
    c.wait_for(all_running, &format!("/jobs/{first}"));
    // Stopped with a savepoint on S3, then resumed from it at parallelism 1 (the spare is gone).
    let stopped = c.weir(&["stop", &first, "-p", "s3://state/savepoints"]);
    assert!(stopped.status.success(), "{}", text(&stopped.stderr));
    let stdout = text(&stopped.stdout);
    let path = stdout
        .lines()
        .find_map(|l| l.strip_prefix("Savepoint completed. Path: "))
        .ok_or_else(|| Error::internal(format!("no savepoint path in: {stdout}")))?
        .to_string();
    assert!(path.starts_with("s3://state/savepoints/"), "{path}");
    let done = c.wait_for(|j| j["state"] == "FINISHED" || j["state"] == "FAILED", &format!("/jobs/{first}"));
    assert_eq!(done["state"], "FINISHED", "{done}");
    let (partial, _) = committed(&out)?;
    assert!(partial.len() < count as usize, "stopped midway: {} lines", partial.len());
    let second = submit(&c, "1", &["-s", &path]);
    let done = c.wait_end(&second, Duration::from_secs(60));
    assert_eq!(done["state"], "FINISHED", "{done}");
    let (lines, _) = committed(&out)?;
    assert_eq!(lines, expected_sums(count, keys), "the output differs from one failure-free run");
    // Disposing of the savepoint removes its objects from the server.
    let sp_prefix = path.trim_start_matches("s3://state/").to_string();
    assert!(s3.objects("state", &sp_prefix).iter().any(|o| o.ends_with("_metadata")));
    let disposed = c.weir(&["savepoint", "--dispose", &path]);
    assert!(disposed.status.success(), "{}", text(&disposed.stderr));
    assert_eq!(s3.objects("state", &sp_prefix), Vec::<String>::new());
    // Wrong credentials: a clear error from the server, not a hang.
    let mut bad = s3.env();
    bad[1].1 = "wrong".into();
    let refused = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["savepoint", "--dispose", "s3://state/cp"])
        .envs(bad)
        .output()
        .map_err(|e| Error::internal(e.to_string()))?;
    assert!(!refused.status.success());
    assert!(text(&refused.stderr).contains("s3://state/cp"), "{}", text(&refused.stderr));
    Ok(())
}

/// A TCP proxy on loopback in front of `target` that can stall: while stalled it moves no byte
/// either way (connections stay open, as with an S3 endpoint that stops answering). Its threads
/// end when it is dropped.
pub(crate) struct StallingProxy {
    pub(crate) port: u16,
    stalled: Arc<AtomicBool>,
    closed: Arc<AtomicBool>,
}

impl StallingProxy {
    pub(crate) fn start(target: String) -> StallingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("cannot bind the proxy: {e}"));
        let port = listener.local_addr().map(|a| a.port()).unwrap_or_else(|e| panic!("proxy address: {e}"));
        listener.set_nonblocking(true).unwrap_or_else(|e| panic!("proxy: {e}"));
        let (stalled, closed) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
        let (st, cl) = (stalled.clone(), closed.clone());
        std::thread::spawn(move || {
            while !cl.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((client, _)) => {
                        let Ok(server) = TcpStream::connect(&target) else { continue };
                        for (from, to) in [(&client, &server), (&server, &client)] {
                            let (Ok(from), Ok(to)) = (from.try_clone(), to.try_clone()) else { continue };
                            let (st, cl) = (st.clone(), cl.clone());
                            std::thread::spawn(move || pump(from, to, &st, &cl));
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        StallingProxy { port, stalled, closed }
    }

    pub(crate) fn stall(&self, on: bool) {
        self.stalled.store(on, Ordering::SeqCst);
    }
}

impl Drop for StallingProxy {
    fn drop(&mut self) {
        self.closed.store(true, Ordering::SeqCst);
    }
}

/// Copies `from` to `to` until either closes or the proxy does, moving nothing while `stalled`.
fn pump(mut from: TcpStream, mut to: TcpStream, stalled: &AtomicBool, closed: &AtomicBool) {
    let _ = from.set_nonblocking(false);
    let _ = from.set_read_timeout(Some(Duration::from_millis(20)));
    let mut buf = vec![0u8; 64 << 10];
    while !closed.load(Ordering::SeqCst) {
        if stalled.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(10));
            continue;
        }
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => break,
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Write);
}

/// The JobManager's storage stalls for 20 s while it completes a checkpoint and while a job is
/// submitted that restores from a checkpoint there: it keeps answering REST at once and loses no
/// TaskManager (their heartbeats go on); the checkpoint completes, and the submission goes
/// through, when storage answers again. The JobManager reaches S3 through the stalling proxy, the
/// TaskManager directly, so that it is the JobManager's own reads and writes that hang.
#[test]
fn a_jobmanager_whose_storage_stalls_still_answers_and_keeps_its_taskmanagers() -> Result<()> {
    let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", "/tmp", e))?;
    let s3 = S3Server::start(&dir.path().join("s3"), "state");
    let proxy = StallingProxy::start(s3.endpoint.trim_start_matches("http://").to_string());
    let mut through_proxy = s3.env();
    for (k, v) in through_proxy.iter_mut() {
        if k == "AWS_ENDPOINT_URL" {
            *v = format!("http://127.0.0.1:{}", proxy.port);
        }
    }
    let mut c = Cluster::with_env(through_proxy, &[], 0, 1);
    c.env = s3.env();
    c.add_taskmanager(1);
    c.wait_for(|o| o["taskmanagers"] == 1, "/overview");
    let args = r#"{"rate": 2000}"#;
    // Checkpoints are retained (not replaced by the next), so that the one the second job restores
    // from is still there when storage answers again.
    let out = c.weir(&generate_on_s3(args, &["-D", "execution.checkpointing.num-retained=1000"]));
    let id = job_id(&out);
    assert!(!id.is_empty(), "{}", text(&out.stderr));
    let checkpoints = format!("/jobs/{id}/checkpoints");
    let latest = c.wait_for(|j| j["counts"]["completed"].as_u64().unwrap_or(0) >= 2, &checkpoints);
    let restore_from = latest["latest"]["completed"]["external_path"].as_str().unwrap_or_default().to_string();
    assert!(restore_from.starts_with("s3://state/cp/"), "{latest}");

    proxy.stall(true);
    let stalled_at = Instant::now();
    // A submission that restores from storage reads the snapshot's metadata there: it waits out the
    // stall on a thread of its own, not on the ones REST and heartbeats need.
    let mut submitting = submit_restoring(&c, &restore_from, args)?;
    let mut slowest = Duration::ZERO;
    while stalled_at.elapsed() < Duration::from_secs(20) {
        for path in ["/overview", checkpoints.as_str()] {
            let asked = Instant::now();
            let (status, answer) = c.get(path);
            let took = asked.elapsed();
            slowest = slowest.max(took);
            assert_eq!(status, 200, "{path} during the stall: {answer}");
            assert!(took < Duration::from_secs(1), "{path} took {took:?} while storage stalled");
            if path == "/overview" {
                assert_eq!(answer["taskmanagers"], 1, "a TaskManager was lost while storage stalled: {answer}");
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let during = c.get(&checkpoints).1;
    let waiting = matches!(submitting.child.try_wait(), Ok(None));
    assert!(waiting, "the submission that restores from the stalled storage did not wait for it");
    proxy.stall(false);
    // Storage answers again: the submission goes through (the JobManager had room for it: the
    // TaskManager's one slot is taken, so it waits for slots, which is enough here).
    let second = submitted_job(&mut submitting);

    // Storage answers again: the checkpoint that waited on it completes, and later ones follow.
    let before = during["counts"]["completed"].as_u64().unwrap_or(0);
    let after = c.wait_for(|j| j["counts"]["completed"].as_u64().unwrap_or(0) >= before + 2, &checkpoints);
    let waited = after["history"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|h| h["status"] == "COMPLETED")
        .filter_map(|h| h["end_to_end_duration"].as_u64())
        .max()
        .unwrap_or(0);
    assert!(waited >= 15_000, "no checkpoint waited out the stall (longest {waited} ms): {after}");
    let (_, job) = c.get(&format!("/jobs/{id}"));
    assert_eq!(job["state"], "RUNNING", "{job}");
    let (_, exceptions) = c.get(&format!("/jobs/{id}/exceptions"));
    assert_eq!(exceptions["all-exceptions"], serde_json::json!([]), "the job failed meanwhile: {exceptions}");
    eprintln!("REST answered within {slowest:?} throughout a 20 s storage stall");
    for job in [&id, &second] {
        let cancel = c.weir(&["cancel", job]);
        assert!(cancel.status.success(), "{}", text(&cancel.stderr));
    }
    Ok(())
}

/// `run -t remote -d` of the `generate` job with `args` at parallelism 1, checkpointing every
/// 100 ms to `s3://state/cp`, with `extra` options.
fn generate_on_s3<'a>(args: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut all = vec!["run", "-t", "remote", "-d"];
    all.extend_from_slice(extra);
    all.extend(["generate", "--args", args, "-p", "1"]);
    all.extend(["-D", "execution.checkpointing.interval=100ms", "-D", "execution.checkpointing.dir=s3://state/cp"]);
    all
}

/// Starts `weir run -t remote -d -s FROM generate` against `c` in the background: a submission that
/// reads the snapshot's metadata from the JobManager's checkpoint storage.
fn submit_restoring(c: &Cluster, from: &str, args: &str) -> Result<Proc> {
    let child = c
        .weir_command(&generate_on_s3(args, &["-s", from]))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::io("cannot start", "weir run", e))?;
    Ok(Proc::from(child))
}

/// Waits (a minute at most) for a submission started by [`submit_restoring`] to succeed; its job id.
fn submitted_job(submitting: &mut Proc) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        match submitting.child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
            other => panic!("the submission did not end within a minute of the stall: {other:?}"),
        }
    };
    let (mut out, mut err) = (String::new(), String::new());
    if let Some(mut o) = submitting.child.stdout.take() {
        let _ = o.read_to_string(&mut out);
    }
    if let Some(mut e) = submitting.child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    assert!(status.success(), "{err}");
    let id = out.lines().find_map(|l| l.strip_prefix("Job has been submitted with JobID ")).unwrap_or_default();
    assert!(!id.is_empty(), "{out}");
    id.to_string()
}
