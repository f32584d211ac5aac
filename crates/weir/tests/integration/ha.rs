//! High availability on a real etcd and a real ZooKeeper: standby JobManagers take over a job with
//! checkpoints and the exactly-once file sink when the leader is killed, when the coordination
//! service goes away and comes back, and when the leader is cut off from the service but not from
//! its TaskManagers (a network namespace whose link to the service goes down; root and iproute2
//! needed). The committed output is always that of a failure-free run. Applications with HA are in
//! `ha_application.rs`, on this file's harness.

#[path = "../../../weir-ha/tests/support/etcd.rs"]
mod etcd_support;
#[path = "../../../weir-ha/tests/support/zookeeper.rs"]
mod zookeeper_support;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use weir::Result;

use crate::checkpoints::{committed, expected_sums};
use crate::cluster::{Proc, field, http, job_id, start_logged, text};

pub(crate) const WEIR: &str = env!("CARGO_BIN_EXE_weir");

/// The coordination service of a test.
pub(crate) enum Service {
    Etcd(etcd_support::EtcdServer),
    ZooKeeper(zookeeper_support::ZkServer),
}

impl Service {
    fn start(kind: &str, host: std::net::Ipv4Addr) -> Service {
        match kind {
            "etcd" => Service::Etcd(etcd_support::EtcdServer::start_on(host)),
            _ => Service::ZooKeeper(zookeeper_support::ZkServer::start_on(host)),
        }
    }

    pub(crate) fn address(&self) -> String {
        match self {
            Service::Etcd(s) => s.address(),
            Service::ZooKeeper(s) => s.address(),
        }
    }

    pub(crate) fn stop(&mut self) {
        match self {
            Service::Etcd(s) => s.stop(),
            Service::ZooKeeper(s) => s.stop(),
        }
    }

    pub(crate) fn restart(&mut self) {
        match self {
            Service::Etcd(s) => s.restart(),
            Service::ZooKeeper(s) => s.restart(),
        }
    }
}

/// Runs `ip ARGS` (iproute2), failing the test with what it said.
fn ip(args: &[&str]) {
    let out = std::process::Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run `ip` (iproute2; the partition tests need it, and root): {e}"));
    assert!(out.status.success(), "ip {}: {}", args.join(" "), text(&out.stderr));
}

/// A network namespace of the test's own, for a JobManager that can be cut off from the
/// coordination service alone. Two veth links join it to this namespace: one reaches the
/// service's address (`10.23N.1.1`, which the service listens on), the other everything else (the
/// JobManager inside is `10.23N.2.2`; TaskManagers and clients reach it there). Cutting the first
/// link (its outer end down) makes the packets for the service vanish: nothing is refused, the
/// JobManager keeps its TaskManagers. Removed, with its links, when dropped.
struct Netns {
    name: String,
    service_link: String,
    net: u8,
}

impl Netns {
    /// A namespace on the subnets `10.23{net}.1.0/24` and `10.23{net}.2.0/24` (one per test).
    fn new(net: u8) -> Netns {
        let tag = format!("{}{net}", std::process::id() % 100_000);
        let ns = Netns { name: format!("weir-test-{tag}"), service_link: format!("ws{tag}"), net };
        ip(&["netns", "add", &ns.name]);
        for (link, subnet) in [(ns.service_link.clone(), 1), (format!("wt{tag}"), 2)] {
            let inner = format!("{link}i");
            ip(&["link", "add", &link, "type", "veth", "peer", "name", &inner]);
            ip(&["link", "set", &inner, "netns", &ns.name]);
            ip(&["addr", "add", &format!("10.23{net}.{subnet}.1/24"), "dev", &link]);
            ip(&["link", "set", &link, "up"]);
            ip(&["netns", "exec", &ns.name, "ip", "addr", "add", &format!("10.23{net}.{subnet}.2/24"), "dev", &inner]);
            ip(&["netns", "exec", &ns.name, "ip", "link", "set", &inner, "up"]);
        }
        ip(&["netns", "exec", &ns.name, "ip", "link", "set", "lo", "up"]);
        ns
    }

    /// The address the service listens on (in this namespace, reached over the first link).
    fn service_host(&self) -> std::net::Ipv4Addr {
        std::net::Ipv4Addr::new(10, 230 + self.net, 1, 1)
    }

    /// The address of the JobManager inside.
    fn inner_host(&self) -> String {
        format!("10.23{}.2.2", self.net)
    }

    /// Cuts the namespace off from the service.
    fn cut(&self) {
        ip(&["link", "set", &self.service_link, "down"]);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting one end of a link deletes both. The namespace itself may outlive its name while
        // the kernel still holds sockets of the processes that ran there.
        let transit = format!("wt{}", &self.service_link[2..]);
        for link in [&self.service_link, &transit] {
            let _ = std::process::Command::new("ip").args(["link", "delete", link]).status();
        }
        let _ = std::process::Command::new("ip").args(["netns", "delete", &self.name]).status();
    }
}

/// JobManagers and TaskManagers of one HA cluster, as processes.
pub(crate) struct HaCluster {
    pub(crate) kind: &'static str,
    pub(crate) service: Service,
    pub(crate) dir: tempfile::TempDir,
    pub(crate) jobmanagers: Vec<Option<(Proc, String)>>,
    pub(crate) taskmanagers: Vec<Proc>,
    /// Environment variables of every process and command (the storage's credentials).
    pub(crate) env: Vec<(String, String)>,
    /// Where jobs checkpoint (default: a directory of the cluster's).
    pub(crate) checkpoints: Option<String>,
}

const TTL: &str = "2s";

impl Drop for HaCluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // Keep the processes' logs for a look.
            let kept = std::env::temp_dir().join(format!("weir-ha-failed-{}", std::process::id()));
            let _ = std::fs::create_dir_all(&kept);
            let dirs = [self.dir.path().to_path_buf(), self.dir.path().join("results")];
            for entry in dirs.iter().flat_map(std::fs::read_dir).flatten().flatten() {
                if entry.file_name().to_string_lossy().ends_with(".log") {
                    let _ = std::fs::copy(entry.path(), kept.join(entry.file_name()));
                }
            }
            eprintln!("the processes' logs are in {}", kept.display());
        }
    }
}

impl HaCluster {
    pub(crate) fn new(kind: &'static str) -> HaCluster {
        HaCluster::with_service_on(kind, std::net::Ipv4Addr::LOCALHOST)
    }

    /// A cluster whose service listens on `host`.
    fn with_service_on(kind: &'static str, host: std::net::Ipv4Addr) -> HaCluster {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let service = Service::start(kind, host);
        HaCluster {
            kind,
            service,
            dir,
            jobmanagers: Vec::new(),
            taskmanagers: Vec::new(),
            env: Vec::new(),
            checkpoints: None,
        }
    }

    /// The settings of every process and command, reaching the service at `address`.
    pub(crate) fn settings(&self, address: &str) -> Vec<String> {
        let mut s = vec![
            format!("high-availability.type={}", self.kind),
            "high-availability.cluster-id=test".to_string(),
            format!("high-availability.storageDir={}", self.dir.path().join("ha").display()),
            "heartbeat.interval=200".to_string(),
            "heartbeat.timeout=1500".to_string(),
        ];
        match self.kind {
            "etcd" => s.extend([
                format!("high-availability.etcd.endpoints={address}"),
                format!("high-availability.etcd.lease-ttl={TTL}"),
            ]),
            _ => s.extend([
                format!("high-availability.zookeeper.quorum={address}"),
                format!("high-availability.zookeeper.client.session-timeout={TTL}"),
            ]),
        }
        s
    }

    fn args(&self, role: &str, address: &str, extra: &[String]) -> Vec<String> {
        let mut args = vec![role.to_string()];
        for s in self.settings(address).iter().chain(extra) {
            args.extend(["-D".to_string(), s.clone()]);
        }
        args
    }

    /// Starts a JobManager; its index.
    pub(crate) fn add_jobmanager(&mut self) -> usize {
        self.add_jobmanager_in(None)
    }

    /// Starts a JobManager, in network namespace `ns` when given; its index.
    fn add_jobmanager_in(&mut self, ns: Option<&Netns>) -> usize {
        let n = self.jobmanagers.len();
        let mut extra = vec![
            "rest.port=0".to_string(),
            "jobmanager.rpc.port=0".to_string(),
            "restart-strategy.type=fixed-delay".to_string(),
            "restart-strategy.fixed-delay.attempts=20".to_string(),
            "restart-strategy.fixed-delay.delay=100ms".to_string(),
            format!("blob.storage.directory={}", self.dir.path().join(format!("jm-{n}")).display()),
        ];
        let mut program = WEIR.to_string();
        let mut args = Vec::new();
        if let Some(ns) = ns {
            let host = ns.inner_host();
            extra.extend([
                format!("jobmanager.rpc.address={host}"),
                format!("rest.address={host}"),
                format!("rest.bind-address={host}"),
            ]);
            program = "ip".to_string();
            args.extend(["netns", "exec", &ns.name, WEIR].map(String::from));
        }
        args.extend(self.args("jobmanager", &self.service.address(), &extra));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let log = self.dir.path().join(format!("jm-{n}.log"));
        let mut env = vec![("WEIR_LOG".to_string(), "info".to_string())];
        env.extend(self.env.iter().cloned());
        let (p, line) = start_logged(Path::new(&program), &args, self.dir.path(), &env, Some(&log));
        let rest = field(&line, "rest=http://").to_string();
        self.jobmanagers.push(Some((p, rest)));
        n
    }

    pub(crate) fn add_taskmanager(&mut self) {
        let n = self.taskmanagers.len();
        let extra = vec![
            "taskmanager.numberOfTaskSlots=1".to_string(),
            format!("blob.storage.directory={}", self.dir.path().join(format!("tm-{n}")).display()),
        ];
        let args = self.args("taskmanager", &self.service.address(), &extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let log = self.dir.path().join(format!("tm-{n}.log"));
        let mut env = vec![("WEIR_LOG".to_string(), "info".to_string())];
        env.extend(self.env.iter().cloned());
        let (p, _) = start_logged(Path::new(WEIR), &args, self.dir.path(), &env, Some(&log));
        self.taskmanagers.push(p);
    }

    pub(crate) fn rest(&self, i: usize) -> &str {
        self.jobmanagers[i].as_ref().map(|(_, r)| r.as_str()).unwrap_or_default()
    }

    pub(crate) fn ha_status(&self, i: usize) -> Value {
        http("GET", self.rest(i), "/weir/ha", None).1
    }

    /// Waits (bounded) until a live JobManager leads with every TaskManager registered; its index.
    pub(crate) fn leader(&self, limit: Duration) -> usize {
        self.leader_but(None, limit)
    }

    /// As [`HaCluster::leader`], a JobManager other than `except`.
    pub(crate) fn leader_but(&self, except: Option<usize>, limit: Duration) -> usize {
        let start = Instant::now();
        loop {
            for (i, jm) in self.jobmanagers.iter().enumerate() {
                if jm.is_some() && Some(i) != except && self.ha_status(i)["leading"] == true {
                    let (_, o) = http("GET", self.rest(i), "/overview", None);
                    if o["taskmanagers"].as_u64() == Some(self.taskmanagers.len() as u64) {
                        return i;
                    }
                }
            }
            assert!(start.elapsed() < limit, "no JobManager led with every TaskManager within {limit:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub(crate) fn kill_jobmanager(&mut self, i: usize) {
        // Dropping a process kills it (kill -9, by its pid) and waits for it.
        drop(self.jobmanagers[i].take());
    }

    /// A client command with the cluster's HA settings (it finds the leader itself, no `-m`).
    pub(crate) fn weir(&self, args: &[&str]) -> std::process::Output {
        let mut all: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        for s in self.settings(&self.service.address()) {
            all.extend(["-D".to_string(), s]);
        }
        std::process::Command::new(WEIR)
            .args(&all)
            .envs(self.env.iter().cloned())
            .output()
            .unwrap_or_else(|e| panic!("cannot run weir: {e}"))
    }

    /// Submits `keyed-sums` of `count` numbers over `keys` keys at `rate`, checkpointing every
    /// 200 ms, into `out`, at parallelism 2; its job id.
    pub(crate) fn submit(&self, (count, keys, rate): (u64, u64, u64), out: &Path) -> String {
        let args = format!(r#"{{"count": {count}, "keys": {keys}, "rate": {rate}, "output": "{}"}}"#, out.display());
        let cp = match &self.checkpoints {
            Some(dir) => format!("execution.checkpointing.dir={dir}"),
            None => format!("execution.checkpointing.dir={}", self.dir.path().join("cp").display()),
        };
        let submitted = self.weir(&[
            "run",
            "-t",
            "remote",
            "-d",
            "keyed-sums",
            "--args",
            &args,
            "-p",
            "2",
            "-D",
            "execution.checkpointing.interval=200ms",
            "-D",
            &cp,
        ]);
        let id = job_id(&submitted);
        assert!(!id.is_empty(), "not submitted: {}{}", text(&submitted.stdout), text(&submitted.stderr));
        id
    }

    /// Waits (bounded) until job `id` completed `n` checkpoints under the leader `i`.
    pub(crate) fn wait_checkpoints(&self, i: usize, id: &str, n: u64) {
        let start = Instant::now();
        loop {
            let (_, cp) = http("GET", self.rest(i), &format!("/jobs/{id}/checkpoints"), None);
            if cp["counts"]["completed"].as_u64().unwrap_or(0) >= n {
                return;
            }
            assert!(start.elapsed() < Duration::from_secs(30), "job {id} did not complete {n} checkpoints: {cp}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits (bounded) until job `id` ended under whichever JobManager leads; its final state.
    pub(crate) fn wait_end(&self, id: &str, limit: Duration) -> Value {
        let start = Instant::now();
        let mut seen = Value::Null;
        loop {
            for (i, jm) in self.jobmanagers.iter().enumerate() {
                if jm.is_none() || self.ha_status(i)["leading"] != true {
                    continue;
                }
                let (_, job) = http("GET", self.rest(i), &format!("/jobs/{id}"), None);
                if matches!(job["state"].as_str(), Some("FINISHED" | "FAILED" | "CANCELED")) {
                    return job;
                }
                let (_, exceptions) = http("GET", self.rest(i), &format!("/jobs/{id}/exceptions"), None);
                seen = serde_json::json!({ "leader": i, "job": job, "exceptions": exceptions });
            }
            assert!(start.elapsed() < limit, "job {id} did not end within {limit:?}; last seen: {seen}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Checks that `out` holds exactly the output of a failure-free run.
pub(crate) fn exactly_once(out: &Path, count: u64, keys: u64) -> Result<()> {
    let (lines, _) = committed(out)?;
    assert_eq!(lines.len(), count as usize, "committed {} lines of {count}", lines.len());
    assert_eq!(lines, expected_sums(count, keys), "the committed output differs from a failure-free run");
    Ok(())
}

/// The leader is killed with `kill -9` mid-job; a standby started late (after the job) takes over,
/// the TaskManagers follow it, and the job resumes from its latest checkpoint.
fn leader_kill(kind: &'static str) -> Result<()> {
    let mut c = HaCluster::new(kind);
    let first = c.add_jobmanager();
    c.add_taskmanager();
    c.add_taskmanager();
    let leader = c.leader(Duration::from_secs(30));
    assert_eq!(leader, first);
    let out = c.dir.path().join("out");
    let (count, keys) = (30_000u64, 17u64);
    let id = c.submit((count, keys, 6000), &out);
    c.wait_checkpoints(leader, &id, 2);
    // The standby comes only now, and stands by: it sends clients on to the leader.
    let standby = c.add_jobmanager();
    // It learns who leads within a retrieval interval (bounded wait).
    let start = Instant::now();
    let status = loop {
        let status = c.ha_status(standby);
        if !status["leader"].is_null() || start.elapsed() > Duration::from_secs(10) {
            break status;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status["leading"], false, "{status}");
    assert_eq!(status["leader"]["rest"].as_str(), Some(c.rest(leader)), "{status}");
    let (code, _) = http("GET", c.rest(standby), "/jobs/overview", None);
    assert_eq!(code, 307, "a standby sends REST clients on to the leader");
    c.kill_jobmanager(leader);
    let killed = Instant::now();
    let next = c.leader(Duration::from_secs(30));
    assert_eq!(next, standby);
    eprintln!("{kind}: the standby leads with both TaskManagers {:?} after the kill", killed.elapsed());
    let done = c.wait_end(&id, Duration::from_secs(90));
    assert_eq!(done["state"], "FINISHED", "{done}");
    exactly_once(&out, count, keys)?;
    // The job ended: its result is kept, its graph is gone from the store.
    let listed = text(&c.weir(&["list"]).stdout);
    assert!(listed.contains(&id) && listed.contains("FINISHED"), "{listed}");
    Ok(())
}

#[test]
fn etcd_a_standby_takes_over_from_a_killed_leader_exactly_once() -> Result<()> {
    leader_kill("etcd")
}

#[test]
fn zookeeper_a_standby_takes_over_from_a_killed_leader_exactly_once() -> Result<()> {
    leader_kill("zookeeper")
}

/// The coordination service stops mid-job and comes back: the leader suspends the job when it
/// cannot keep its leadership, and the cluster recovers by itself once the service is back.
fn service_restart(kind: &'static str) -> Result<()> {
    let mut c = HaCluster::new(kind);
    c.add_jobmanager();
    c.add_jobmanager();
    c.add_taskmanager();
    c.add_taskmanager();
    let leader = c.leader(Duration::from_secs(30));
    let out = c.dir.path().join("out");
    let (count, keys) = (30_000u64, 13u64);
    let id = c.submit((count, keys, 6000), &out);
    c.wait_checkpoints(leader, &id, 2);
    c.service.stop();
    // Nobody leads while the service is gone (bounded wait for the leader to notice).
    let start = Instant::now();
    while c.ha_status(leader)["leading"] == true {
        assert!(start.elapsed() < Duration::from_secs(10), "the leader kept leading without the service");
        std::thread::sleep(Duration::from_millis(50));
    }
    let (_, jobs) = http("GET", c.rest(leader), "/jobs/overview", None);
    std::thread::sleep(Duration::from_secs(1));
    c.service.restart();
    let next = c.leader(Duration::from_secs(60));
    eprintln!("{kind}: after the service came back, JobManager {next} leads (was {leader}); before: {jobs}");
    let done = c.wait_end(&id, Duration::from_secs(90));
    assert_eq!(done["state"], "FINISHED", "{done}");
    exactly_once(&out, count, keys)
}

#[test]
fn etcd_the_cluster_recovers_by_itself_when_etcd_comes_back() -> Result<()> {
    service_restart("etcd")
}

#[test]
fn zookeeper_the_cluster_recovers_by_itself_when_zookeeper_comes_back() -> Result<()> {
    service_restart("zookeeper")
}

/// The leader, in a network namespace of its own, is cut off from the service (its link to the
/// service goes down: packets vanish) but not from its TaskManagers: it stops leading before the
/// standby starts, the standby takes the job over, and the output is exactly once.
fn partition(kind: &'static str, net: u8) -> Result<()> {
    let ns = Netns::new(net);
    let mut c = HaCluster::with_service_on(kind, ns.service_host());
    let cut_off = c.add_jobmanager_in(Some(&ns));
    c.add_taskmanager();
    c.add_taskmanager();
    assert_eq!(c.leader(Duration::from_secs(30)), cut_off);
    let standby = c.add_jobmanager();
    let out = c.dir.path().join("out");
    let (count, keys) = (30_000u64, 11u64);
    let id = c.submit((count, keys, 6000), &out);
    c.wait_checkpoints(cut_off, &id, 2);
    ns.cut();
    assert_eq!(c.leader_but(Some(cut_off), Duration::from_secs(30)), standby);
    let (old, new) = (c.ha_status(cut_off), c.ha_status(standby));
    assert_eq!(old["leading"], false, "{old}");
    let (stopped, elected) = (old["stopped-ms"].as_i64().unwrap_or(0), new["elected-ms"].as_i64().unwrap_or(0));
    assert!(stopped > 0 && stopped <= elected, "the old leader stopped at {stopped}, the new one began at {elected}");
    eprintln!("{kind}: the cut-off leader stopped {} ms before the standby began", elected - stopped);
    let done = c.wait_end(&id, Duration::from_secs(90));
    assert_eq!(done["state"], "FINISHED", "{done}");
    exactly_once(&out, count, keys)
}

#[test]
fn etcd_a_leader_cut_off_from_etcd_steps_down_before_the_standby_leads() -> Result<()> {
    partition("etcd", 1)
}

#[test]
fn zookeeper_a_leader_cut_off_from_zookeeper_steps_down_before_the_standby_leads() -> Result<()> {
    partition("zookeeper", 2)
}

#[test]
fn bad_ha_settings_are_refused_with_what_to_do() {
    let out = std::process::Command::new(WEIR)
        .args(["jobmanager", "-D", "high-availability.type=etcd", "-D", "rest.port=0", "-D", "jobmanager.rpc.port=0"])
        .output()
        .unwrap_or_else(|e| panic!("cannot run weir: {e}"));
    let err = text(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("high-availability.storageDir"), "{err}");
    let out = std::process::Command::new(WEIR)
        .args(["jobmanager", "-D", "high-availability.type=consul"])
        .output()
        .unwrap_or_else(|e| panic!("cannot run weir: {e}"));
    let err = text(&out.stderr);
    assert!(!out.status.success() && err.contains("none, etcd or zookeeper"), "{err}");
    let ha = ["-D", "high-availability.type=etcd", "-D", "high-availability.storageDir=/nonexistent/ha"];
    // An application's JobManager under another id than the cluster id gives.
    let out = std::process::Command::new(WEIR)
        .args(["jobmanager", "--application", "00000000000000000000000000000001"])
        .args(ha)
        .output()
        .unwrap_or_else(|e| panic!("cannot run weir: {e}"));
    let err = text(&out.stderr);
    let derived = weir_core::JobId::derived("default").to_string();
    assert!(out.status.code() == Some(2) && err.contains(&format!("--application {derived}")), "{err}");
    // Docker application clusters do not take high availability (yet): refused before anything starts.
    let out = std::process::Command::new(WEIR)
        .args(["run-application", "-t", "docker", WEIR])
        .args(ha)
        .output()
        .unwrap_or_else(|e| panic!("cannot run weir: {e}"));
    let err = text(&out.stderr);
    assert!(out.status.code() == Some(2) && err.contains("use -t process"), "{err}");
}

/// A job graph in the store that this build cannot read (another weir version wrote it) fails that
/// job alone, with a result that says why; the JobManager leads on.
#[test]
fn an_unreadable_stored_job_fails_alone_with_a_result_that_says_why() {
    use weir_ha::HaServices;
    let mut c = HaCluster::new("etcd");
    let settings = weir_core::config::HaSettings {
        kind: "etcd".into(),
        cluster_id: "test".into(),
        etcd_endpoints: Some(c.service.address()),
        storage_dir: Some(c.dir.path().join("ha").display().to_string()),
        ..Default::default()
    };
    let runtime = tokio::runtime::Runtime::new().unwrap_or_else(|e| panic!("runtime: {e}"));
    let job = "0123456789abcdef0123456789abcdef";
    let stores = runtime.block_on(async {
        let ha: Arc<dyn HaServices> =
            Arc::new(weir_ha::etcd::Etcd::connect(&settings).await.unwrap_or_else(|e| panic!("connect: {e}")));
        let stores = weir_ha::stores::Stores::open(ha.clone(), &settings).unwrap_or_else(|e| panic!("stores: {e}"));
        let me = weir_ha::LeaderInfo { id: "writer".into(), rpc: "-".into(), rest: "-".into() };
        let l = ha.campaign(me).await.unwrap_or_else(|e| panic!("campaign: {e}"));
        let bytes = br#"{"format": 99, "graph": "from another build"}"#.to_vec();
        stores.put_job(l.epoch, job, bytes).await.unwrap_or_else(|e| panic!("put: {e}"));
        ha.resign(&l).await.unwrap_or_else(|e| panic!("resign: {e}"));
        stores
    });
    let jm = c.add_jobmanager();
    c.add_taskmanager();
    assert_eq!(c.leader(Duration::from_secs(30)), jm, "the JobManager leads despite the bad job");
    let result = runtime.block_on(async {
        let start = Instant::now();
        loop {
            if let Some(r) = stores.result(job).await.unwrap_or_else(|e| panic!("result: {e}")) {
                return String::from_utf8_lossy(&r).into_owned();
            }
            assert!(start.elapsed() < Duration::from_secs(20), "no result recorded for the unreadable job");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    assert!(result.contains("FAILED") && result.contains("cannot be read by this weir version"), "{result}");
    // The graph goes right after the result is recorded (bounded wait).
    let start = Instant::now();
    loop {
        let left = runtime.block_on(stores.jobs()).unwrap_or_else(|e| panic!("jobs: {e}"));
        if left.is_empty() {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "the unreadable job stays in the job graph store: {left:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A program that calls `execute` from inside its own tokio runtime, with the remote target and
/// the cluster's HA settings (no address): it finds the leader in etcd from inside that runtime,
/// submits, and gets its result.
#[test]
fn execute_from_inside_a_programs_own_tokio_runtime_finds_the_leader() {
    let mut c = HaCluster::new("etcd");
    c.add_jobmanager();
    c.add_taskmanager();
    c.leader(Duration::from_secs(30));
    let mut args: Vec<String> =
        ["-D", "execution.target=remote", "-D", "parallelism.default=1", "-D", "slot.request.timeout=30s"]
            .map(String::from)
            .to_vec();
    for s in c.settings(&c.service.address()) {
        args.extend(["-D".to_string(), s]);
    }
    let out = std::process::Command::new(crate::example("in_tokio"))
        .args(&args)
        .env("TMPDIR", c.dir.path())
        .output()
        .unwrap_or_else(|e| panic!("cannot run the in_tokio example: {e}"));
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    assert!(text(&out.stdout).contains("FINISHED, 7 keys reached 1000"), "{}", text(&out.stdout));
}
