//! `weir cluster start|stop|status`: a standalone session cluster of one JobManager and N
//! TaskManagers on this host, in the background, with log files and a state file in a cluster
//! directory.

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use weir_core::{Error, Result};

use crate::rest::RestClient;

/// What `cluster start` wrote, so that `stop` and `status` find the processes.
#[derive(Debug, Serialize, Deserialize)]
pub struct ClusterState {
    /// The REST endpoint, `host:port`.
    pub rest: String,
    /// The TaskManager endpoint, `host:port`.
    pub rpc: String,
    /// The JobManager's pid.
    pub jobmanager: u32,
    /// The TaskManagers' pids.
    pub taskmanagers: Vec<u32>,
    /// When each of them started (`/proc/PID/stat`'s start time, by pid), so that a pid the
    /// system gave to another process since is never signalled.
    #[serde(default)]
    pub started: std::collections::BTreeMap<u32, u64>,
}

impl ClusterState {
    /// Its processes that are still the ones it started and still running.
    fn running(&self) -> Vec<u32> {
        std::iter::once(self.jobmanager)
            .chain(self.taskmanagers.iter().copied())
            .filter(|p| self.started.get(p).is_some_and(|t| start_time(*p) == Some(*t)) && alive(*p))
            .collect()
    }

    /// Its pids that run another process now (the system reused them), or that the state file
    /// has no start time for (an older weir wrote it).
    fn strangers(&self) -> Vec<u32> {
        std::iter::once(self.jobmanager)
            .chain(self.taskmanagers.iter().copied())
            .filter(|p| alive(*p) && self.started.get(p).is_none_or(|t| start_time(*p) != Some(*t)))
            .collect()
    }
}

/// The cluster directory: `dir`, or `weir/cluster` under `$XDG_STATE_HOME` (else
/// `~/.local/state`), never a fixed path under `/tmp` that another user could create first.
pub fn directory(dir: Option<&Path>) -> Result<PathBuf> {
    if let Some(d) = dir {
        return Ok(d.to_path_buf());
    }
    let state = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
        .ok_or_else(|| Error::Config("neither XDG_STATE_HOME nor HOME is set: give the cluster a --dir".into()))?;
    Ok(state.join("weir").join("cluster"))
}

/// When process `pid` started, in clock ticks since boot (field 22 of `/proc/PID/stat`).
fn start_time(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The fields after the command name (which may hold spaces) start at field 3.
    stat.rsplit_once(')')?.1.split_whitespace().nth(19)?.parse().ok()
}

fn state_file(dir: &Path) -> PathBuf {
    dir.join("cluster.json")
}

fn alive(pid: u32) -> bool {
    // A zombie (exited, not yet reaped) counts as gone.
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| s.rsplit(')').next().map(|r| !r.trim_start().starts_with('Z')).unwrap_or(false))
        .unwrap_or(false)
}

fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill").args([sig, &pid.to_string()]).stdout(Stdio::null()).stderr(Stdio::null()).status();
}

/// Reads the state of the cluster in `dir`.
pub fn read_state(dir: &Path) -> Result<ClusterState> {
    let path = state_file(dir);
    let text = fs::read_to_string(&path).map_err(|e| {
        Error::io("no cluster was started from this directory (run `weir cluster start` first):", &path, e)
    })?;
    // Damaged data, not a setting: `cluster start` writes the file anew.
    serde_json::from_str(&text).map_err(|e| Error::Storage {
        context: "cannot read the cluster state file".into(),
        location: path.display().to_string(),
        message: format!(
            "it is not a weir cluster state file ({e}): it is damaged or from another weir version; stop any \
             processes still running from this directory yourself, then remove the file"
        ),
        blame: weir_core::Blame::External,
        retryable: false,
    })
}

/// Starts a process of this executable in the background, output to `log`, in its own process
/// group (a Ctrl-C in the terminal does not reach it).
fn spawn(args: &[String], log: &Path) -> Result<u32> {
    let exe = std::env::current_exe().map_err(|e| Error::internal(format!("cannot locate this executable: {e}")))?;
    let out = fs::File::create(log).map_err(|e| Error::io("cannot create log file", log, e))?;
    let err = out.try_clone().map_err(|e| Error::io("cannot open log file", log, e))?;
    let child = Command::new(exe)
        .args(args)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0)
        .spawn()
        .map_err(|e| Error::io("cannot start a process for", log, e))?;
    Ok(child.id())
}

/// Waits (bounded) for a `ready` line in a log; `Err` with the log's last lines if the process
/// exits or time runs out.
fn wait_ready(log: &Path, pid: u32, within: Duration) -> Result<String> {
    let start = Instant::now();
    loop {
        let text = fs::read_to_string(log).unwrap_or_default();
        if let Some(line) = text.lines().find(|l| l.contains(" ready: ")) {
            return Ok(line.to_string());
        }
        let exited = !alive(pid);
        if exited || start.elapsed() > within {
            let tail: Vec<&str> = text.lines().rev().take(5).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            let how = if exited {
                "it exited".to_string()
            } else {
                format!("it was not ready within {} s", within.as_secs())
            };
            // The process failed, not the command: its log says why.
            return Err(Error::external(
                format!("a cluster process (pid {pid})"),
                format!(
                    "it did not start ({how}); fix what its log {} says and start the cluster again; the log ends \
                     with:\n{}",
                    log.display(),
                    tail.join("\n")
                ),
                !exited,
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn field<'a>(line: &'a str, name: &str) -> &'a str {
    line.split_whitespace().find_map(|w| w.strip_prefix(name)).unwrap_or_default()
}

/// `cluster start`: starts a JobManager and `taskmanagers` TaskManagers with `slots` slots each;
/// returns once all are registered. On any failure, whatever was started is stopped again.
/// `role_prefix` is what this executable needs before a role (`--weir` in a user's program).
pub fn start(
    dir: &Path,
    taskmanagers: u32,
    slots: u32,
    settings: &[String],
    role_prefix: &[&str],
) -> Result<ClusterState> {
    if slots == 0 {
        return Err(Error::Config("--slots must be at least 1".into()));
    }
    // Its state file says which processes `stop` signals: a new directory is private to this
    // user, and one that exists must be this user's.
    if dir.exists() {
        use std::os::unix::fs::MetadataExt;
        let owner = fs::metadata(dir).map(|m| m.uid()).map_err(|e| Error::io("cannot read", dir, e))?;
        let me = fs::metadata("/proc/self").map(|m| m.uid()).map_err(|e| Error::io("cannot read", "/proc/self", e))?;
        if owner != me {
            return Err(Error::Config(format!(
                "the cluster directory {} belongs to another user (uid {owner}); give a --dir of your own",
                dir.display()
            )));
        }
    } else {
        weir_core::blob::private_dir(dir).map_err(|e| Error::io("cannot create the cluster directory", dir, e))?;
    }
    if let Ok(old) = read_state(dir) {
        let running = old.running();
        if !running.is_empty() {
            return Err(Error::Config(format!(
                "a cluster started from {} is still running (pids {running:?}); stop it with `weir cluster stop`",
                dir.display()
            )));
        }
    }
    // Every process of the cluster proves a secret of its own on internal connections (unless
    // this process has one in its environment, which they inherit); it stays in the private
    // directory, where more TaskManagers can be pointed at it.
    let mut settings = settings.to_vec();
    let named = settings.iter().any(|s| s.starts_with("weir.security.cluster-secret-file="));
    if !named && weir_security::fresh_secret()?.is_some() {
        let file = dir.join("cluster.secret");
        weir_security::write_secret_file(&file)?;
        settings.extend(["-D".to_string(), format!("weir.security.cluster-secret-file={}", file.display())]);
    }
    let t0 = Instant::now();
    let mut started: Vec<u32> = Vec::new();
    let result = (|| -> Result<ClusterState> {
        let mut args: Vec<String> = role_prefix.iter().map(|p| p.to_string()).collect();
        args.push("jobmanager".to_string());
        args.extend(settings.iter().cloned());
        let jm_log = dir.join("jobmanager.log");
        let jm = spawn(&args, &jm_log)?;
        started.push(jm);
        let line = wait_ready(&jm_log, jm, Duration::from_secs(10))?;
        let rest = crate::rest::announced(field(&line, "rest=")).to_string();
        let rpc = field(&line, "rpc=").to_string();
        let rpc_port = rpc.rsplit(':').next().unwrap_or_default().to_string();
        let mut tms = Vec::new();
        for i in 0..taskmanagers {
            let mut args: Vec<String> = role_prefix.iter().map(|p| p.to_string()).collect();
            args.push("taskmanager".to_string());
            args.extend(settings.iter().cloned());
            args.extend(["-D".into(), format!("jobmanager.rpc.port={rpc_port}")]);
            args.extend(["-D".into(), format!("taskmanager.numberOfTaskSlots={slots}")]);
            let log = dir.join(format!("taskmanager-{i}.log"));
            let pid = spawn(&args, &log)?;
            started.push(pid);
            tms.push((pid, log));
        }
        for (pid, log) in &tms {
            wait_ready(log, *pid, Duration::from_secs(10))?;
        }
        let client = RestClient::started(&rest);
        let deadline = Instant::now() + Duration::from_secs(10);
        while client.get("/overview")?["taskmanagers"].as_u64() != Some(u64::from(taskmanagers)) {
            if Instant::now() > deadline {
                return Err(Error::external(
                    "the cluster's TaskManagers",
                    "they did not all register within 10 s; their logs are in the cluster directory",
                    true,
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let taskmanagers: Vec<u32> = tms.into_iter().map(|t| t.0).collect();
        let started =
            std::iter::once(jm).chain(taskmanagers.iter().copied()).filter_map(|p| Some((p, start_time(p)?))).collect();
        Ok(ClusterState { rest, rpc, jobmanager: jm, taskmanagers, started })
    })();
    match result {
        Ok(state) => {
            let text = serde_json::to_string_pretty(&state).map_err(|e| Error::internal(e.to_string()))?;
            fs::write(state_file(dir), text).map_err(|e| Error::io("cannot write the cluster state file", dir, e))?;
            eprintln!(
                "Started a cluster in {:.0} ms: JobManager (pid {}), REST {}, {} TaskManager(s) with {} slot(s) \
                 each; logs in {}",
                t0.elapsed().as_secs_f64() * 1e3,
                state.jobmanager,
                crate::rest::url(&state.rest),
                taskmanagers,
                slots,
                dir.display()
            );
            Ok(state)
        }
        Err(e) => {
            stop_pids(&started, Duration::from_secs(5));
            Err(e)
        }
    }
}

/// Asks processes to stop (SIGTERM), then kills the ones still running after `grace`.
fn stop_pids(pids: &[u32], grace: Duration) {
    for &p in pids {
        if alive(p) {
            signal(p, "-TERM");
        }
    }
    let deadline = Instant::now() + grace;
    while pids.iter().any(|&p| alive(p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    for &p in pids {
        if alive(p) {
            signal(p, "-KILL");
        }
    }
}

/// `cluster stop`: shuts the cluster down through REST (`DELETE /cluster`), then makes sure every
/// process it started is gone.
pub fn stop(dir: &Path) -> Result<()> {
    let state = read_state(dir)?;
    let strangers = state.strangers();
    if !strangers.is_empty() {
        eprintln!(
            "Not signalling pids {strangers:?}: they are not the processes this cluster started (the system gave \
             their numbers to others since, or an older weir wrote {}).",
            state_file(dir).display()
        );
    }
    let pids = state.running();
    // Only to a JobManager that is still this cluster's (another may listen on its port now).
    if pids.contains(&state.jobmanager) {
        let _ = RestClient::started(&state.rest).delete("/cluster");
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while pids.iter().any(|&p| alive(p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    stop_pids(&pids, Duration::from_secs(5));
    let _ = fs::remove_file(state_file(dir));
    eprintln!("Stopped the cluster (pids {pids:?}).");
    Ok(())
}

/// `cluster status`: what is running.
pub fn status(dir: &Path) -> Result<()> {
    let state = read_state(dir)?;
    let overview = RestClient::started(&state.rest).get("/overview")?;
    println!(
        "JobManager: pid {} ({}), REST {}",
        state.jobmanager,
        if state.running().contains(&state.jobmanager) { "running" } else { "gone" },
        crate::rest::url(&state.rest)
    );
    println!(
        "TaskManagers: {} registered, {} slots ({} free)",
        overview["taskmanagers"], overview["slots-total"], overview["slots-available"]
    );
    println!(
        "Jobs: {} running, {} finished, {} cancelled, {} failed",
        overview["jobs-running"], overview["jobs-finished"], overview["jobs-cancelled"], overview["jobs-failed"]
    );
    Ok(())
}
