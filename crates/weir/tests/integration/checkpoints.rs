//! Checkpoints, recovery and exactly-once output.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use weir::builtin::{KEYED_SUMS, KeyedSumsArgs};
use weir::{Error, Result};

use crate::driver;

/// The lines `keyed-sums` writes for `count` numbers and `keys` keys, sorted.
pub fn expected_sums(count: u64, keys: u64) -> Vec<String> {
    let mut sums = vec![0u64; keys as usize];
    let mut lines: Vec<String> = (0..count)
        .map(|i| {
            let k = i % keys;
            sums[k as usize] += i;
            format!("{k} {}", sums[k as usize])
        })
        .collect();
    lines.sort();
    lines
}

/// Every committed line in `dir` (visible files), sorted, and the names of all files.
pub fn committed(dir: &Path) -> Result<(Vec<String>, Vec<String>)> {
    let mut lines = Vec::new();
    let mut names = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io("cannot list output", dir, e))?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with('.') {
            let text = std::fs::read_to_string(entry.path()).map_err(|e| Error::io("cannot read", entry.path(), e))?;
            lines.extend(text.lines().map(str::to_string));
        }
        names.push(name);
    }
    lines.sort();
    names.sort();
    Ok((lines, names))
}

#[test]
fn checkpoints_complete_and_commit_the_output_of_a_local_job_exactly_once() -> Result<()> {
    let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", "/tmp", e))?;
    let out = dir.path().join("out");
    let mut d = driver(weir::Registry::new().register(&KEYED_SUMS), 2);
    d.set("execution.checkpointing.interval", "20ms")?;
    d.set("execution.checkpointing.dir", &dir.path().join("cp").display().to_string())?;
    d.set("execution.checkpointing.num-retained", "2")?;
    let (count, keys) = (300_000, 97);
    let args = KeyedSumsArgs { count, keys, rate: Some(1_000_000.0), output: out.clone(), parallelism: 2 };
    let client = d.execute_async(&KEYED_SUMS, args)?;
    let result = client.wait_timeout(Duration::from_secs(120))?;
    assert!(result.is_some(), "the job did not finish in 2 minutes");
    let stats = client.checkpoint_stats().ok_or_else(|| Error::internal("no checkpoint statistics"))?;
    assert!(stats.completed >= 2, "{stats:?}");
    assert_eq!(stats.failed, 0, "{stats:?}");
    let latest = stats.history.iter().find(|h| h.status == "COMPLETED").ok_or_else(|| Error::internal("none"))?;
    assert_eq!(latest.num_acknowledged_subtasks, latest.num_subtasks);
    let (lines, names) = committed(&out)?;
    assert_eq!(lines.len(), count as usize);
    assert_eq!(lines, expected_sums(count, keys));
    assert!(names.iter().all(|n| n.starts_with("part-")), "only committed files are left: {names:?}");
    // Two checkpoints retained, each with its metadata listing every file.
    let job_dir = dir.path().join("cp").join(client.job_id().to_string());
    let mut kept: Vec<String> = std::fs::read_dir(&job_dir)
        .map_err(|e| Error::io("cannot list", &job_dir, e))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    kept.sort();
    assert_eq!(kept.len(), 2, "{kept:?}");
    for k in kept {
        let meta = std::fs::read(job_dir.join(&k).join("_metadata")).map_err(|e| Error::io("read", &job_dir, e))?;
        let meta: serde_json::Value = serde_json::from_slice(&meta).map_err(|e| Error::internal(e.to_string()))?;
        let files = meta["files"].as_array().map(Vec::len).unwrap_or(0);
        let tasks: BTreeMap<String, ()> = std::fs::read_dir(job_dir.join(&k))
            .map_err(|e| Error::io("cannot list", &job_dir, e))?
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".state"))
            .map(|e| (e.file_name().to_string_lossy().into_owned(), ()))
            .collect();
        assert_eq!(files, tasks.len(), "{k}: the metadata lists every state file");
    }
    Ok(())
}

/// `keyed-sums` of `count` numbers and `keys` keys at `rate`, into `dir/out`, checkpointing every
/// `interval` into `dir/cp`: submitted detached to cluster `c` at parallelism `p`, with `extra`
/// arguments.
fn submit_keyed_sums(
    c: &crate::cluster::Cluster,
    dir: &Path,
    (count, keys, rate): (u64, u64, u64),
    p: &str,
    interval: &str,
    extra: &[&str],
) -> std::process::Output {
    let args =
        format!(r#"{{"count": {count}, "keys": {keys}, "rate": {rate}, "output": "{}"}}"#, dir.join("out").display());
    let cp_dir = format!("execution.checkpointing.dir={}", dir.join("cp").display());
    let interval = format!("execution.checkpointing.interval={interval}");
    let mut a = vec!["run", "-t", "remote", "-d", "keyed-sums", "--args", &args, "-p", p, "-D", &interval];
    a.extend(["-D", &cp_dir]);
    a.extend(extra);
    c.weir(&a)
}

/// A small xorshift generator, seeded from the clock (the seed is printed, so that a failing run
/// can be repeated).
struct Rng(u64);

impl Rng {
    fn new() -> Rng {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(7)
            | 1;
        eprintln!("kill test seed: {seed}");
        Rng(seed)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[test]
fn killing_taskmanagers_with_kill_9_loses_and_duplicates_nothing() -> Result<()> {
    use crate::cluster::{Cluster, job_id};
    let restart = [
        "-D",
        "restart-strategy.type=fixed-delay",
        "-D",
        "restart-strategy.fixed-delay.attempts=20",
        "-D",
        "restart-strategy.fixed-delay.delay=50ms",
    ];
    // Two one-slot TaskManagers run the job (parallelism 2); two are spares.
    let mut c = Cluster::with(&restart, 4, 1);
    let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", "/tmp", e))?;
    let out = dir.path().join("out");
    let (count, keys) = (40_000u64, 31u64);
    let submitted = submit_keyed_sums(&c, dir.path(), (count, keys, 8000), "2", "300ms", &[]);
    let id = job_id(&submitted);
    assert!(!id.is_empty(), "{}", crate::cluster::text(&submitted.stderr));
    let mut rng = Rng::new();
    let mut kills = 0;
    // Up to three kills, each at a random moment while the job runs (bounded: the job takes about
    // 5 s plus its restarts).
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(400 + rng.below(900)));
        let (_, job) = c.get(&format!("/jobs/{id}"));
        if job["state"] != "RUNNING" {
            break;
        }
        let placed: Vec<String> = job["weir-taskmanagers"]
            .as_array()
            .map(|a| a.iter().filter_map(|t| t.as_str().map(String::from)).collect())
            .unwrap_or_default();
        if placed.is_empty() {
            continue;
        }
        let victim = placed[rng.below(placed.len() as u64) as usize].clone();
        c.kill_taskmanager(&victim);
        kills += 1;
        // A new spare for the next kill.
        c.add_taskmanager(1);
    }
    let done = c.wait_end(&id, Duration::from_secs(120));
    assert_eq!(done["state"], "FINISHED", "{done}");
    assert!(kills >= 1, "the job ended before any kill");
    let (_, ex) = c.get(&format!("/jobs/{id}/exceptions"));
    // Every kill shows as a lost TaskManager, though not always last: a peer that sees its input
    // end early may report before the JobManager notices the closed connection.
    let all = ex["all-exceptions"].as_array().cloned().unwrap_or_default();
    let lost = all.iter().filter(|e| e["exception"].as_str().unwrap_or_default().contains("was lost")).count();
    assert!(lost >= 1, "no TaskManager loss among the exceptions after {kills} kills: {ex}");
    let (lines, names) = committed(&out)?;
    assert_eq!(lines.len(), count as usize, "committed {} lines of {count} after {kills} kills", lines.len());
    assert_eq!(lines, expected_sums(count, keys), "the committed output differs from a failure-free run");
    assert!(names.iter().filter(|n| n.starts_with('.')).all(|n| n.ends_with(".inprogress") || n.ends_with(".pending")));
    Ok(())
}

#[test]
fn a_job_stopped_with_a_savepoint_at_parallelism_2_goes_on_at_3_with_its_state() -> Result<()> {
    use crate::cluster::{Cluster, http, job_id, text};
    let c = Cluster::new(3, 1);
    let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", "/tmp", e))?;
    let out = dir.path().join("out");
    let (count, keys) = (30_000u64, 23u64);
    let run = |p: &str, extra: &[&str]| submit_keyed_sums(&c, dir.path(), (count, keys, 6000), p, "200ms", extra);
    let first = job_id(&run("2", &[]));
    c.wait_for(|j| j["state"] == "RUNNING", &format!("/jobs/{first}"));
    // A savepoint while it runs, then one it stops with.
    let sp_dir = dir.path().join("savepoints").display().to_string();
    std::thread::sleep(Duration::from_millis(800));
    let taken = c.weir(&["savepoint", &first, &sp_dir]);
    assert!(taken.status.success(), "{}", text(&taken.stderr));
    let (_, cps) = c.get(&format!("/jobs/{first}/checkpoints"));
    assert!(cps["counts"]["completed"].as_u64().unwrap_or(0) >= 1, "{cps}");
    assert!(cps["latest"]["savepoint"]["external_path"].is_string(), "{cps}");
    // Bad requests get 4xx answers that say what is wrong.
    let path_of = |what: &str| format!("/jobs/{first}/{what}");
    let (code, body) = http("POST", &c.rest, &path_of("savepoints"), Some(r#"{"target-dir": "/tmp"}"#));
    assert_eq!(code, 400, "{body}");
    let (code, body) = http("POST", &c.rest, &path_of("savepoints"), Some(r#"{"formatType": "NATIVE"}"#));
    assert_eq!(code, 400, "{body}");
    assert!(body["errors"][0].as_str().unwrap_or_default().contains("CANONICAL"), "{body}");
    let (code, _) = c.get(&path_of("savepoints/no-such-trigger"));
    assert_eq!(code, 404);
    let stopped = c.weir(&["stop", &first, "-p", &sp_dir]);
    assert!(stopped.status.success(), "{}", text(&stopped.stderr));
    let stdout = text(&stopped.stdout);
    let path = stdout
        .lines()
        .find_map(|l| l.strip_prefix("Savepoint completed. Path: "))
        .ok_or_else(|| Error::internal(format!("no savepoint path in: {stdout}")))?
        .to_string();
    let done = c.wait_for(|j| j["state"] == "FINISHED" || j["state"] == "FAILED", &format!("/jobs/{first}"));
    assert_eq!(done["state"], "FINISHED", "{done}");
    let (code, body) = http("POST", &c.rest, &format!("/jobs/{first}/stop"), Some("{}"));
    assert_eq!(code, 409, "a finished job cannot be stopped: {body}");
    let (partial, _) = committed(&out)?;
    assert!(!partial.is_empty() && partial.len() < count as usize, "stopped midway: {} lines", partial.len());
    // A snapshot of another job is refused, with what to do.
    let other = c.weir(&[
        "run",
        "-t",
        "remote",
        "-d",
        "generate",
        "--args",
        r#"{"count": 10}"#,
        "-s",
        &path,
        "-D",
        "execution.checkpointing.interval=1s",
    ]);
    assert!(!other.status.success());
    assert!(text(&other.stderr).contains("--allowNonRestoredState"), "{}", text(&other.stderr));
    // Resumed at parallelism 3: key groups move between subtasks, pending files are committed.
    let second = job_id(&run("3", &["-s", &path]));
    assert!(!second.is_empty());
    let done = c.wait_for(|j| j["state"] == "FINISHED" || j["state"] == "FAILED", &format!("/jobs/{second}"));
    assert_eq!(done["state"], "FINISHED", "{done}");
    let (_, cps) = c.get(&format!("/jobs/{second}/checkpoints"));
    assert_eq!(cps["counts"]["restored"], 1, "{cps}");
    let (lines, _) = committed(&out)?;
    assert_eq!(lines.len(), count as usize);
    assert_eq!(lines, expected_sums(count, keys), "the two runs together differ from one failure-free run");
    // Savepoints can be disposed of.
    let disposed = c.weir(&["savepoint", "--dispose", &path]);
    assert!(disposed.status.success(), "{}", text(&disposed.stderr));
    assert!(!Path::new(&path).exists());
    let again = c.weir(&["savepoint", "--dispose", &path]);
    assert!(!again.status.success());
    Ok(())
}

#[test]
fn after_a_jobmanager_kill_9_a_new_cluster_resumes_from_the_retained_checkpoint() -> Result<()> {
    use crate::cluster::{Cluster, job_id};
    let mut c = Cluster::new(2, 1);
    let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", "/tmp", e))?;
    let (count, keys) = (30_000u64, 17u64);
    // The sums live in the disk backend (a cache of 5 of the 17 keys), checkpointed incrementally.
    let disk = [
        "-D",
        "state.backend.type=disk",
        "-D",
        "state.backend.incremental=true",
        "-D",
        "state.backend.disk.cache-entries=5",
    ];
    let first = job_id(&submit_keyed_sums(&c, dir.path(), (count, keys, 6000), "2", "200ms", &disk));
    assert!(!first.is_empty());
    c.wait_for(|j| j["counts"]["completed"].as_u64().unwrap_or(0) >= 2, &format!("/jobs/{first}/checkpoints"));
    c.kill_jobmanager();
    drop(c);
    let (partial, _) = committed(&dir.path().join("out"))?;
    assert!(partial.len() < count as usize, "the job was killed midway: {} lines", partial.len());
    // The retained checkpoint: the newest one with metadata (a later one may have been cut short).
    let job_dir = dir.path().join("cp").join(&first);
    let newest = std::fs::read_dir(&job_dir)
        .map_err(|e| Error::io("cannot list", &job_dir, e))?
        .flatten()
        .filter(|e| e.path().join("_metadata").exists())
        .filter_map(|e| e.file_name().to_string_lossy().strip_prefix("chk-").and_then(|n| n.parse::<u64>().ok()))
        .max()
        .ok_or_else(|| Error::internal("no completed checkpoint was retained"))?;
    let checkpoint = job_dir.join(format!("chk-{newest}")).display().to_string();
    let meta =
        std::fs::read(job_dir.join(format!("chk-{newest}/_metadata"))).map_err(|e| Error::io("read", &job_dir, e))?;
    let meta: serde_json::Value = serde_json::from_slice(&meta).map_err(|e| Error::internal(e.to_string()))?;
    let linked = meta["files"].as_array().map(|f| f.iter().filter(|f| f["checkpoint"].is_u64()).count()).unwrap_or(0);
    assert!(linked > 0, "the retained checkpoint builds on earlier ones: {meta}");
    // A new JobManager (and TaskManagers) resume the job from it, at another parallelism.
    let c = Cluster::new(3, 1);
    let mut resume = disk.to_vec();
    resume.extend(["-s", &checkpoint]);
    let second = job_id(&submit_keyed_sums(&c, dir.path(), (count, keys, 6000), "3", "200ms", &resume));
    assert!(!second.is_empty());
    let done = c.wait_end(&second, Duration::from_secs(60));
    assert_eq!(done["state"], "FINISHED", "{done}");
    let (lines, names) = committed(&dir.path().join("out"))?;
    assert_eq!(lines, expected_sums(count, keys), "the output differs from one failure-free run");
    assert!(
        names.iter().all(|n| !n.ends_with(".inprogress")),
        "the killed run's in-progress files are gone: {names:?}"
    );
    Ok(())
}

#[test]
fn local_checkpoints_are_made_durable_before_older_ones_go() -> Result<()> {
    // Watched from outside: the job runs under strace, which names the files of every fsync and
    // every removal in order.
    let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", "/tmp", e))?;
    let cp = dir.path().join("cp");
    let trace = dir.path().join("trace");
    let out = std::process::Command::new("strace")
        .args(["-f", "-y", "-qq", "-e", "trace=fsync,unlink,unlinkat", "-o"])
        .arg(&trace)
        .arg(env!("CARGO_BIN_EXE_weir"))
        .args(["run", "generate", "--args", r#"{"count": 3000, "rate": 3000}"#])
        .args(["-D", "execution.checkpointing.interval=100ms", "-D"])
        .arg(format!("execution.checkpointing.dir={}", cp.display()))
        .output()
        .map_err(|e| Error::io("cannot run strace (scripts/test.sh installs it)", "strace", e))?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<String> =
        std::fs::read_to_string(&trace).map_err(|e| Error::io("read", &trace, e))?.lines().map(String::from).collect();
    let synced = |what: &str| lines.iter().position(|l| l.contains("fsync(") && l.contains(what));
    let metadata = |n: u32| format!("/chk-{n}/_metadata>");
    // A checkpoint's state, its metadata and its directory are synced.
    assert!(
        lines.iter().any(|l| l.contains("fsync(") && l.contains("/chk-1/") && !l.contains("_metadata")),
        "no state file synced"
    );
    assert!(synced(&metadata(1)).is_some(), "chk-1's metadata was not synced");
    assert!(synced("/chk-1>").is_some(), "chk-1's directory was not synced");
    // The first checkpoint's metadata goes only after the second's is durable.
    let removed = lines
        .iter()
        .position(|l| {
            l.starts_with(|c: char| c.is_ascii_digit()) && l.contains("unlink") && l.contains("/chk-1/_metadata")
        })
        .ok_or_else(|| Error::internal("chk-1 was never removed (one is retained)"))?;
    let second = synced(&metadata(2)).ok_or_else(|| Error::internal("chk-2's metadata was not synced"))?;
    assert!(second < removed, "chk-1 was removed (line {removed}) before chk-2 was durable (line {second})");
    // The exactly-once file sink makes its renames durable: its output directory is synced.
    let output = dir.path().join("out");
    let args = format!(
        "{{\"input\": \"{}/../../examples/data/gettysburg.txt\", \"output\": \"{}\"}}",
        env!("CARGO_MANIFEST_DIR"),
        output.display()
    );
    let out = std::process::Command::new("strace")
        .args(["-f", "-y", "-qq", "-e", "trace=fsync", "-o"])
        .arg(&trace)
        .arg(env!("CARGO_BIN_EXE_weir"))
        .args(["run", "wordcount", "--args", &args, "-D", "execution.checkpointing.interval=50ms", "-D"])
        .arg(format!("execution.checkpointing.dir={}", cp.display()))
        .output()
        .map_err(|e| Error::io("cannot run strace", "strace", e))?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = std::fs::read_to_string(&trace).map_err(|e| Error::io("read", &trace, e))?;
    let dir_synced = format!("<{}>", output.display());
    assert!(
        text.lines().any(|l| l.contains("fsync(") && l.contains(&dir_synced)),
        "the output directory was never synced"
    );
    Ok(())
}
