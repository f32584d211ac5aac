//! A Kafka broker for tests, and an independent client to check what jobs wrote.
//!
//! Apache Kafka cannot be installed on the machines weir is tested on (no Maven, no image pulls).
//! The broker is `noida-db` (PyPI), a reimplementation of Kafka's protocol with transactions,
//! `read_committed` and consumer groups; the client is `confluent-kafka` (PyPI, librdkafka's Python
//! binding) through `scripts/kafka-check.py`. `scripts/test.sh` installs both into
//! `~/.cache/weir-tools/venv` (or `$WEIR_TOOLS_VENV`). The broker binds to 127.0.0.1 only.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The virtual environment holding `noida-db`, `confluent-kafka` and their Python.
pub fn venv() -> PathBuf {
    if let Some(v) = std::env::var_os("WEIR_TOOLS_VENV") {
        return PathBuf::from(v);
    }
    PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/weir-tools/venv")
}

/// The `noida-db` executable itself. (The `bin/noida-db` of the venv is a Python wrapper that
/// runs it as a child: killing the wrapper would leave the broker running.)
fn noida() -> PathBuf {
    let lib = venv().join("lib");
    let found = std::fs::read_dir(&lib).into_iter().flatten().flatten().find_map(|python| {
        let exe = python.path().join("site-packages/noida_db/noida-db");
        exe.is_file().then_some(exe)
    });
    found.unwrap_or_else(|| {
        panic!(
            "noida-db is missing under {}: run scripts/test.sh (it installs noida-db and confluent-kafka into \
             ~/.cache/weir-tools/venv) or set WEIR_TOOLS_VENV",
            lib.display()
        )
    })
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/kafka-check.py")
}

/// A record as the checking consumer saw it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
pub struct Seen {
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Key, as text.
    pub key: Option<String>,
    /// Value, as text.
    pub value: Option<String>,
}

/// A `noida-db` server on free loopback ports, speaking Kafka (and, for the Elasticsearch sink's
/// tests, Elasticsearch 8's REST API), stopped (by its pid) when dropped.
pub struct Broker {
    child: Option<Child>,
    port: u16,
    es_port: u16,
    data: tempfile::TempDir,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

impl Broker {
    /// Starts a broker; panics with what to install when `noida-db` is missing.
    pub fn start() -> Broker {
        noida();
        let data = tempfile::tempdir().expect("a temporary directory");
        let mut b = Broker { child: None, port: free_port(), es_port: free_port(), data };
        b.run();
        b
    }

    fn run(&mut self) {
        let log = std::fs::File::create(self.data.path().join("broker.log")).expect("the broker's log file");
        let child = Command::new(noida())
            .args(["start", "--host", "127.0.0.1", "--only", "kafka,elasticsearch"])
            .args(["--kafka-port", &self.port.to_string(), "--elasticsearch-port", &self.es_port.to_string()])
            .arg("--data-dir")
            .arg(self.data.path().join("data"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("noida-db starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err()
            || TcpStream::connect(("127.0.0.1", self.es_port)).is_err()
        {
            assert!(Instant::now() < deadline, "the Kafka broker did not listen within 20 s: {}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// What the broker printed.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data.path().join("broker.log")).unwrap_or_default()
    }

    /// `127.0.0.1:PORT`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `http://127.0.0.1:PORT` of its Elasticsearch API (noida-db's reimplementation of
    /// Elasticsearch 8's REST API).
    pub fn elasticsearch_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.es_port)
    }

    /// Kills the broker (-9); its data stays for [`Broker::restart`].
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the broker again on the same port and data.
    pub fn restart(&mut self) {
        self.kill();
        self.run();
    }

    fn tool(&self, args: &[&str]) -> Command {
        let mut c = Command::new(venv().join("bin/python"));
        c.arg(script()).arg(self.address()).args(args);
        c
    }

    fn check(&self, mut c: Command, stdin: Option<&[u8]>) -> String {
        c.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().expect("python runs kafka-check.py");
        if let (Some(data), Some(mut sin)) = (stdin, child.stdin.take()) {
            sin.write_all(data).expect("stdin to kafka-check.py");
        }
        let out = child.wait_with_output().expect("kafka-check.py ends");
        assert!(out.status.success(), "kafka-check.py failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Creates `topic` with `partitions` partitions.
    pub fn create_topic(&self, topic: &str, partitions: u32) {
        self.check(self.tool(&["create", topic, &partitions.to_string()]), None);
    }

    /// Writes `lines` to `topic`, round-robin over its first `partitions` partitions.
    pub fn produce(&self, topic: &str, partitions: u32, lines: &[String]) {
        let mut data = lines.join("\n");
        data.push('\n');
        let n =
            self.check(self.tool(&["produce", topic, "--partitions", &partitions.to_string()]), Some(data.as_bytes()));
        assert_eq!(n.trim(), lines.len().to_string(), "records written");
    }

    /// Every committed record of `topic` (a `read_committed` consumer from the start), stopping
    /// after `expect` records or after `idle` without one.
    pub fn consume(&self, topic: &str, expect: Option<usize>, idle: Duration) -> Vec<Seen> {
        let mut args = vec!["consume".to_string(), topic.to_string(), "--idle".into(), idle.as_secs_f64().to_string()];
        if let Some(n) = expect {
            args.extend(["--expect".into(), n.to_string()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.check(self.tool(&args), None)
            .lines()
            .map(|l| serde_json::from_str(l).expect("kafka-check.py prints JSON lines"))
            .collect()
    }

    /// The offsets `group` committed for `topic`'s partitions (negative: none).
    pub fn committed(&self, topic: &str, group: &str) -> BTreeMap<i32, i64> {
        let out = self.check(self.tool(&["lag", topic, group]), None);
        let m: BTreeMap<String, i64> = serde_json::from_str(out.trim()).expect("JSON offsets");
        m.into_iter().filter_map(|(k, v)| Some((k.parse().ok()?, v))).collect()
    }
}

/// A producer for feeding a topic from a test while a job runs (librdkafka, idempotent: a retry
/// never writes a line twice).
pub struct Feeder {
    producer: rdkafka::producer::BaseProducer,
    topic: String,
    partitions: i32,
    sent: u64,
}

impl Feeder {
    /// Writes `line`, round-robin over the partitions.
    pub fn send(&mut self, line: &str) {
        let partition = (self.sent % self.partitions as u64) as i32;
        self.write(line, partition, None);
    }

    /// Writes `line` to `partition` with timestamp `ts` (ms since the epoch).
    pub fn send_at(&mut self, line: &str, partition: i32, ts: i64) {
        self.write(line, partition, Some(ts));
    }

    fn write(&mut self, line: &str, partition: i32, ts: Option<i64>) {
        use rdkafka::producer::BaseRecord;
        let mut record = BaseRecord::<[u8], [u8]>::to(&self.topic).payload(line.as_bytes()).partition(partition);
        if let Some(ts) = ts {
            record = record.timestamp(ts);
        }
        // A full queue empties as the broker acknowledges; bounded, so a broker that takes nothing
        // fails the test rather than hanging it.
        for _ in 0..10_000 {
            match self.producer.send(record) {
                Ok(()) => {
                    self.producer.poll(Duration::ZERO);
                    self.sent += 1;
                    return;
                }
                Err((_, back)) => {
                    record = back;
                    self.producer.poll(Duration::from_millis(5));
                }
            }
        }
        panic!("the broker took no record for 50 s");
    }

    /// Waits until every line sent is acknowledged.
    pub fn flush(&self) {
        use rdkafka::producer::Producer;
        assert!(self.producer.flush(Duration::from_secs(60)).is_ok(), "the test's lines were not all delivered");
    }
}

impl Broker {
    /// A [`Feeder`] of `topic`, over its first `partitions` partitions.
    pub fn feeder(&self, topic: &str, partitions: u32) -> Feeder {
        let producer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", self.address())
            .set("enable.idempotence", "true")
            .set("linger.ms", "2")
            .create()
            .expect("a producer");
        Feeder { producer, topic: topic.to_string(), partitions: partitions.max(1) as i32, sent: 0 }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
    }
}
