//! Chaos, seeded and bounded: an HA session cluster (two JobManagers on etcd, three one-slot
//! TaskManagers) runs the exactly-once keyed job while a schedule drawn from a seed kills
//! TaskManagers, their worker processes and the leading JobManager with -9, pauses TaskManagers
//! (SIGSTOP, then SIGCONT) for shorter and longer than `heartbeat.timeout`, and stalls the
//! checkpoint storage (an S3 server behind a proxy that stops moving bytes). The committed output
//! must equal a failure-free run's.
//!
//! The seed is printed; `WEIR_CHAOS_SEED=N` replays a run, `WEIR_CHAOS_ACTIONS=N` makes it longer
//! (default 6 actions, about a minute). A partitioned TaskManager has a test of its own
//! (`partition.rs`).

use std::process::Command;
use std::time::{Duration, Instant};

use weir::Result;

use crate::cluster::workers_of;
use crate::ha::{HaCluster, exactly_once};
use crate::s3::{S3Server, StallingProxy};

/// xorshift64*, seeded.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n.max(1)
    }
}

fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill").args([sig, &pid.to_string()]).status();
}

#[test]
fn the_exactly_once_job_survives_a_seeded_schedule_of_kills_and_pauses() -> Result<()> {
    let seed = std::env::var("WEIR_CHAOS_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(7)
    }) | 1;
    let actions: usize = std::env::var("WEIR_CHAOS_ACTIONS").ok().and_then(|s| s.parse().ok()).unwrap_or(6);
    eprintln!("chaos seed: {seed} (replay with WEIR_CHAOS_SEED={seed}), {actions} actions");
    let mut rng = Rng(seed);

    let mut c = HaCluster::new("etcd");
    // Checkpoints on an S3 server, reached through a proxy that can stall it.
    let s3 = S3Server::start(&c.dir.path().join("s3"), "state");
    let proxy = StallingProxy::start(s3.endpoint.trim_start_matches("http://").to_string());
    c.env = s3.env();
    for (k, v) in c.env.iter_mut() {
        if k == "AWS_ENDPOINT_URL" {
            *v = format!("http://127.0.0.1:{}", proxy.port);
        }
    }
    c.checkpoints = Some("s3://state/cp".into());
    c.add_jobmanager();
    c.add_jobmanager();
    for _ in 0..3 {
        c.add_taskmanager();
    }
    let leader = c.leader(Duration::from_secs(30));
    let out = c.dir.path().join("out");
    // About 25 s of input at full speed, longer with the restarts.
    let (count, keys) = (60_000u64 + 1_000 * actions as u64, 29u64);
    let id = c.submit((count, keys, 2400), &out);
    c.wait_checkpoints(leader, &id, 1);

    let mut log = Vec::new();
    for n in 0..actions {
        std::thread::sleep(Duration::from_millis(1_000 + rng.below(2_000)));
        let action = rng.below(6);
        let what = match action {
            // A TaskManager killed with -9, and a new one for it.
            0 => {
                let i = rng.below(c.taskmanagers.len() as u64) as usize;
                drop(c.taskmanagers.remove(i));
                c.add_taskmanager();
                format!("kill -9 TaskManager {i}")
            }
            // A worker process killed with -9 (its job fails over; its TaskManager stays).
            1 => {
                let parents: Vec<u32> = c.taskmanagers.iter().map(|p| p.child.id()).collect();
                let workers = workers_of(&parents);
                match workers.get(rng.below(workers.len().max(1) as u64) as usize) {
                    Some((pid, _)) => {
                        signal(*pid, "-KILL");
                        format!("kill -9 worker {pid}")
                    }
                    None => "no worker running".to_string(),
                }
            }
            // The leader killed with -9: the standby takes over, and a new standby is started.
            2 => {
                let leader = c.leader(Duration::from_secs(60));
                c.kill_jobmanager(leader);
                c.add_jobmanager();
                format!("kill -9 leader JobManager {leader}")
            }
            // Checkpoint storage stalled: connections stay open, nothing moves.
            3 => {
                let stall = Duration::from_millis(500 + rng.below(2_500));
                proxy.stall(true);
                std::thread::sleep(stall);
                proxy.stall(false);
                format!("storage stalled for {} ms", stall.as_millis())
            }
            // A TaskManager paused, shorter or longer than heartbeat.timeout (1.5 s).
            _ => {
                let i = rng.below(c.taskmanagers.len() as u64) as usize;
                let pid = c.taskmanagers[i].child.id();
                let pause = Duration::from_millis(300 + rng.below(2_700));
                signal(pid, "-STOP");
                std::thread::sleep(pause);
                signal(pid, "-CONT");
                format!("SIGSTOP TaskManager {i} for {} ms", pause.as_millis())
            }
        };
        eprintln!("chaos {n}: {what}");
        log.push(what);
        // Every action leaves a cluster that recovers: a leader with all TaskManagers back.
        c.leader(Duration::from_secs(60));
    }
    let started = Instant::now();
    let done = c.wait_end(&id, Duration::from_secs(240));
    assert_eq!(done["state"], "FINISHED", "seed {seed}, actions {log:?}: {done}");
    eprintln!("chaos: finished {:?} after the last action; actions: {log:?}", started.elapsed());
    exactly_once(&out, count, keys)
}
