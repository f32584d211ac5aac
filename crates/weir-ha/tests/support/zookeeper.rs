//! A real ZooKeeper server for tests: Debian's `zookeeper` package, run standalone on a free
//! loopback port with a fresh data directory. The server is killed when the [`ZkServer`] is
//! dropped, so no test leaves a process behind.

#![allow(dead_code)]

use std::fs::File;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The server's jar, from Debian's `libzookeeper-java` (pulled in by `zookeeper`).
const JAR: &str = "/usr/share/java/zookeeper.jar";
/// A logging backend for the server's slf4j, so that its log says something (optional).
const SLF4J_SIMPLE: &str = "/usr/share/java/slf4j-simple.jar";
/// How long a server may take to answer after its start.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A standalone ZooKeeper server on `127.0.0.1` (or another local address), killed on drop.
pub struct ZkServer {
    dir: tempfile::TempDir,
    host: std::net::Ipv4Addr,
    port: u16,
    child: Option<Child>,
    starts: u32,
}

impl ZkServer {
    /// Starts a server on a free loopback port and waits until it answers.
    pub fn start() -> ZkServer {
        ZkServer::start_on(std::net::Ipv4Addr::LOCALHOST)
    }

    /// Starts a server listening on `host` (an address of this machine) only.
    pub fn start_on(host: std::net::Ipv4Addr) -> ZkServer {
        if !Path::new(JAR).exists() {
            panic!(
                "ZooKeeper is not installed ({JAR} is missing): the ZooKeeper tests run a real server; install \
                 it with `apt-get install zookeeperd` (Debian/Ubuntu) and run the tests again"
            );
        }
        let dir = tempfile::Builder::new().prefix("weir-zk-").tempdir().expect("cannot create a temp directory");
        let port = free_port();
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).expect("cannot create the ZooKeeper data directory");
        // tickTime 200 ms: sessions of 1 s (5 ticks) to 20 s (100 ticks) are allowed.
        let config = format!(
            "tickTime=200\n\
             dataDir={}\n\
             clientPort={port}\n\
             clientPortAddress={host}\n\
             admin.enableServer=false\n\
             4lw.commands.whitelist=ruok,srvr,stat\n\
             minSessionTimeout=1000\n\
             maxSessionTimeout=20000\n\
             maxClientCnxns=0\n",
            data.display()
        );
        std::fs::write(dir.path().join("zoo.cfg"), config).expect("cannot write zoo.cfg");
        let mut server = ZkServer { dir, host, port, child: None, starts: 0 };
        server.launch();
        server
    }

    /// `HOST:PORT`, for `high-availability.zookeeper.quorum`.
    pub fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// The file the server logs to.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    /// Kills the server (SIGKILL) and waits for it to exit. Its data stays for [`Self::restart`].
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port with the same data (after [`Self::stop`]).
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }

    /// Freezes the server (SIGSTOP): connections stay open but nothing is answered, as when the
    /// network silently drops packets.
    pub fn pause(&self) {
        self.signal("STOP");
    }

    /// Thaws a server frozen by [`Self::pause`] (SIGCONT).
    pub fn resume(&self) {
        self.signal("CONT");
    }

    fn signal(&self, name: &str) {
        let child = self.child.as_ref().expect("the ZooKeeper server is not running");
        let status =
            Command::new("kill").args([format!("-{name}"), child.id().to_string()]).status().expect("cannot run kill");
        assert!(status.success(), "kill -{name} {} failed", child.id());
    }

    fn launch(&mut self) {
        self.starts += 1;
        let log_path = self.log_path();
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .expect("cannot open the ZooKeeper log file");
        let _ = writeln!(log, "==== weir test: start {} on port {}", self.starts, self.port);
        let err = log.try_clone().expect("cannot clone the log file handle");
        let mut classpath = JAR.to_string();
        if Path::new(SLF4J_SIMPLE).exists() {
            classpath.push(':');
            classpath.push_str(SLF4J_SIMPLE);
        }
        let java = if Path::new("/usr/bin/java").exists() { "/usr/bin/java" } else { "java" };
        let child = Command::new(java)
            .args([
                "-XX:+UseSerialGC",
                "-XX:TieredStopAtLevel=1",
                "-Xmx256m",
                "-Dzookeeper.admin.enableServer=false",
                "-Dzookeeper.jmx.log4j.disable=true",
                "-cp",
                &classpath,
                "org.apache.zookeeper.server.ZooKeeperServerMain",
            ])
            .arg(self.dir.path().join("zoo.cfg"))
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(err))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start java for the ZooKeeper server: {e}; is Java installed?"));
        self.child = Some(child);
        self.wait_ready();
    }

    /// Waits until the server serves (its `srvr` four-letter word reports a mode).
    fn wait_ready(&mut self) {
        let started = Instant::now();
        let addr = SocketAddr::from((self.host, self.port));
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                panic!("the ZooKeeper server exited with {status} at its start:\n{}", self.log_tail());
            }
            if serving(addr) {
                return;
            }
            if started.elapsed() > START_TIMEOUT {
                self.stop();
                panic!("the ZooKeeper server did not answer within {START_TIMEOUT:?}:\n{}", self.log_tail());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The end of the server's log, with its path, for a failure message.
    pub fn log_tail(&self) -> String {
        let path = self.log_path();
        let mut text = String::new();
        if let Ok(mut f) = File::open(&path) {
            let _ = f.read_to_string(&mut text);
        }
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(40)..].join("\n");
        format!("(server log: {})\n{tail}", path.display())
    }
}

impl Drop for ZkServer {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_ref() {
            // A frozen server dies of SIGKILL too; thaw it anyway so that it exits promptly.
            let _ = Command::new("kill").args(["-CONT".to_string(), child.id().to_string()]).status();
        }
        self.stop();
        if std::thread::panicking() {
            eprintln!("ZooKeeper server log: {}", self.log_path().display());
            // Keep the log of a failed test.
            let keep = std::env::temp_dir().join(format!("weir-zk-{}-server.log", self.port));
            if std::fs::copy(self.log_path(), &keep).is_ok() {
                eprintln!("(copied to {})", keep.display());
            }
        }
    }
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind(("127.0.0.1", 0)).expect("cannot bind a loopback port");
    listener.local_addr().expect("no local address").port()
}

/// Whether the server answers `srvr` with its mode (it says "not currently serving" before).
fn serving(addr: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else { return false };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
    if stream.write_all(b"srvr").is_err() {
        return false;
    }
    let _ = stream.shutdown(Shutdown::Write);
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer.contains("Mode:")
}
