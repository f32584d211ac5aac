//! A cluster of real processes secured as a production one is: mutual TLS on every internal
//! connection, the cluster secret proven on top, HTTPS with client certificates on REST. Jobs run
//! across TaskManagers through it; strangers (no certificate, another authority's certificate, no
//! secret, plain HTTP) get nothing, and each is told what to fix.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use weir::remote::RestClient;
use weir_core::config::ClusterConfig;
use weir_security::testing::Certificates;

use crate::cluster::{Proc, bundled, field, job_id, start_program, text};

const WEIR: &str = env!("CARGO_BIN_EXE_weir");

struct Secured {
    dir: tempfile::TempDir,
    certs: Certificates,
    secret: String,
    jobmanager: Proc,
    taskmanagers: Vec<Proc>,
    rest: String,
    rpc_port: String,
}

/// The `-D` settings every process of the secured cluster gets (and its clients).
fn settings(certs: &Certificates, secret: &str) -> Vec<String> {
    let (signed, ca) = (certs.signed.display().to_string(), certs.ca.display().to_string());
    [
        "security.ssl.internal.enabled=true".to_string(),
        format!("security.ssl.internal.keystore={signed}"),
        format!("security.ssl.internal.truststore={ca}"),
        "security.ssl.rest.enabled=true".to_string(),
        format!("security.ssl.rest.keystore={signed}"),
        format!("security.ssl.rest.truststore={ca}"),
        "security.ssl.rest.authentication-enabled=true".to_string(),
        format!("weir.security.cluster-secret-file={secret}"),
        // A Flink file's password lines load (and are unused: PEM has none).
        "security.ssl.internal.keystore-password=changeit".to_string(),
    ]
    .into_iter()
    .flat_map(|s| ["-D".to_string(), s])
    .collect()
}

fn refs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

impl Secured {
    fn start(taskmanagers: usize) -> Secured {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let certs = Certificates::generate(dir.path()).unwrap_or_else(|e| panic!("certificates: {e}"));
        let secret = dir.path().join("cluster.secret");
        weir_security::write_secret_file(&secret).unwrap_or_else(|e| panic!("secret: {e}"));
        let secret = secret.display().to_string();
        let mut args: Vec<String> =
            ["jobmanager", "-D", "rest.port=0", "-D", "jobmanager.rpc.port=0"].into_iter().map(String::from).collect();
        args.extend(settings(&certs, &secret));
        args.extend(["-D".into(), format!("blob.storage.directory={}", dir.path().join("jm").display())]);
        let (jobmanager, line) = start_program(WEIR.as_ref(), &refs(&args), dir.path(), &[]);
        let rest = field(&line, "rest=https://").to_string();
        assert!(!rest.is_empty(), "the JobManager announces an https endpoint: {line}");
        let rpc_port = field(&line, "rpc=").rsplit(':').next().unwrap_or_default().to_string();
        let mut c = Secured { dir, certs, secret, jobmanager, taskmanagers: Vec::new(), rest, rpc_port };
        for i in 0..taskmanagers {
            let tm = c.taskmanager(&settings(&c.certs, &c.secret), i, false).unwrap_or_else(|e| panic!("{e}"));
            c.taskmanagers.push(tm);
        }
        c
    }

    /// Starts a TaskManager with `security` settings; a `stranger` must fail (bounded, not
    /// register): `Err` with its output.
    fn taskmanager(&self, security: &[String], i: usize, stranger: bool) -> Result<Proc, String> {
        let mut args: Vec<String> =
            vec!["taskmanager".into(), "-D".into(), format!("jobmanager.rpc.port={}", self.rpc_port)];
        args.extend(security.iter().cloned());
        args.extend([
            "-D".into(),
            format!("blob.storage.directory={}", self.dir.path().join(format!("tm{i}")).display()),
        ]);
        if !stranger {
            let (tm, _) = start_program(WEIR.as_ref(), &refs(&args), self.dir.path(), &[]);
            return Ok(tm);
        }
        let out = std::process::Command::new(WEIR)
            .args(&args)
            .env("TMPDIR", self.dir.path())
            .output()
            .map_err(|e| e.to_string())?;
        Err(format!("exit {:?}: {}{}", out.status.code(), text(&out.stdout), text(&out.stderr)))
    }

    fn client(&self) -> RestClient {
        let mut config = ClusterConfig::default();
        let s = settings(&self.certs, &self.secret);
        for pair in s.iter().filter(|s| *s != "-D") {
            let (k, v) = pair.split_once('=').unwrap_or_default();
            config.set(k, v).unwrap_or_else(|e| panic!("{e}"));
        }
        RestClient::secured(&self.rest, &config).unwrap_or_else(|e| panic!("{e}"))
    }

    fn weir(&self, args: &[&str], security: &[String]) -> std::process::Output {
        let mut all: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        all.extend(security.iter().cloned());
        all.extend(["-m".to_string(), self.rest.clone()]);
        std::process::Command::new(WEIR)
            .args(&all)
            .env("TMPDIR", self.dir.path())
            .output()
            .unwrap_or_else(|e| panic!("cannot run weir: {e}"))
    }

    fn taskmanager_count(&self) -> u64 {
        self.client().get("/overview").map(|o| o["taskmanagers"].as_u64().unwrap_or(0)).unwrap_or(0)
    }

    fn wait_taskmanagers(&self, n: u64) {
        let start = std::time::Instant::now();
        while self.taskmanager_count() != n {
            assert!(start.elapsed() < Duration::from_secs(20), "{n} TaskManagers never registered");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[test]
fn a_tls_cluster_runs_jobs_across_taskmanagers_and_refuses_every_stranger() {
    let c = Secured::start(2);
    c.wait_taskmanagers(2);
    let _ = &c.jobmanager;
    let security = settings(&c.certs, &c.secret);

    // A job over both TaskManagers (one slot each): its keyed exchange crosses between them over
    // TLS, its artifact and control messages too; the client submits over HTTPS with its certificate.
    let out = c.weir(&["run", "-t", "remote", "wordcount", "--args", &bundled(), "-p", "2"], &security);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let id = job_id(&out);
    let job = c.client().get(&format!("/jobs/{id}")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(job["state"], "FINISHED", "{job}");
    assert_eq!(job["vertices"][2]["metrics"]["read-records"], 272, "{job}");
    let list = c.weir(&["list"], &security);
    assert!(text(&list.stdout).contains(&format!("{id} : wordcount (FINISHED)")), "{}", text(&list.stderr));

    // Another program's job: uploaded over HTTPS, fetched by both TaskManagers over TLS, run in
    // worker processes that inherit the TLS settings and the secret and exchange records over TLS.
    let mut args: Vec<String> = ["--weir", "run", "-t", "remote", "wordcount", "--args", &bundled(), "-p", "2"]
        .into_iter()
        .map(String::from)
        .collect();
    args.extend(security.iter().cloned());
    args.extend(["-m".to_string(), c.rest.clone()]);
    let out = std::process::Command::new(crate::example("wordcount"))
        .args(&args)
        .env("TMPDIR", c.dir.path())
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("Uploading"), "{}", text(&out.stderr));
    let id = job_id(&out);
    let result = c.client().get(&format!("/jobs/{id}/execution-result")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(result["job-execution-result"]["application-status"], "SUCCEEDED", "{result}");

    // REST: a client without a certificate, one that does not trust the endpoint, plain HTTP.
    let no_cert: Vec<String> = security.iter().filter(|s| !s.contains("authentication-enabled")).cloned().collect();
    let out = c.weir(&["list"], &no_cert);
    assert!(!out.status.success(), "a client without a certificate was answered: {}", text(&out.stdout));
    let stranger_trust: Vec<String> = security
        .iter()
        .map(|s| {
            if s.starts_with("security.ssl.rest.truststore=") {
                format!("security.ssl.rest.truststore={}", c.certs.stranger.display())
            } else {
                s.clone()
            }
        })
        .collect();
    let out = c.weir(&["list"], &stranger_trust);
    assert!(!out.status.success(), "a client trusted an endpoint its truststore did not sign");
    let mut s = std::net::TcpStream::connect(&c.rest).unwrap_or_else(|e| panic!("{e}"));
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    let _ = s.write_all(format!("GET /overview HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n", c.rest).as_bytes());
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    assert!(!text(&answer).contains("taskmanagers"), "plain HTTP got an answer: {}", text(&answer));

    // Internal: a TaskManager without TLS, one with another authority's certificate, one without
    // the secret: none registers, each says what to fix.
    let plain: Vec<String> = vec!["-D".into(), format!("weir.security.cluster-secret-file={}", c.secret)];
    let e = c.taskmanager(&plain, 10, true).err().unwrap_or_default();
    assert!(e.contains("security.ssl.internal") || e.contains("handshake"), "{e}");
    let foreign: Vec<String> = security
        .iter()
        .map(|s| {
            let stranger = c.certs.stranger.display();
            if s.starts_with("security.ssl.internal.keystore=") {
                format!("security.ssl.internal.keystore={stranger}")
            } else if s.starts_with("security.ssl.internal.truststore=") {
                format!("security.ssl.internal.truststore={stranger}")
            } else {
                s.clone()
            }
        })
        .collect();
    let e = c.taskmanager(&foreign, 11, true).err().unwrap_or_default();
    assert!(e.contains("TLS handshake"), "{e}");
    let other_secret = c.dir.path().join("other.secret");
    weir_security::write_secret_file(&other_secret).unwrap_or_else(|e| panic!("{e}"));
    let wrong: Vec<String> = security
        .iter()
        .map(|s| {
            if s.starts_with("weir.security.cluster-secret-file=") {
                format!("weir.security.cluster-secret-file={}", other_secret.display())
            } else {
                s.clone()
            }
        })
        .collect();
    let e = c.taskmanager(&wrong, 12, true).err().unwrap_or_default();
    assert!(e.contains("secret"), "{e}");
    assert_eq!(c.taskmanager_count(), 2, "a stranger registered");

    // A stranger on the RPC port asking for the artifact gets no byte of it: a plain connection
    // does not even get through the TLS handshake.
    let mut s = std::net::TcpStream::connect(format!("127.0.0.1:{}", c.rpc_port)).unwrap_or_else(|e| panic!("{e}"));
    let _ = s.set_read_timeout(Some(Duration::from_secs(15)));
    let _ = s.write_all(b"WSEC\x01\0\0\0WEIR\0\0\0\x0a");
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    assert!(!answer.windows(4).any(|w| w == b"WEIR" || w == b"WSEC"), "the stranger got a weir answer");
}

#[test]
fn a_secret_file_others_can_read_is_refused_with_the_fix() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "a secret long enough to be used").unwrap_or_else(|e| panic!("{e}"));
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap_or_else(|e| panic!("{e}"));
    let out = std::process::Command::new(WEIR)
        .args(["jobmanager", "-D", "rest.port=0", "-D", "jobmanager.rpc.port=0"])
        .args(["-D", &format!("weir.security.cluster-secret-file={}", secret.display())])
        .env("TMPDIR", dir.path())
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains(&format!("chmod 600 {}", secret.display())), "{}", text(&out.stderr));
}
