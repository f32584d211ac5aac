//! A network partition, not a clean close: a TaskManager in a network namespace of its own is cut
//! off from its JobManager by dropping its packets (iptables in that namespace; no RST, no FIN).
//! The JobManager takes it for lost after `heartbeat.timeout`, the job restarts on the other
//! TaskManagers from its last checkpoint; the cut-off TaskManager, hearing nothing for as long,
//! cancels its tasks, so its old run never goes on beside the new one; and the exactly-once
//! output equals a failure-free run's.
//!
//! Needs root (network namespaces, iptables); scripts/test.sh runs the suite as root with
//! iproute2 and iptables installed.

use std::process::Command;
use std::time::{Duration, Instant};

use weir::{Error, Result};

use crate::checkpoints::{committed, expected_sums};
use crate::cluster::{Cluster, Proc, job_id, start_logged, text};

const WEIR: &str = env!("CARGO_BIN_EXE_weir");
const PREFIX: &str = "weir-part-";

fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip").args(args).output().map_err(|e| Error::internal(format!("cannot run ip: {e}")))?;
    if !out.status.success() {
        return Err(Error::internal(format!("ip {args:?}: {}", text(&out.stderr))));
    }
    Ok(())
}

/// A network namespace joined to this one by a veth pair; deleted (with its end of the pair)
/// when dropped.
struct Namespace {
    name: String,
    /// This namespace's address on the pair, and the other end's.
    outside: String,
    inside: String,
}

impl Namespace {
    fn create() -> Result<Namespace> {
        sweep();
        let pid = std::process::id();
        let name = format!("{PREFIX}{pid}");
        let net = 10 + pid % 240;
        let (outside, inside) = (format!("10.213.{net}.1"), format!("10.213.{net}.2"));
        let (veth_out, veth_in) = (format!("wp{}o", pid % 100_000), format!("wp{}i", pid % 100_000));
        ip(&["netns", "add", &name])?;
        let ns = Namespace { name, outside, inside };
        ip(&["link", "add", &veth_out, "type", "veth", "peer", "name", &veth_in])?;
        ip(&["link", "set", &veth_in, "netns", &ns.name])?;
        ip(&["addr", "add", &format!("{}/24", ns.outside), "dev", &veth_out])?;
        ip(&["link", "set", &veth_out, "up"])?;
        ip(&["-n", &ns.name, "addr", "add", &format!("{}/24", ns.inside), "dev", &veth_in])?;
        ip(&["-n", &ns.name, "link", "set", &veth_in, "up"])?;
        ip(&["-n", &ns.name, "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// Drops every packet in and out of the namespace on the pair: the peers see silence.
    fn cut(&self) -> Result<()> {
        for chain in [["-A", "INPUT", "-i"], ["-A", "OUTPUT", "-o"]] {
            let veth = format!("wp{}i", std::process::id() % 100_000);
            let mut args = vec!["netns", "exec", &self.name, "iptables"];
            args.extend(chain);
            args.extend([veth.as_str(), "-j", "DROP"]);
            ip(&args)?;
        }
        Ok(())
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.name]);
    }
}

/// Deletes namespaces an earlier run of this test left (its process is gone).
fn sweep() {
    let listed = Command::new("ip").args(["netns", "list"]).output().map(|o| text(&o.stdout)).unwrap_or_default();
    for line in listed.lines() {
        let name = line.split_whitespace().next().unwrap_or_default();
        if let Some(pid) = name.strip_prefix(PREFIX)
            && !std::path::Path::new(&format!("/proc/{pid}")).exists()
        {
            let _ = ip(&["netns", "del", name]);
        }
    }
}

#[test]
fn a_partitioned_taskmanager_stops_its_run_and_the_job_recovers_exactly_once() -> Result<()> {
    let ns = Namespace::create()?;
    let restart = [
        "-D",
        "restart-strategy.type=fixed-delay",
        "-D",
        "restart-strategy.fixed-delay.attempts=10",
        "-D",
        "restart-strategy.fixed-delay.delay=100ms",
    ];
    let rpc_address = format!("jobmanager.rpc.address={}", ns.outside);
    let mut jm_args: Vec<&str> = restart.to_vec();
    jm_args.extend(["-D", &rpc_address]);
    // JobManager and the spare TaskManager here, reachable on the pair's outside address.
    let mut c = Cluster::with(&jm_args, 0, 1);
    let outside_host = format!("taskmanager.host={}", ns.outside);
    c.add_taskmanager_with(1, &["-D", &rpc_address, "-D", &outside_host]);
    // The TaskManager to be cut off, in the namespace.
    let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", "/tmp", e))?;
    let log = dir.path().join("cut-off-taskmanager.log");
    let port = format!("jobmanager.rpc.port={}", c.rpc_port);
    let inside_host = format!("taskmanager.host={}", ns.inside);
    let cache = format!("blob.storage.directory={}", dir.path().join("cache").display());
    let args = [
        "netns",
        "exec",
        &ns.name,
        WEIR,
        "taskmanager",
        "-D",
        &rpc_address,
        "-D",
        &port,
        "-D",
        &inside_host,
        "-D",
        "heartbeat.interval=200",
        "-D",
        "heartbeat.timeout=1500",
        "-D",
        &cache,
    ];
    let (cut_off, _): (Proc, String) = start_logged("ip".as_ref(), &args, dir.path(), &[], Some(&log));
    c.wait_for(|o| o["taskmanagers"] == 2, "/overview");

    // Parallelism 2 over the two one-slot TaskManagers: the job spans the pair.
    let out = dir.path().join("out");
    let (count, keys) = (30_000u64, 23u64);
    let job_args = format!(r#"{{"count": {count}, "keys": {keys}, "rate": 6000, "output": "{}"}}"#, out.display());
    let cp = format!("execution.checkpointing.dir={}", dir.path().join("cp").display());
    let submitted = c.weir(&[
        "run",
        "-t",
        "remote",
        "-d",
        "keyed-sums",
        "--args",
        &job_args,
        "-p",
        "2",
        "-D",
        "execution.checkpointing.interval=200ms",
        "-D",
        &cp,
    ]);
    let id = job_id(&submitted);
    assert!(!id.is_empty(), "{}", text(&submitted.stderr));
    // Let it checkpoint and commit some output, then add a spare and cut the namespace off.
    c.wait_for(|j| j["counts"]["completed"].as_u64().is_some_and(|n| n >= 2), &format!("/jobs/{id}/checkpoints"));
    let (_, job) = c.get(&format!("/jobs/{id}"));
    assert_eq!(job["weir-taskmanagers"].as_array().map(Vec::len), Some(2), "the run spans both: {job}");
    c.add_taskmanager_with(1, &["-D", &rpc_address, "-D", &outside_host]);
    let cut_at = Instant::now();
    ns.cut()?;

    let done = c.wait_end(&id, Duration::from_secs(120));
    assert_eq!(done["state"], "FINISHED", "{done}");
    let (_, exceptions) = c.get(&format!("/jobs/{id}/exceptions"));
    assert!(exceptions.to_string().contains("heartbeat"), "the run failed for the lost TaskManager: {exceptions}");
    // The cut-off TaskManager stopped its run by itself, hearing nothing for heartbeat.timeout.
    let stopped = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("it sent nothing for 1500 ms") {
            break true;
        }
        if cut_at.elapsed() > Duration::from_secs(30) {
            break false;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(stopped, "the cut-off TaskManager did not notice: {}", std::fs::read_to_string(&log).unwrap_or_default());
    let (lines, _) = committed(&out)?;
    assert_eq!(lines, expected_sums(count, keys), "the committed output differs from a failure-free run");
    drop(cut_off);
    Ok(())
}
