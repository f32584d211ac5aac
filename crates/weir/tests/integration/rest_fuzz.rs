//! Schemathesis (PyPI) against the live REST API of a cluster that runs a job: every operation of
//! `/openapi.json`, with generated and boundary inputs, answers without a server error, within
//! 5 s, and the cluster stays up. scripts/test.sh installs schemathesis into
//! `~/.cache/weir-tools/venv`.

use std::process::Command;

use crate::cluster::{Cluster, text};

fn schemathesis() -> std::path::PathBuf {
    if let Some(p) = std::env::var_os("WEIR_SCHEMATHESIS") {
        return p.into();
    }
    let home = std::env::var_os("HOME").map(std::path::PathBuf::from).unwrap_or_default();
    home.join(".cache/weir-tools/venv/bin/schemathesis")
}

#[test]
fn schemathesis_finds_no_server_error_slow_answer_or_crash() {
    let tool = schemathesis();
    assert!(tool.exists(), "{} is missing: run scripts/test.sh, which installs it", tool.display());
    let c = Cluster::new(1, 1);
    // A job that runs (and checkpoints) throughout, so that job paths have something to answer.
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let id = c.generate_checkpointed(r#"{"count": 1000000000, "rate": 1000}"#, "1", "500ms", dir.path());
    let config = dir.path().join("schemathesis.toml");
    std::fs::write(&config, format!("[parameters]\njobid = \"{id}\"\n")).unwrap_or_else(|e| panic!("{e}"));
    let run = Command::new("timeout")
        .arg("600")
        .arg(&tool)
        .arg("--config-file")
        .arg(&config)
        .args(["run", &format!("http://{}/openapi.json", c.rest), "--checks", "not_a_server_error"])
        .args(["--max-response-time", "5", "--request-timeout", "10", "--max-examples", "30"])
        // Shutting the cluster down and cancelling its job are what they should be, not faults.
        .args(["--exclude-name", "DELETE /cluster", "--exclude-name", "PATCH /jobs/{jobid}"])
        .args([
            "--exclude-name",
            "GET /jobs/{jobid}/yarn-cancel",
            "--exclude-name",
            "POST /applications/{appid}/cancel",
        ])
        .current_dir(dir.path())
        .env("NO_COLOR", "1")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", tool.display()));
    let report = text(&run.stdout);
    eprintln!("{report}");
    assert!(run.status.success(), "schemathesis found failures:\n{report}\n{}", text(&run.stderr));
    assert!(report.contains("passed"), "{report}");
    // Still up, and the job still runs.
    let (status, overview) = c.get("/overview");
    assert_eq!(status, 200);
    assert_eq!(overview["taskmanagers"], 1, "{overview}");
    assert_eq!(c.get(&format!("/jobs/{id}")).1["state"], "RUNNING");
}
