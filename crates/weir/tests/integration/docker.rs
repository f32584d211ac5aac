//! Containers through a real Docker engine: application mode with the docker resource provider
//! (TaskManagers started as containers, a killed one replaced), the compose file's session
//! cluster, and an unreachable engine. Images are built from scratch by weir; none is pulled.

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::cluster::{http, text};

const WEIR: &str = env!("CARGO_BIN_EXE_weir");

fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program).args(args).output().unwrap_or_else(|e| panic!("cannot run {program}: {e}"))
}

/// Names of the containers, running or not, with a label.
fn containers(label: &str) -> Vec<String> {
    let out = run("docker", &["ps", "-a", "--filter", &format!("label={label}"), "--format", "{{.Names}}"]);
    text(&out.stdout).lines().map(String::from).collect()
}

fn networks(name: &str) -> Vec<String> {
    let out = run("docker", &["network", "ls", "--filter", &format!("name={name}"), "--format", "{{.Name}}"]);
    text(&out.stdout).lines().map(String::from).collect()
}

/// Polls (bounded) until `f` gives `Some`.
fn until<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < limit, "{what} did not happen within {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

struct Application {
    id: String,
    container: String,
    rest: String,
    store: std::path::PathBuf,
}

impl Application {
    fn start(store: &std::path::Path, settings: &[&str], args: &[&str]) -> Application {
        let program = crate::example("application").display().to_string();
        let define = format!("job-result-store.storage-path={}", store.display());
        let mut cmd = Command::new(WEIR);
        cmd.args(["run-application", "-t", "docker", &program, "-D", &define]).args(settings).arg("--").args(args);
        let out = cmd.output().unwrap_or_else(|e| panic!("cannot run weir: {e}"));
        assert!(out.status.success(), "{}", text(&out.stderr));
        let stdout = text(&out.stdout);
        let field = |prefix: &str| {
            stdout.lines().find_map(|l| l.trim().strip_prefix(prefix).map(|r| r.trim().to_string())).unwrap_or_default()
        };
        let id = field("Application ").split_whitespace().next().unwrap_or_default().to_string();
        let container =
            stdout.split("JobManager container ").nth(1).and_then(|r| r.split(')').next()).unwrap_or_default();
        let rest = field("REST endpoint: http://");
        assert!(!id.is_empty() && !rest.is_empty(), "{stdout}");
        Application { id, container: container.to_string(), rest, store: store.to_path_buf() }
    }

    fn record(&self) -> Value {
        let bytes = std::fs::read(self.store.join(format!("{}.json", self.id))).unwrap_or_default();
        serde_json::from_slice(&bytes).unwrap_or(Value::Null)
    }

    /// Waits until it ended and every container and its network are gone.
    fn ended(&self) -> Value {
        let r = until("the application's end", Duration::from_secs(90), || {
            let r = self.record();
            (r["status"].as_str().is_some_and(|s| s != "RUNNING")).then_some(r)
        });
        until("the removal of its containers and network", Duration::from_secs(30), || {
            (containers(&format!("weir.cluster={}", self.container)).is_empty() && networks(&self.container).is_empty())
                .then_some(())
        });
        r
    }
}

#[test]
fn applications_and_a_session_cluster_run_in_containers_and_leave_none_behind() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let store = tmp.path().join("results");

    // 1. An application: its JobManager and TaskManagers are containers, gone when it ends.
    let app = Application::start(&store, &["-D", "parallelism.default=1"], &["sequential", "2"]);
    let r = app.ended();
    assert_eq!(r["status"], "SUCCEEDED", "{r}");
    assert_eq!(r["jobs"].as_array().map(Vec::len), Some(2), "{r}");

    // 2. A TaskManager container killed under a running job: the job fails, restarts on a new
    //    container from the provider, and cancelling it ends the application.
    let mut restart = vec!["-D", "parallelism.default=1"];
    restart.extend(crate::cluster::RESTART);
    let app = Application::start(&store, &restart, &["endless"]);
    let running =
        |r: &Value| r["jobs"].as_array().is_some_and(|j| j.len() == 2 && j.iter().all(|j| j["status"] == "RUNNING"));
    until("two running jobs", Duration::from_secs(60), || running(&app.record()).then_some(()));
    let job = app.record()["jobs"][0]["id"].as_str().unwrap_or_default().to_string();
    let (_, details) = http("GET", &app.rest, &format!("/jobs/{job}"), None);
    let tm = details["weir-taskmanagers"][0].as_str().unwrap_or_default().to_string();
    let victim = format!("{}-{tm}", app.container);
    let out = run("docker", &["kill", &victim]);
    assert!(out.status.success(), "docker kill {victim}: {}", text(&out.stderr));
    let replaced = until("the job's restart on another TaskManager", Duration::from_secs(60), || {
        let (_, d) = http("GET", &app.rest, &format!("/jobs/{job}"), None);
        let on = d["weir-taskmanagers"][0].as_str().unwrap_or_default().to_string();
        (d["state"] == "RUNNING" && !on.is_empty() && on != tm).then_some(on)
    });
    let (_, exceptions) = http("GET", &app.rest, &format!("/jobs/{job}/exceptions"), None);
    assert!(exceptions.to_string().contains(&tm), "{exceptions}");
    assert!(containers(&format!("weir.cluster={}", app.container)).contains(&format!("{}-{replaced}", app.container)));
    let (status, _) = http("PATCH", &app.rest, &format!("/jobs/{job}?mode=cancel"), None);
    assert_eq!(status, 202);
    let r = app.ended();
    assert_eq!(r["status"], "CANCELED", "{r}");

    // 3. A per-job cluster whose TaskManagers are containers: its network and containers go with it.
    let clusters = || -> Vec<String> {
        let out = run("docker", &["network", "ls", "--filter", "label=weir.cluster", "--format", "{{.Name}}"]);
        text(&out.stdout).lines().filter(|n| !n.starts_with("weir-providers")).map(String::from).collect()
    };
    let before = clusters();
    let load = r#"{"count": 100000}"#;
    let out = run(
        WEIR,
        &["run", "-t", "per-job", "-D", "resourcemanager.provider=docker", "generate", "--args", load, "-p", "2"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("FINISHED"), "{}", text(&out.stderr));
    until("the per-job cluster's network to go", Duration::from_secs(30), || (clusters() == before).then_some(()));

    // 4. The compose file's session cluster, from an image of the weir executable.
    let tag = format!("weir-test-{}:latest", std::process::id());
    let out = run(WEIR, &["image", "--tag", &tag]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let built = text(&out.stdout).trim().to_string();
    let project = format!("weirtest{}", std::process::id());
    let file = format!("{}/../../deploy/docker-compose.yml", env!("CARGO_MANIFEST_DIR"));
    let compose = |args: &[&str]| {
        Command::new("docker-compose")
            .args(["-p", &project, "-f", &file])
            .args(args)
            .env("WEIR_IMAGE", &tag)
            .output()
            .unwrap_or_else(|e| panic!("cannot run docker-compose: {e}"))
    };
    let up = compose(&["up", "-d", "--scale", "taskmanager=2"]);
    assert!(up.status.success(), "{}", text(&up.stderr));
    let rest = text(&compose(&["port", "jobmanager", "8081"]).stdout).trim().to_string();
    let session = || -> Option<()> {
        let (_, o) = http("GET", &rest, "/overview", None);
        (o["taskmanagers"] == 2).then_some(())
    };
    until("two TaskManagers in the compose cluster", Duration::from_secs(60), session);
    for _ in 0..2 {
        let out =
            run(WEIR, &["run", "-t", "remote", "-m", &rest, "generate", "--args", r#"{"count": 100000}"#, "-p", "2"]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert!(text(&out.stderr).contains("FINISHED"), "{}", text(&out.stderr));
    }
    let (_, o) = http("GET", &rest, "/overview", None);
    assert_eq!((o["jobs-finished"].as_u64(), o["taskmanagers"].as_u64()), (Some(2), Some(2)), "{o}");
    let down = compose(&["down"]);
    assert!(down.status.success(), "{}", text(&down.stderr));
    // Only the name goes: the image is shared with other tests of this build (.ci/run removes
    // the images of earlier builds before the tests).
    let _ = run("docker", &["rmi", &tag]);
    assert!(!built.is_empty());
}

#[test]
fn a_killed_application_jobmanager_leaves_containers_the_next_start_removes() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let store = tmp.path().join("results");
    let app = Application::start(&store, &["-D", "parallelism.default=1"], &["endless"]);
    let label = format!("weir.cluster={}", app.container);
    until("a TaskManager container", Duration::from_secs(60), || (containers(&label).len() >= 2).then_some(()));
    let jobmanager_gone = || run("docker", &["container", "inspect", &app.container]).status.code() != Some(0);
    // kill -9 of the JobManager's container (auto-removed): nobody stops its TaskManagers' containers.
    let out = run("docker", &["kill", &app.container]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    until("its container's removal", Duration::from_secs(30), || jobmanager_gone().then_some(()));
    assert!(!containers(&label).is_empty() && !networks(&app.container).is_empty(), "nothing was left behind");
    // The next start sweeps them.
    let next = Application::start(&store, &["-D", "parallelism.default=1"], &["sequential", "1"]);
    assert!(containers(&label).is_empty(), "left: {:?}", containers(&label));
    assert!(networks(&app.container).is_empty());
    assert_eq!(next.ended()["status"], "SUCCEEDED");
}

#[test]
fn an_unreachable_docker_engine_is_a_clear_error_and_starts_nothing() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let program = crate::example("application").display().to_string();
    let out = Command::new(WEIR)
        .args(["run-application", "-t", "docker", &program, "-D", "docker.host=unix:///nonexistent/docker.sock"])
        .env("TMPDIR", tmp.path())
        .output()
        .unwrap_or_else(|e| panic!("cannot run weir: {e}"));
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("cannot reach the Docker engine") && err.contains("/nonexistent/docker.sock"), "{err}");
    let out = Command::new(WEIR)
        .args(["run-application", "-t", "docker", &program, "-D", "docker.host=tcp://127.0.0.1:1"])
        .output()
        .unwrap_or_else(|e| panic!("cannot run weir: {e}"));
    assert!(text(&out.stderr).contains("only a local engine on a unix socket"), "{}", text(&out.stderr));
    assert!(crate::modes::processes_of(tmp.path()).is_empty());
}
