//! Checkpoint storage that fails mid-run: a directory that turns read-only and a full disk. The job
//! counts the failed checkpoints, goes on, checkpoints again once storage recovers, and commits
//! exactly the output of a failure-free run.
//!
//! The storage is a small tmpfs mounted in a private mount namespace (`unshare`), so nothing is
//! left mounted whatever happens, and no other process sees it.

use std::process::Command;

use weir::{Error, Result};

use crate::checkpoints::{committed, expected_sums};

/// Mounts a 2 MiB tmpfs at `$CP`, runs keyed-sums on the embedded cluster with checkpoints there
/// every 100 ms, and meanwhile makes the mount read-only for a second, then fills it for a second.
const SCRIPT: &str = r#"
set -eu
mount -t tmpfs -o size=2m tmpfs "$CP"
WEIR_LOG=weir_runtime=info,weir_checkpoint=info NO_COLOR=1 "$WEIR" run keyed-sums --args "$ARGS" -p 2 \
  -D execution.checkpointing.interval=100ms -D execution.checkpointing.dir="$CP" >"$OUT/stdout" 2>"$OUT/log" &
job=$!
# remount waits (bounded) for a moment when no file is open for writing
remount() { for _ in $(seq 100); do mount -o "remount,$1" "$CP" 2>/dev/null && return 0; sleep 0.01; done; return 1; }
sleep 1.2
remount ro
echo "read-only" >&2
sleep 1
remount rw
sleep 1
dd if=/dev/zero of="$CP/filler" bs=64k 2>/dev/null || true
echo "full: $(df -k "$CP" | awk 'NR==2 {print $4}') KiB free" >&2
sleep 1
rm -f "$CP/filler"
echo "space again" >&2
wait "$job"
"#;

#[test]
fn checkpoints_fail_while_storage_is_read_only_or_full_and_the_job_commits_everything_once() -> Result<()> {
    let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", "/tmp", e))?;
    let (cp, out) = (dir.path().join("cp"), dir.path().join("job"));
    for d in [&cp, &out] {
        std::fs::create_dir_all(d).map_err(|e| Error::io("cannot create", d, e))?;
    }
    let (count, keys) = (60_000u64, 29u64);
    let args =
        format!(r#"{{"count": {count}, "keys": {keys}, "rate": 10000, "output": "{}"}}"#, out.join("out").display());
    // A user namespace too, so that this works without root where user namespaces are allowed.
    let run = Command::new("timeout")
        .args(["120", "unshare", "--user", "--map-root-user", "--mount", "bash", "-c", SCRIPT])
        .env("CP", &cp)
        .env("OUT", &out)
        .env("ARGS", &args)
        .env("WEIR", env!("CARGO_BIN_EXE_weir"))
        .output()
        .map_err(|e| Error::internal(format!("cannot run unshare (util-linux): {e}")))?;
    let log = std::fs::read_to_string(out.join("log")).unwrap_or_default();
    let script = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "the job or the script failed: {script}\n{log}");
    // Full: dd wrote until nothing fit (a checkpoint removed just after may free a few blocks
    // before df looks; the failures below are the proof that writes met a full disk).
    let free_kib =
        script.split("full: ").nth(1).and_then(|r| r.split_whitespace().next()).and_then(|n| n.parse::<u64>().ok());
    assert!(script.contains("read-only") && free_kib.is_some_and(|k| k < 256), "{script}");
    let failed: Vec<&str> = log.lines().filter(|l| l.contains("checkpoint failed")).collect();
    assert!(failed.iter().any(|l| l.contains("Read-only file system")), "no failure names the read-only mount:\n{log}");
    assert!(failed.iter().any(|l| l.contains("No space left on device")), "no failure names the full disk:\n{log}");
    // Checkpoints complete again once storage is back, and the output is committed exactly once.
    let lines: Vec<&str> = log.lines().collect();
    let last_failure = lines.iter().rposition(|l| l.contains("checkpoint failed")).unwrap_or(0);
    assert!(lines[last_failure..].iter().any(|l| l.contains("checkpoint complete")), "{log}");
    let (lines, _) = committed(&out.join("out"))?;
    assert_eq!(lines, expected_sums(count, keys), "the committed output differs from a failure-free run");
    Ok(())
}
