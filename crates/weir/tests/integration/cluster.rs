//! A JobManager and TaskManagers as real processes on loopback.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

pub(crate) const WEIR: &str = env!("CARGO_BIN_EXE_weir");

/// A child process killed (by its pid) when dropped.
pub(crate) struct Proc {
    pub(crate) child: Child,
}

impl From<Child> for Proc {
    fn from(child: Child) -> Proc {
        Proc { child }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `EXE ARGS` with `TMPDIR=tmp` (so whatever it makes there goes with the test's
/// directory) and `env` added to its environment, waits (bounded) for its `ready` line and returns
/// it; the rest of its output is drained in the background.
pub(crate) fn start_program(
    exe: &std::path::Path,
    args: &[&str],
    tmp: &std::path::Path,
    env: &[(String, String)],
) -> (Proc, String) {
    start_logged(exe, args, tmp, env, None)
}

/// As [`start_program`], with all of the process's output appended to `log`.
pub(crate) fn start_logged(
    exe: &std::path::Path,
    args: &[&str],
    tmp: &std::path::Path,
    env: &[(String, String)],
    log: Option<&std::path::Path>,
) -> (Proc, String) {
    let log = log.map(|p| std::fs::OpenOptions::new().create(true).append(true).open(p).map(std::sync::Arc::new).ok());
    let log = log.flatten();
    let mut cmd = Command::new(exe);
    cmd.args(args).env("TMPDIR", tmp).envs(env.iter().map(|(k, v)| (k, v)));
    let spawned = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn();
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => panic!("cannot start weir {args:?}: {e}"),
    };
    // A JobManager says it is ready on stdout, a TaskManager on stderr.
    let (tx, rx) = mpsc::channel();
    let streams: [Option<Box<dyn std::io::Read + Send>>; 2] = [
        child.stdout.take().map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        child.stderr.take().map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
    ];
    for stream in streams.into_iter().flatten() {
        let tx = tx.clone();
        let log = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                if let Some(mut f) = log.as_deref() {
                    let _ = writeln!(f, "{line}");
                }
                if line.contains(" ready: ") {
                    let _ = tx.send(line);
                }
            }
        });
    }
    let mut p = Proc { child };
    match rx.recv_timeout(Duration::from_secs(20)) {
        Ok(line) => (p, line),
        Err(_) => {
            let _ = p.child.kill();
            panic!("weir {args:?} did not become ready within 20 s")
        }
    }
}

/// The worker processes whose parents are `parents` (TaskManagers): pid and the job each runs.
pub(crate) fn workers_of(parents: &[u32]) -> Vec<(u32, String)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").map(|d| d.flatten().collect::<Vec<_>>()).unwrap_or_default() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        // The parent pid is the 4th field of /proc/PID/stat, after the command in parentheses.
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        let ppid = stat.rsplit_once(") ").and_then(|(_, rest)| rest.split(' ').nth(1)).and_then(|p| p.parse().ok());
        if !ppid.is_some_and(|p: u32| parents.contains(&p)) {
            continue;
        }
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let words: Vec<String> = cmdline.split(|b| *b == 0).map(text).collect();
        if words.get(1..3) == Some(&["--weir".to_string(), "worker".to_string()][..])
            && let Some(i) = words.iter().position(|w| w == "--job")
        {
            found.push((pid, words.get(i + 1).cloned().unwrap_or_default()));
        }
    }
    found
}

pub(crate) fn field<'a>(line: &'a str, name: &str) -> &'a str {
    line.split_whitespace().find_map(|w| w.strip_prefix(name)).unwrap_or_default()
}

/// Three restarts, 100 ms apart.
pub(crate) const RESTART: [&str; 6] = [
    "-D",
    "restart-strategy.type=fixed-delay",
    "-D",
    "restart-strategy.fixed-delay.attempts=3",
    "-D",
    "restart-strategy.fixed-delay.delay=100ms",
];

pub(crate) struct Cluster {
    /// The artifact every process runs, and what it needs before a weir command.
    pub(crate) exe: std::path::PathBuf,
    pub(crate) prefix: Vec<&'static str>,
    pub(crate) rest: String,
    pub(crate) rpc_port: String,
    pub(crate) taskmanagers: Vec<Proc>,
    pub(crate) _jobmanager: Proc,
    /// The JobManager's blob store and the TaskManagers' artifact caches.
    pub(crate) blobs: tempfile::TempDir,
    /// Environment variables of every process and command of the cluster.
    pub(crate) env: Vec<(String, String)>,
}

impl Cluster {
    pub(crate) fn new(taskmanagers: usize, slots: u32) -> Cluster {
        Cluster::with(&[], taskmanagers, slots)
    }

    /// A cluster whose JobManager gets `extra` arguments too.
    pub(crate) fn with(extra: &[&str], taskmanagers: usize, slots: u32) -> Cluster {
        Cluster::of(std::path::Path::new(WEIR), &[], extra, taskmanagers, slots)
    }

    /// A cluster of `exe`'s processes (a user program reaches weir's commands behind `prefix`).
    pub(crate) fn of(
        exe: &std::path::Path,
        prefix: &[&'static str],
        extra: &[&str],
        taskmanagers: usize,
        slots: u32,
    ) -> Cluster {
        Cluster::build(exe, prefix, extra, Vec::new(), taskmanagers, slots)
    }

    /// A cluster of weir processes with `env` in their environment and in that of its commands.
    pub(crate) fn with_env(env: Vec<(String, String)>, extra: &[&str], taskmanagers: usize, slots: u32) -> Cluster {
        Cluster::build(std::path::Path::new(WEIR), &[], extra, env, taskmanagers, slots)
    }

    fn build(
        exe: &std::path::Path,
        prefix: &[&'static str],
        extra: &[&str],
        env: Vec<(String, String)>,
        taskmanagers: usize,
        slots: u32,
    ) -> Cluster {
        let mut args = prefix.to_vec();
        args.extend([
            "jobmanager",
            "-D",
            "rest.port=0",
            "-D",
            "jobmanager.rpc.port=0",
            "-D",
            "heartbeat.interval=200",
            "-D",
            "heartbeat.timeout=1500",
            "-D",
            "slot.request.timeout=60000",
        ]);
        args.extend(extra);
        let blobs = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let store = format!("blob.storage.directory={}", blobs.path().join("jobmanager").display());
        args.extend(["-D", &store]);
        let (jm, line) = start_program(exe, &args, blobs.path(), &env);
        let rest = field(&line, "rest=http://").to_string();
        let rpc_port = field(&line, "rpc=").rsplit(':').next().unwrap_or_default().to_string();
        let mut c = Cluster {
            exe: exe.to_path_buf(),
            prefix: prefix.to_vec(),
            rest,
            rpc_port,
            taskmanagers: Vec::new(),
            _jobmanager: jm,
            blobs,
            env,
        };
        for _ in 0..taskmanagers {
            c.add_taskmanager(slots);
        }
        c.wait_for(|o| o["taskmanagers"].as_u64() == Some(taskmanagers as u64), "/overview");
        c
    }

    pub(crate) fn add_taskmanager(&mut self, slots: u32) {
        self.add_taskmanager_with(slots, &[]);
    }

    /// Adds a TaskManager with `extra` arguments.
    pub(crate) fn add_taskmanager_with(&mut self, slots: u32, extra: &[&str]) {
        let port = format!("jobmanager.rpc.port={}", self.rpc_port);
        let slots = format!("taskmanager.numberOfTaskSlots={slots}");
        let cache = self.blobs.path().join(format!("taskmanager-{}", self.taskmanagers.len()));
        let cache = format!("blob.storage.directory={}", cache.display());
        let mut args = self.prefix.clone();
        args.extend([
            "taskmanager",
            "-D",
            &port,
            "-D",
            &slots,
            "-D",
            "heartbeat.interval=200",
            "-D",
            "heartbeat.timeout=1500",
            "-D",
            &cache,
        ]);
        args.extend(extra);
        let (tm, _) = start_program(&self.exe, &args, self.blobs.path(), &self.env);
        self.taskmanagers.push(tm);
    }

    pub(crate) fn get(&self, path: &str) -> (u16, Value) {
        http("GET", &self.rest, path, None)
    }

    /// Polls `path` until `ok` holds (bounded: 20 s).
    pub(crate) fn wait_for(&self, ok: impl Fn(&Value) -> bool, path: &str) -> Value {
        let start = Instant::now();
        loop {
            let (_, v) = self.get(path);
            if ok(&v) {
                return v;
            }
            assert!(start.elapsed() < Duration::from_secs(20), "{path} never satisfied the condition: {v}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Polls job `id` until it reaches a terminal state (bounded by `limit`); its REST entry then.
    pub(crate) fn wait_end(&self, id: &str, limit: Duration) -> Value {
        let start = Instant::now();
        loop {
            let (_, job) = self.get(&format!("/jobs/{id}"));
            if matches!(job["state"].as_str(), Some("FINISHED" | "FAILED" | "CANCELED")) {
                return job;
            }
            assert!(start.elapsed() < limit, "job {id} did not end in {limit:?}: {job}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Runs a weir command of this cluster's artifact against it.
    pub(crate) fn weir(&self, args: &[&str]) -> Output {
        match self.weir_command(args).output() {
            Ok(o) => o,
            Err(e) => panic!("cannot run weir: {e}"),
        }
    }

    /// Submits the built-in `generate` job detached with JSON `args` at parallelism `p`,
    /// checkpointing every `interval` into `dir/cp`; its id.
    pub(crate) fn generate_checkpointed(&self, args: &str, p: &str, interval: &str, dir: &std::path::Path) -> String {
        let cp = format!("execution.checkpointing.dir={}", dir.join("cp").display());
        let every = format!("execution.checkpointing.interval={interval}");
        let out =
            self.weir(&["run", "-t", "remote", "-d", "generate", "--args", args, "-p", p, "-D", &every, "-D", &cp]);
        let id = job_id(&out);
        assert!(!id.is_empty(), "{}", text(&out.stderr));
        id
    }

    /// The command [`Cluster::weir`] runs, to start it in the background.
    pub(crate) fn weir_command(&self, args: &[&str]) -> Command {
        let mut all = self.prefix.clone();
        all.extend(args);
        all.extend(["-m", &self.rest]);
        let mut command = Command::new(&self.exe);
        command.args(&all).envs(self.env.iter().map(|(k, v)| (k, v)));
        command
    }

    /// `kill -9` of the TaskManager registered as `id`, found by the pid its REST entry names.
    pub(crate) fn kill_taskmanager(&mut self, id: &str) {
        let (_, info) = self.get(&format!("/taskmanagers/{id}"));
        let pid: u32 =
            info["path"].as_str().and_then(|p| p.rsplit(':').next()).and_then(|p| p.parse().ok()).unwrap_or(0);
        let victim = self.taskmanagers.iter().position(|p| p.child.id() == pid);
        let victim = victim.unwrap_or_else(|| panic!("no TaskManager with pid {pid}: {info}"));
        let mut proc = self.taskmanagers.remove(victim);
        let _ = proc.child.kill();
        let _ = proc.child.wait();
    }

    /// `kill -9` of the JobManager; its TaskManagers, left without it, end by themselves (waited
    /// for, bounded).
    pub(crate) fn kill_jobmanager(&mut self) {
        let _ = self._jobmanager.child.kill();
        let _ = self._jobmanager.child.wait();
        let start = Instant::now();
        for tm in &mut self.taskmanagers {
            while !matches!(tm.child.try_wait(), Ok(Some(_))) {
                assert!(start.elapsed() < Duration::from_secs(20), "a TaskManager outlived its JobManager by 20 s");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// The JobManager's process id.
    pub(crate) fn jobmanager_pid(&self) -> u32 {
        self._jobmanager.child.id()
    }

    /// The worker processes of this cluster's TaskManagers: pid and the job each runs.
    pub(crate) fn workers(&self) -> Vec<(u32, String)> {
        let parents: Vec<u32> = self.taskmanagers.iter().map(|p| p.child.id()).collect();
        workers_of(&parents)
    }

    pub(crate) fn job_state(&self, id: &str) -> String {
        self.get(&format!("/jobs/{id}")).1["state"].as_str().unwrap_or_default().to_string()
    }
}

/// A minimal HTTP/1.1 request to loopback, for checking the REST API from the outside.
pub(crate) fn http(method: &str, address: &str, path: &str, body: Option<&str>) -> (u16, Value) {
    let (status, body) = http_text(method, address, path, body);
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

/// [`http`], with the body as text.
pub(crate) fn http_text(method: &str, address: &str, path: &str, body: Option<&str>) -> (u16, String) {
    let mut s = match std::net::TcpStream::connect(address) {
        Ok(s) => s,
        Err(e) => panic!("cannot connect to {address}: {e}"),
    };
    // Bounded: a JobManager that stops answering fails the test instead of hanging it.
    let _ = s.set_read_timeout(Some(std::time::Duration::from_secs(30)));
    let body = body.unwrap_or("");
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = s.write_all(request.as_bytes());
    let mut response = Vec::new();
    let _ = s.read_to_end(&mut response);
    let response = String::from_utf8_lossy(&response);
    let status = response.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (status, body.to_string())
}

/// Waits (at most 20 s) until `child` exits and returns how; a child still running then is killed
/// and the test fails, saying that `what` kept running.
pub(crate) fn wait_exit(child: &mut Child, what: &str) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap_or_else(|e| panic!("wait: {e}")) {
            return s;
        }
        if start.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} kept running");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub(crate) fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

pub(crate) fn job_id(out: &Output) -> String {
    text(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("Job has been submitted with JobID "))
        .unwrap_or_default()
        .to_string()
}

/// The bundled text.
pub(crate) fn gettysburg() -> String {
    format!("{}/../../examples/data/gettysburg.txt", env!("CARGO_MANIFEST_DIR"))
}

pub(crate) fn bundled() -> String {
    format!("{{\"input\": \"{}\"}}", gettysburg())
}

/// Word counts of the bundled text, computed here independently of weir.
pub(crate) fn reference_counts() -> std::collections::BTreeMap<String, u64> {
    let path = gettysburg();
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"));
    let mut counts = std::collections::BTreeMap::new();
    for w in text.split(|c: char| !(c.is_alphanumeric() || c == '\'')) {
        let w = w.trim_matches('\'').to_lowercase();
        if !w.is_empty() {
            *counts.entry(w).or_insert(0) += 1;
        }
    }
    counts
}

/// The final count per word in a wordcount output directory (the highest running count).
pub(crate) fn final_counts(dir: &std::path::Path) -> std::collections::BTreeMap<String, u64> {
    let mut counts = std::collections::BTreeMap::new();
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("no output in {}: {e}", dir.display())).flatten() {
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        for line in text.lines() {
            let (w, c) = line.rsplit_once(' ').unwrap_or_else(|| panic!("bad output line {line:?}"));
            let c: u64 = c.parse().unwrap_or_else(|_| panic!("bad count in {line:?}"));
            let best = counts.entry(w.to_string()).or_insert(0);
            *best = c.max(*best);
        }
    }
    counts
}

/// The processes whose parent is `parent`.
pub(crate) fn children_of(parent: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .map(|d| d.flatten().collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .filter_map(|e| {
            let pid = e.file_name().to_string_lossy().parse::<u32>().ok()?;
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            // The state is the 3rd field after the command in parentheses; zombies are not running.
            let rest = stat.rsplit_once(") ")?.1.to_string();
            let mut fields = rest.split(' ');
            let state = fields.next()?;
            let ppid: u32 = fields.next()?.parse().ok()?;
            (ppid == parent && state != "Z").then_some(pid)
        })
        .collect()
}

#[test]
fn a_job_submitted_to_the_cluster_runs_on_a_taskmanager_and_rest_reports_it() {
    let c = Cluster::new(1, 4);
    let out = c.weir(&["run", "-t", "remote", "wordcount", "--args", &bundled(), "-p", "2"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("FINISHED"), "{}", text(&out.stderr));
    let id = job_id(&out);
    let (status, job) = c.get(&format!("/jobs/{id}"));
    assert_eq!(status, 200);
    assert_eq!(job["state"], "FINISHED");
    assert_eq!(job["vertices"][2]["name"], "Count");
    assert_eq!(job["vertices"][2]["parallelism"], 2);
    assert_eq!(job["vertices"][2]["metrics"]["read-records"], 272, "{job}");
    // Every task of every vertex finished; the job counts the tasks of its two chains.
    for v in job["vertices"].as_array().into_iter().flatten() {
        assert_eq!(v["status"], "FINISHED", "{v}");
        assert_eq!(v["tasks"]["FINISHED"], v["parallelism"], "{v}");
    }
    assert_eq!(job["tasks"]["finished"], job["tasks"]["total"], "{job}");
    assert!(job["tasks"]["total"].as_u64().is_some_and(|n| n >= 2), "{job}");
    assert_eq!(c.get(&format!("/jobs/{id}/plan")).1["plan"]["nodes"].as_array().map(Vec::len), Some(2));
    let (_, result) = c.get(&format!("/jobs/{id}/execution-result"));
    assert_eq!(result["job-execution-result"]["application-status"], "SUCCEEDED");
    let overview = c.wait_for(|o| o["slots-available"] == 4, "/overview");
    assert_eq!(overview["jobs-finished"], 1);
    assert_eq!(overview["slots-total"], 4);
    let list = c.weir(&["list"]);
    assert!(text(&list.stdout).contains(&format!("{id} : wordcount (FINISHED)")), "{}", text(&list.stdout));
    let (_, tms) = c.get("/taskmanagers");
    assert_eq!(tms["taskmanagers"][0]["slotsNumber"], 4);
    // Served under /v1 too, and described in the OpenAPI document.
    assert_eq!(c.get("/v1/overview").1["taskmanagers"], 1);
    assert!(c.get("/openapi.json").1["paths"]["/jobs/{jobid}"].is_object());
}

#[test]
fn a_killed_or_silent_taskmanager_fails_its_jobs() {
    let mut c = Cluster::new(1, 2);
    let load = r#"{"rate": 200}"#;
    let id = job_id(&c.weir(&["run", "-t", "remote", "-d", "generate", "--args", load]));
    c.wait_for(|j| j["state"] == "RUNNING", &format!("/jobs/{id}"));
    // kill -9: the connection drops (closed, or reset if data was in flight) and the loss is
    // noticed at once.
    let mut tm = c.taskmanagers.remove(0);
    let _ = tm.child.kill();
    let _ = tm.child.wait();
    c.wait_for(|j| j["state"] == "FAILED", &format!("/jobs/{id}"));
    let (_, ex) = c.get(&format!("/jobs/{id}/exceptions"));
    assert!(ex["root-exception"].as_str().unwrap_or_default().contains("was lost: its connection"), "{ex}");
    assert_eq!(c.get("/overview").1["taskmanagers"], 0);

    // A stopped process keeps its connection open: the heartbeat timeout (1.5 s here) finds it.
    c.add_taskmanager(2);
    c.wait_for(|o| o["taskmanagers"] == 1, "/overview");
    let id = job_id(&c.weir(&["run", "-t", "remote", "-d", "generate", "--args", load]));
    c.wait_for(|j| j["state"] == "RUNNING", &format!("/jobs/{id}"));
    let pid = c.taskmanagers[0].child.id().to_string();
    let _ = Command::new("kill").args(["-STOP", &pid]).status();
    c.wait_for(|j| j["state"] == "FAILED", &format!("/jobs/{id}"));
    let (_, ex) = c.get(&format!("/jobs/{id}/exceptions"));
    assert!(ex["root-exception"].as_str().unwrap_or_default().contains("no heartbeat"), "{ex}");
    let _ = Command::new("kill").args(["-CONT", &pid]).status();
}

#[test]
fn bad_peers_and_addresses_are_clear_errors() {
    let c = Cluster::new(0, 1);
    // A peer with another protocol version is refused before anything is decoded.
    let mut s = match std::net::TcpStream::connect(format!("127.0.0.1:{}", c.rpc_port)) {
        Ok(s) => s,
        Err(e) => panic!("{e}"),
    };
    // (The connection's security handshake first: this cluster has no secret, so a bare hello.)
    let _ = s.write_all(b"WSEC\x01\0\0\0WEIR\0\0\0\x63");
    let mut answer = Vec::new();
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = s.read_to_end(&mut answer);
    assert_eq!(&answer[..4], b"WSEC", "the JobManager answers with its security hello");
    assert_eq!(&answer[8..12], b"WEIR", "then with its own protocol handshake, then closes");
    assert_eq!(c.get("/overview").1["taskmanagers"], 0);

    // A TaskManager pointed at something that is not a JobManager of its version.
    let fake = match std::net::TcpListener::bind("127.0.0.1:0") {
        Ok(l) => l,
        Err(e) => panic!("{e}"),
    };
    let fake_port = fake.local_addr().map(|a| a.port()).unwrap_or(0);
    std::thread::spawn(move || {
        if let Ok((mut s, _)) = fake.accept() {
            let _ = s.write_all(b"WSEC\x01\0\0\0WEIR\0\0\0\x63");
            std::thread::sleep(Duration::from_millis(500));
        }
    });
    let out = Command::new(WEIR)
        .args(["taskmanager", "-D", &format!("jobmanager.rpc.port={fake_port}")])
        .output()
        .map_err(|e| e.to_string());
    let out = out.unwrap_or_else(|e| panic!("{e}"));
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("speaks protocol version 99"), "{}", text(&out.stderr));

    // Nothing listening (port 1, which no test binds: see the test of a TaskManager without its
    // JobManager).
    let closed = 1;
    assert!(std::net::TcpStream::connect(("127.0.0.1", closed)).is_err(), "something listens on port {closed}");
    let out = Command::new(WEIR)
        .args(["run", "-t", "remote", "-m", &format!("127.0.0.1:{closed}"), "wordcount", "--args", &bundled()])
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("cannot reach the JobManager's REST endpoint"), "{}", text(&out.stderr));

    // A port in use.
    let rest_port = c.rest.rsplit(':').next().unwrap_or_default();
    let out = Command::new(WEIR)
        .args(["jobmanager", "-D", &format!("rest.port={rest_port}"), "-D", "jobmanager.rpc.port=0"])
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("is the port in use?"), "{}", text(&out.stderr));

    // An unknown target, an unknown job id.
    let out = c.weir(&["run", "-t", "yarn", "wordcount"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("valid targets: local, remote"), "{}", text(&out.stderr));
    let out = c.weir(&["cancel", "0123456789abcdef0123456789abcdef"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("not known to this cluster"), "{}", text(&out.stderr));
}
