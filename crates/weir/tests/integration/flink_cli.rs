//! Apache Flink's own CLI, 1.20.3 and 2.3.0 (installed from PyPI by scripts/test.sh), against a
//! weir cluster: `list`, `savepoint`, `stop` and `cancel` work as they do against Flink. (`info`
//! and `run` take a Flink jar: they have no meaning for a weir cluster.)

use std::process::Command;
use std::time::Duration;

use crate::cluster::{Cluster, text};

struct Flink {
    home: std::path::PathBuf,
    conf: tempfile::TempDir,
}

impl Flink {
    fn new(version: &str) -> Flink {
        let home = std::path::PathBuf::from(std::env::var("HOME").unwrap_or_default())
            .join(format!(".cache/weir-tools/flink-{version}"));
        assert!(
            home.join("bin/flink").exists(),
            "Flink {version} is missing from {}: run scripts/test.sh",
            home.display()
        );
        // Flink reads its configuration directory; an empty configuration is enough for a client.
        let conf = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        for f in ["log4j-cli.properties", "logback.xml"] {
            let _ = std::fs::copy(home.join("conf").join(f), conf.path().join(f));
        }
        std::fs::write(conf.path().join("config.yaml"), "{}\n").unwrap_or_else(|e| panic!("config.yaml: {e}"));
        Flink { home, conf }
    }

    /// `flink ARGS`: its exit status and stdout with stderr.
    fn run(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new("timeout")
            .arg("120")
            .arg(self.home.join("bin/flink"))
            .args(args)
            .env("FLINK_CONF_DIR", self.conf.path())
            .env("FLINK_LOG_DIR", self.conf.path())
            .output()
            .unwrap_or_else(|e| panic!("flink: {e}"));
        (out.status.success(), format!("{}{}", text(&out.stdout), text(&out.stderr)))
    }
}

fn submit(c: &Cluster, dir: &std::path::Path) -> String {
    let id = c.generate_checkpointed(r#"{"rate": 1000}"#, "2", "500ms", dir);
    c.wait_for(|j| j["state"] == "RUNNING", &format!("/jobs/{id}"));
    id
}

fn flinks_cli_works_against_weir(version: &str) {
    let flink = Flink::new(version);
    let c = Cluster::new(1, 2);
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let m = c.rest.clone();
    let first = submit(&c, dir.path());

    let (ok, out) = flink.run(&["list", "-m", &m]);
    assert!(ok && out.contains(&format!("{first} : generate (RUNNING)")), "flink {version} list: {out}");

    let sp = dir.path().join("savepoints");
    let (ok, out) = flink.run(&["savepoint", "-m", &m, &first, &sp.display().to_string()]);
    assert!(ok && out.contains("Savepoint completed. Path: "), "flink {version} savepoint: {out}");
    let path = out.split("Path: ").nth(1).and_then(|r| r.split_whitespace().next()).unwrap_or_default();
    assert!(std::path::Path::new(path).join("_metadata").exists() || std::path::Path::new(path).exists(), "{path}");

    let stopped = dir.path().join("stopped");
    let (ok, out) = flink.run(&["stop", "-m", &m, "-p", &stopped.display().to_string(), &first]);
    assert!(ok && out.contains("Savepoint completed."), "flink {version} stop: {out}");
    let done = c.wait_end(&first, Duration::from_secs(30));
    assert_eq!(done["state"], "FINISHED", "{done}");

    let second = submit(&c, dir.path());
    let (ok, out) = flink.run(&["cancel", "-m", &m, &second]);
    assert!(ok && out.contains(&format!("Cancelled job {second}")), "flink {version} cancel: {out}");
    let done = c.wait_end(&second, Duration::from_secs(30));
    assert_eq!(done["state"], "CANCELED", "{done}");

    // Every job, ended ones too.
    let (ok, out) = flink.run(&["list", "-a", "-m", &m]);
    assert!(ok && out.contains(&first) && out.contains(&second), "flink {version} list -a: {out}");
}

#[test]
fn flink_1_20_cli_lists_savepoints_stops_and_cancels_weir_jobs() {
    flinks_cli_works_against_weir("1.20.3");
}

#[test]
fn flink_2_3_cli_lists_savepoints_stops_and_cancels_weir_jobs() {
    flinks_cli_works_against_weir("2.3.0");
}
