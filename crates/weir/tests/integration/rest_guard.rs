//! What REST refuses: endpoints turned off (`web.submit.enable`, `web.cancel.enable`), requests
//! that name a host the cluster does not answer to (DNS rebinding), and uploads a web page could
//! send cross-site. On a mini cluster: the JobManager's REST is the subject.

use std::io::{Read, Write};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use weir::{Job, JobStatus, MiniCluster, Registry, StreamEnv};

use super::cluster::{http, text};

const WEIR: &str = env!("CARGO_BIN_EXE_weir");

fn endless(env: &mut StreamEnv, rate: f64) -> weir::Result<()> {
    env.datagen(None, Some(rate), |i| i).discard();
    Ok(())
}
static ENDLESS: Job<f64> = Job::new("guard-endless", endless);

/// A request with `headers` as given (no Host header unless one is among them).
fn raw(address: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, Value) {
    let mut s = std::net::TcpStream::connect(address).unwrap_or_else(|e| panic!("cannot connect to {address}: {e}"));
    let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
    let mut head = format!("{method} {path} HTTP/1.1\r\nContent-Length: {}\r\nConnection: close\r\n", body.len());
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let _ = s.write_all(head.as_bytes());
    let _ = s.write_all(body);
    let mut response = String::new();
    let _ = s.read_to_string(&mut response);
    let status = response.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let json = response.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (status, serde_json::from_str(json).unwrap_or(Value::Null))
}

fn error_of(v: &Value) -> String {
    v["errors"][0].as_str().unwrap_or_default().to_string()
}

#[test]
fn turned_off_endpoints_refuse_with_the_key_that_turns_them_on() -> weir::Result<()> {
    let settings = [("web.submit.enable", "false"), ("web.cancel.enable", "false")];
    let cluster = MiniCluster::with_settings(Registry::new().register(&ENDLESS), 1, 1, &settings)?;
    let rest = cluster.rest_address();
    let octets = [("Host", rest.as_str()), ("Content-Type", "application/octet-stream")];
    let (status, v) = raw(&rest, "POST", "/artifacts/upload", &octets, b"0123");
    assert_eq!(status, 403, "{v}");
    assert!(error_of(&v).contains("web.submit.enable: false"), "{v}");
    let digest = "ab".repeat(32);
    for (method, path, body) in [
        ("POST", format!("/artifacts/{digest}/run"), Some(r#"{"job": "x"}"#)),
        ("DELETE", format!("/artifacts/{digest}"), None),
    ] {
        let (status, v) = http(method, &rest, &path, body);
        assert_eq!(status, 403, "{method} {path}: {v}");
        assert!(error_of(&v).contains("web.submit.enable"), "{v}");
    }
    // A running job cannot be cancelled through REST, nor by the CLI, which says why.
    let id = cluster.submit(&ENDLESS, 100.0, &[("parallelism.default", "1")])?;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while cluster.status(id)? != JobStatus::Running {
        assert!(std::time::Instant::now() < deadline, "the job never ran");
        std::thread::sleep(Duration::from_millis(5));
    }
    let (status, v) = http("PATCH", &rest, &format!("/jobs/{id}?mode=cancel"), None);
    assert_eq!(status, 403, "{v}");
    assert!(error_of(&v).contains("web.cancel.enable: false"), "{v}");
    let out = Command::new(WEIR)
        .args(["cancel", &id.to_string(), "-m", &rest])
        .output()
        .unwrap_or_else(|e| panic!("cannot run weir: {e}"));
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("web.cancel.enable"), "{}", text(&out.stderr));
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(cluster.status(id)?, JobStatus::Running, "still running");
    // The web dashboard's configuration says so.
    let (_, config) = http("GET", &rest, "/config", None);
    assert_eq!(config["features"]["web-cancel"], false, "{config}");
    Ok(())
}

#[test]
fn foreign_host_names_and_cross_site_uploads_are_refused() -> weir::Result<()> {
    let cluster =
        MiniCluster::with_settings(Registry::new(), 0, 1, &[("weir.rest.allowed-hosts", "weir.example.com")])?;
    let rest = cluster.rest_address();
    let port = rest.rsplit(':').next().unwrap_or_default().to_string();
    // A page on another domain that resolved its name to this loopback endpoint names its domain.
    for foreign in [format!("rebind.example:{port}"), "127.0.0.1.nip.io".to_string()] {
        let (status, v) = raw(&rest, "GET", "/overview", &[("Host", &foreign)], b"");
        assert_eq!(status, 403, "{foreign}: {v}");
        assert!(error_of(&v).contains("weir.rest.allowed-hosts"), "{v}");
    }
    // What the cluster answers to: its addresses, localhost, a name it allows, no Host at all
    // (HTTP/1.0 clients; browsers always send one).
    for name in [rest.clone(), format!("localhost:{port}"), format!("WEIR.example.com:{port}"), format!("[::1]:{port}")]
    {
        let (status, v) = raw(&rest, "GET", "/overview", &[("Host", &name)], b"");
        assert_eq!(status, 200, "{name}: {v}");
    }
    assert_eq!(raw(&rest, "GET", "/overview", &[], b"").0, 200);
    // An upload a form or a script could send cross-site without asking first is refused.
    for content_type in ["text/plain", "multipart/form-data; boundary=x", "application/x-www-form-urlencoded"] {
        let headers = [("Host", rest.as_str()), ("Content-Type", content_type)];
        let (status, v) = raw(&rest, "POST", "/artifacts/upload", &headers, b"0123");
        assert_eq!(status, 415, "{content_type}: {v}");
        assert!(error_of(&v).contains("application/octet-stream"), "{v}");
    }
    Ok(())
}

/// Counts the lines of the cached file `input` (registered from `path`).
fn lines_of(env: &mut StreamEnv, path: String) -> weir::Result<()> {
    env.register_cached_file(&path, "input");
    env.from_sequence(0, 0).map(|i| i).discard();
    Ok(())
}
static LINES: Job<String> = Job::new("guard-lines", lines_of);

/// `POST /jobs` of `LINES` naming `path` as its cached file.
fn submit_lines(rest: &str, path: &str) -> (u16, Value) {
    let registry = Registry::new().register(&LINES);
    let mut graph = weir::Driver::local(registry)
        .job_graph("guard-lines", &Value::String(path.into()))
        .unwrap_or_else(|e| panic!("cannot build the graph: {e}"));
    graph.artifact = weir_core::ArtifactDigest::current().unwrap_or_else(|e| panic!("{e}"));
    http("POST", rest, "/jobs", Some(&serde_json::json!({ "graph": graph }).to_string()))
}

#[test]
fn cached_files_come_only_from_the_directories_the_cluster_allows() -> weir::Result<()> {
    let io = |e: std::io::Error| weir::Error::internal(e.to_string());
    let allowed = tempfile::tempdir().map_err(io)?;
    let outside = tempfile::tempdir().map_err(io)?;
    let inside_file = allowed.path().join("lookup.txt");
    let secret = outside.path().join("secret.txt");
    std::fs::write(&inside_file, "a\nb\n").map_err(io)?;
    std::fs::write(&secret, "not for you\n").map_err(io)?;
    let link = allowed.path().join("link.txt");
    std::os::unix::fs::symlink(&secret, &link).map_err(io)?;

    // By default a REST submission may name no cached file at all.
    let cluster = MiniCluster::start(Registry::new().register(&LINES), 0, 1)?;
    let (status, v) = submit_lines(&cluster.rest_address(), &inside_file.display().to_string());
    assert_eq!(status, 400, "{v}");
    assert!(error_of(&v).contains("weir.cached-files.allowed-dirs: none"), "{v}");
    drop(cluster);

    let dir = allowed.path().display().to_string();
    let settings = [("weir.cached-files.allowed-dirs", dir.as_str())];
    let cluster = MiniCluster::with_settings(Registry::new().register(&LINES), 0, 1, &settings)?;
    let rest = cluster.rest_address();
    let (status, v) = submit_lines(&rest, &inside_file.display().to_string());
    assert_eq!(status, 202, "a file in an allowed directory: {v}");
    // Neither a way out through `..` nor a link to a file elsewhere gets the secret.
    let escape = format!("{dir}/../{}/secret.txt", outside.path().file_name().and_then(|n| n.to_str()).unwrap_or(""));
    for path in [escape, link.display().to_string(), secret.display().to_string()] {
        let (status, v) = submit_lines(&rest, &path);
        assert_eq!(status, 400, "{path}: {v}");
        assert!(error_of(&v).contains("outside the directories"), "{path}: {v}");
    }
    Ok(())
}
