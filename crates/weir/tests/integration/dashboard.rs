//! weir's web dashboard in a real browser: headless Chromium (Debian's package) loads every page
//! from a cluster running a job that checkpoints, the test reads the DOM the page's script built,
//! and the page's own count of failed REST calls must be 0.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::cluster::{Cluster, text};

/// The DOM of `url` after its script ran (up to 8 s of the page's time), as text with the tags.
fn dom(url: &str, profile: &std::path::Path) -> String {
    let out = Command::new("timeout")
        .args(["90", "chromium", "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(["--virtual-time-budget=8000", "--dump-dom", url])
        .output()
        .unwrap_or_else(|e| panic!("chromium (Debian's package; scripts/test.sh installs it): {e}"));
    assert!(out.status.success(), "chromium failed on {url}: {}", text(&out.stderr));
    text(&out.stdout)
}

fn failed_calls(page: &str) -> u32 {
    page.split("data-count=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(u32::MAX)
}

#[test]
fn every_dashboard_page_renders_the_running_job_without_a_failed_rest_call() {
    let c = Cluster::new(2, 2);
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let id = c.generate_checkpointed(r#"{"rate": 2000}"#, "2", "300ms", dir.path());
    // Running, with checkpoints to show.
    let deadline = Instant::now() + Duration::from_secs(30);
    while c.get(&format!("/jobs/{id}/checkpoints")).1["counts"]["completed"].as_u64().unwrap_or(0) < 2 {
        assert!(Instant::now() < deadline, "no checkpoint completed in 30 s");
        std::thread::sleep(Duration::from_millis(200));
    }
    // Flink's checkpoint configuration and details paths, which Flink's dashboard reads too.
    let (status, config) = c.get(&format!("/jobs/{id}/checkpoints/config"));
    assert!(status == 200 && config["mode"] == "exactly_once" && config["interval"] == 300, "{config}");
    let (_, cps) = c.get(&format!("/jobs/{id}/checkpoints"));
    let first = cps["history"][0]["id"].as_u64().unwrap_or(0);
    let (status, detail) = c.get(&format!("/jobs/{id}/checkpoints/details/{first}"));
    assert!(status == 200 && detail["id"] == first && detail["status"].is_string(), "{detail}");
    assert_eq!(c.get(&format!("/jobs/{id}/checkpoints/details/999999")).0, 404);
    let profile = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let base = format!("http://{}/", c.rest);
    let pages = [
        ("#/overview", vec!["id=\"tm-count\">2<", "generate", "RUNNING", "records/s"]),
        (
            &format!("#/jobs/{id}") as &str,
            vec![
                "data-vertex=\"0\"",
                "data-vertex=\"2\"",
                "Sum -&gt; Sink: Discard",
                "records/s out",
                "HASH",
                "COMPLETED",
                "<svg",
            ],
        ),
        ("#/jobs", vec!["generate", "RUNNING"]),
        ("#/taskmanagers", vec!["MiB", "last heartbeat"]),
        ("#/jobmanager", vec!["Configuration", "running jobs", "MiB"]),
        ("#/applications", vec!["<table>"]),
    ];
    for (route, wanted) in &pages {
        let page = dom(&format!("{base}{route}"), profile.path());
        assert_eq!(failed_calls(&page), 0, "{route}: a REST call failed: {page}");
        for w in wanted {
            assert!(page.contains(w), "{route} lacks {w}: {page}");
        }
    }
    let tms = c.get("/taskmanagers").1;
    let page = dom(&format!("{base}#/taskmanagers"), profile.path());
    for tm in tms["taskmanagers"].as_array().into_iter().flatten() {
        let tm = tm["id"].as_str().unwrap_or("?");
        assert!(page.contains(tm), "{tm} is not listed: {page}");
    }
    // The check can fail: a job the cluster does not know makes the page count its 404.
    let page = dom(&format!("{base}#/jobs/{}", "0".repeat(32)), profile.path());
    assert!(failed_calls(&page) >= 1, "an unknown job's 404 was not counted: {page}");
    let _ = c.weir(&["cancel", &id]);
    c.wait_end(&id, Duration::from_secs(30));
}
