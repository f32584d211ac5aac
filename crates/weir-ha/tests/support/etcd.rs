//! A real etcd server on loopback for tests: Debian's `etcd-server`, one member, a fresh data
//! directory, free ports. Killed (by its pid) when dropped.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running (or stopped) etcd member.
pub struct EtcdServer {
    child: Option<Child>,
    dir: tempfile::TempDir,
    host: std::net::Ipv4Addr,
    client: u16,
    peer: u16,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free loopback port")
}

impl EtcdServer {
    /// Starts one on loopback and waits until it answers.
    pub fn start() -> EtcdServer {
        EtcdServer::start_on(std::net::Ipv4Addr::LOCALHOST)
    }

    /// Starts one serving clients on `host` (an address of this machine) only.
    pub fn start_on(host: std::net::Ipv4Addr) -> EtcdServer {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mut server = EtcdServer { child: None, dir, host, client: free_port(), peer: free_port() };
        server.restart();
        server
    }

    /// `HOST:PORT` of its client URL.
    pub fn address(&self) -> String {
        format!("{}:{}", self.host, self.client)
    }

    /// Where its output goes.
    pub fn log(&self) -> PathBuf {
        self.dir.path().join("etcd.log")
    }

    /// Starts it again (same ports, same data) after [`EtcdServer::stop`]. Its ports were free when
    /// it first started, but while it was down another process's outgoing connection may have
    /// taken one as its local port for a moment: then it tries again (bounded), as an operator would.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "etcd runs already");
        for attempt in 1..=10 {
            match self.launch() {
                Ok(()) => return,
                // (Most likely a port taken meanwhile, "address already in use"; whatever it was,
                // the last attempt's output is shown.)
                Err(log) if attempt < 10 => {
                    eprintln!("etcd exited at start (attempt {attempt}), trying again:\n{log}");
                    std::thread::sleep(Duration::from_millis(500));
                }
                Err(log) => panic!("etcd exited (attempt {attempt}); the end of its output:\n{log}"),
            }
        }
    }

    /// Starts etcd and waits until it answers; the end of its output if it exits first.
    fn launch(&mut self) -> Result<(), String> {
        let binary = ["/usr/bin/etcd", "/usr/local/bin/etcd"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .expect("etcd is not installed: apt-get install etcd-server (bash .ci/run does)");
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.log()).expect("etcd log file");
        let client = format!("http://{}:{}", self.host, self.client);
        let peer = format!("http://127.0.0.1:{}", self.peer);
        let child = Command::new(binary)
            .arg("--name")
            .arg("weir-test")
            .arg("--data-dir")
            .arg(self.dir.path().join("data"))
            .args(["--listen-client-urls", &client, "--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
            .arg("--initial-cluster")
            .arg(format!("weir-test={peer}"))
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("etcd log file"))
            .stderr(log)
            .spawn()
            .expect("cannot start etcd");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        let url = format!("{client}/v3/maintenance/status");
        loop {
            let ok =
                ureq::post(&url).send_json(serde_json::json!({})).map(|r| r.status().is_success()).unwrap_or(false);
            if ok {
                return Ok(());
            }
            if let Some(Ok(Some(_))) = self.child.as_mut().map(|c| c.try_wait()) {
                self.child = None;
                let text = std::fs::read_to_string(self.log()).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(8).collect();
                return Err(tail.into_iter().rev().collect::<Vec<_>>().join("\n"));
            }
            assert!(Instant::now() < deadline, "etcd did not answer within 30 s; see {}", self.log().display());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills it (`kill -9`) and waits for it to end.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.stop();
    }
}
