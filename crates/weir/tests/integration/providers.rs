//! One contract, every resource provider: a session JobManager with the provider starts
//! TaskManagers when jobs wait for slots, stops them after `resourcemanager.taskmanager-timeout`
//! without jobs, starts new ones for the next job, and leaves nothing behind when it shuts down.
//! Each provider says how to find what it started (processes, containers).

use std::process::Command;
use std::time::{Duration, Instant};

use crate::cluster::{Cluster, children_of, text};

const WEIR: &str = env!("CARGO_BIN_EXE_weir");

/// Polls (bounded) until `ok`.
fn until(what: &str, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < Duration::from_secs(60), "{what} did not happen within 60 s");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The contract. `started` lists what the provider started and has not removed yet.
fn keeps_the_provider_contract(kind: &str, c: &Cluster, started: &dyn Fn() -> Vec<String>) {
    assert_eq!(c.get("/overview").1["taskmanagers"], 0);
    assert!(started().is_empty(), "{:?}", started());
    // A job of parallelism 2 gets two one-slot TaskManagers, started for it.
    let out = c.weir(&["run", "-t", "remote", "generate", "--args", r#"{"count": 100000}"#, "-p", "2"]);
    assert!(out.status.success(), "{kind}: {}", text(&out.stderr));
    let (_, tms) = c.get("/taskmanagers");
    let ids: Vec<&str> =
        tms["taskmanagers"].as_array().map(|a| a.iter().filter_map(|t| t["id"].as_str()).collect()).unwrap_or_default();
    assert_eq!(ids, vec![format!("{kind}-taskmanager-1"), format!("{kind}-taskmanager-2")], "{tms}");
    assert_eq!(started().len(), 2, "{:?}", started());
    // Idle past the timeout, they are stopped and removed; the cluster stays.
    c.wait_for(|o| o["taskmanagers"] == 0, "/overview");
    until(&format!("{kind}: removal of idle TaskManagers"), || started().is_empty());
    // The next job gets a new one.
    let out = c.weir(&["run", "-t", "remote", "generate", "--args", r#"{"count": 10}"#, "-p", "1"]);
    assert!(out.status.success(), "{kind}: {}", text(&out.stderr));
    assert_eq!(started().len(), 1, "{:?}", started());
    // Shut down, the cluster takes what it started with it.
    let (status, _) = crate::cluster::http("DELETE", &c.rest, "/cluster", None);
    assert_eq!(status, 202);
    until(&format!("{kind}: removal at shutdown"), || started().is_empty());
}

const IDLE: [&str; 2] = ["-D", "resourcemanager.taskmanager-timeout=300ms"];

#[test]
fn the_process_provider_keeps_the_provider_contract() {
    let mut args = vec!["-D", "resourcemanager.provider=process"];
    args.extend(IDLE);
    let c = Cluster::with(&args, 0, 1);
    let jm = c.jobmanager_pid();
    keeps_the_provider_contract("process", &c, &|| children_of(jm).iter().map(u32::to_string).collect());
}

#[test]
fn the_docker_provider_keeps_the_provider_contract() {
    let docker = |args: &[&str]| {
        let out = Command::new("docker").args(args).output().unwrap_or_else(|e| panic!("cannot run docker: {e}"));
        assert!(out.status.success(), "docker {args:?}: {}", text(&out.stderr));
        text(&out.stdout).trim().to_string()
    };
    // The JobManager runs here; its TaskManagers are containers on a private network, which reach
    // it at the network's gateway. The network is the cluster's (labelled so): it goes with it.
    let network = format!("weir-providers-{}", std::process::id());
    docker(&["network", "create", "--label", &format!("weir.cluster={network}"), &network]);
    let gateway = docker(&["network", "inspect", "-f", "{{(index .IPAM.Config 0).Gateway}}", &network]);
    let out = Command::new(WEIR).arg("image").output().unwrap_or_else(|e| panic!("cannot run weir: {e}"));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let image = text(&out.stdout).trim().to_string();
    let settings = [
        "resourcemanager.provider=docker".to_string(),
        format!("docker.image={image}"),
        format!("docker.network={network}"),
        format!("jobmanager.rpc.address={gateway}"),
    ];
    let mut args: Vec<&str> = settings.iter().flat_map(|s| ["-D", s.as_str()]).collect();
    args.extend(IDLE);
    let c = Cluster::with(&args, 0, 1);
    let label = format!("label=weir.cluster={network}");
    let started = || -> Vec<String> {
        let out = Command::new("docker").args(["ps", "-a", "--filter", &label, "--format", "{{.Names}}"]).output();
        out.map(|o| text(&o.stdout).lines().map(String::from).collect()).unwrap_or_default()
    };
    keeps_the_provider_contract("docker", &c, &started);
    until("the network's removal", || {
        let out = Command::new("docker").args(["network", "ls", "-q", "--filter", &format!("name={network}")]).output();
        out.map(|o| text(&o.stdout).trim().is_empty()).unwrap_or(false)
    });
}
