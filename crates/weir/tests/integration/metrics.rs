//! Metrics end to end: a JobManager and two TaskManagers (their jobs in worker processes) serve
//! Flink-named metrics on a Prometheus port range; a real Prometheus server (Debian's package,
//! started here on loopback) scrapes them, and PromQL through its HTTP API gives the job's rate.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::cluster::{Cluster, Proc, job_id, text};

/// `GET path` from `address`: the status and the body as text.
fn get_text(address: &str, path: &str) -> (u16, String) {
    let Ok(mut s) = std::net::TcpStream::connect(address) else { return (0, String::new()) };
    let _ = s.set_read_timeout(Some(Duration::from_secs(20)));
    let _ = write!(s, "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    let mut response = String::new();
    let _ = s.read_to_string(&mut response);
    let status = response.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, response.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port: {e}"))
}

/// A range of ports below the ephemeral range, different for each test process.
fn port_range() -> (u16, u16) {
    let base = 20_000 + (std::process::id() % 600) as u16 * 16;
    (base, base + 15)
}

/// The value of the first series a PromQL query returns.
fn promql(prometheus: &str, query: &str) -> Option<f64> {
    let encoded: String = query
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'.' | b'-' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    let (status, body) = get_text(prometheus, &format!("/api/v1/query?query={encoded}"));
    let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    if status != 200 {
        return None;
    }
    v["data"]["result"][0]["value"][1].as_str().and_then(|s| s.parse().ok())
}

#[test]
fn prometheus_scrapes_the_cluster_and_promql_gives_the_jobs_record_rate() {
    let (lo, hi) = port_range();
    let range = format!("metrics.reporter.prom.port={lo}-{hi}");
    let flags = [
        "-D",
        "metrics.reporter.prom.factory.class=org.apache.flink.metrics.prometheus.PrometheusReporterFactory",
        "-D",
        &range,
    ];
    let mut c = Cluster::with(&flags, 0, 1);
    c.add_taskmanager_with(1, &flags);
    c.add_taskmanager_with(1, &flags);
    c.wait_for(|o| o["taskmanagers"].as_u64() == Some(2), "/overview");
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    // About 30 s of records at a bounded rate, over both TaskManagers.
    let args =
        format!(r#"{{"count": 600000, "keys": 17, "rate": 20000, "output": "{}"}}"#, dir.path().join("out").display());
    let submitted = c.weir(&["run", "-t", "remote", "-d", "keyed-sums", "--args", &args, "-p", "2"]);
    let id = job_id(&submitted);
    assert!(!id.is_empty(), "{}", text(&submitted.stderr));

    // Every process took a port of the range; the TaskManagers report the job's operators, which
    // run in worker processes.
    let mut served = Vec::new();
    for port in lo..=hi {
        let (status, body) = get_text(&format!("127.0.0.1:{port}"), "/metrics");
        if status == 200 && body.contains("flink_") {
            served.push((port, body));
        }
    }
    let roles = |needle: &str| served.iter().filter(|(_, b)| b.contains(needle)).count();
    assert_eq!(
        roles("flink_jobmanager_numRegisteredTaskManagers"),
        1,
        "one JobManager: {:?}",
        served.iter().map(|s| s.0).collect::<Vec<_>>()
    );
    assert_eq!(roles("flink_taskmanager_Status_Process_CPU_Time"), 2, "two TaskManagers");

    // promtool reads every page without a parse error (exit 3 is lint advice only).
    for (port, body) in &served {
        let mut check = Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("promtool (Debian's prometheus package): {e}"));
        if let Some(mut stdin) = check.stdin.take() {
            let _ = stdin.write_all(body.as_bytes());
        }
        let out = check.wait_with_output().unwrap_or_else(|e| panic!("promtool: {e}"));
        let code = out.status.code().unwrap_or(-1);
        assert!(
            code == 0 || code == 3,
            "promtool finds errors on port {port} (exit {code}): {}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
    }

    // A real Prometheus scrapes the whole range every second.
    let work = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let targets: Vec<String> = (lo..=hi).map(|p| format!("'127.0.0.1:{p}'")).collect();
    let config = work.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: weir\n    static_configs:\n      - targets: [{}]\n",
            targets.join(", ")
        ),
    )
    .unwrap_or_else(|e| panic!("write {}: {e}", config.display()));
    let web = format!("127.0.0.1:{}", free_port());
    let _prometheus = Proc::from(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", work.path().join("data").display()))
            .arg(format!("--web.listen-address={web}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(work.path().join("prometheus.log")).map(Stdio::from).unwrap_or(Stdio::null()))
            .spawn()
            .unwrap_or_else(|e| panic!("prometheus (Debian's package): {e}")),
    );
    let job = format!("job_id=\"{id}\"");
    let queries = [
        format!("sum(rate(flink_taskmanager_job_task_operator_numRecordsIn{{{job}}}[5s]))"),
        format!("sum(flink_taskmanager_job_task_operator_numRecordsInPerSecond{{{job}}})"),
        format!("max(flink_jobmanager_job_uptime{{{job}}})"),
        "max(flink_jobmanager_numRegisteredTaskManagers)".to_string(),
        format!("count(count by (tm_id) (flink_taskmanager_job_task_numRecordsOut{{{job}}}))"),
    ];
    let deadline = Instant::now() + Duration::from_secs(60);
    let last = loop {
        let last: Vec<Option<f64>> = queries.iter().map(|q| promql(&web, q)).collect();
        let ok = last[0].is_some_and(|r| r > 1000.0)
            && last[1].is_some_and(|r| r > 1000.0)
            && last[2].is_some_and(|u| u > 0.0)
            && last[3] == Some(2.0)
            && last[4] == Some(2.0);
        if ok || Instant::now() > deadline {
            break last;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let log = std::fs::read_to_string(work.path().join("prometheus.log")).unwrap_or_default();
    let shown: Vec<String> = queries.iter().zip(&last).map(|(q, v)| format!("{q} = {v:?}")).collect();
    // The generator emits 20 000 records a second; both keyed-sum subtasks take them in.
    assert!(last[0].is_some_and(|r| r > 1000.0 && r < 100_000.0), "{shown:#?}\n{log}");
    assert!(last[1].is_some_and(|r| r > 1000.0 && r < 100_000.0), "{shown:#?}");
    assert!(last[2].is_some_and(|u| u > 0.0), "{shown:#?}");
    assert_eq!(last[3], Some(2.0), "{shown:#?}");
    assert_eq!(last[4], Some(2.0), "both TaskManagers report the job's tasks: {shown:#?}");

    // The same figures through Flink's REST metric paths.
    let value = |path: &str| -> Vec<(String, f64)> {
        let (status, v) = c.get(path);
        assert_eq!(status, 200, "{path}: {v}");
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|m| Some((m["id"].as_str()?.to_string(), m["value"].as_str()?.parse().ok()?)))
                    .collect()
            })
            .unwrap_or_default()
    };
    let one = |path: &str| value(path).first().map(|(_, v)| *v);
    assert_eq!(one("/jobmanager/metrics?get=numRegisteredTaskManagers"), Some(2.0));
    assert_eq!(one("/jobmanager/metrics?get=taskSlotsTotal"), Some(2.0));
    let (_, ids) = c.get("/jobmanager/metrics");
    assert!(ids.as_array().is_some_and(|a| a.iter().any(|m| m["id"] == "Status.Process.CPU.Load")), "{ids}");
    assert_eq!(one(&format!("/jobs/{id}/metrics?get=numRestarts")), Some(0.0));
    assert!(one(&format!("/jobs/{id}/metrics?get=uptime")).is_some_and(|u| u > 0.0));
    let (_, job) = c.get(&format!("/jobs/{id}"));
    let vertices: Vec<(String, String, u64)> = job["vertices"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|v| {
                    let id = v["id"].as_str().unwrap_or("").to_string();
                    (id, v["name"].as_str().unwrap_or("").to_string(), v["parallelism"].as_u64().unwrap_or(0))
                })
                .collect()
        })
        .unwrap_or_default();
    assert!(vertices.len() >= 2, "{job}");
    // Every vertex reports each of its subtasks; the last one (the sink) takes records in.
    for (vid, name, parallelism) in &vertices {
        let (_, listed) = c.get(&format!("/jobs/{id}/vertices/{vid}/metrics"));
        let ids: Vec<&str> =
            listed.as_array().map(|a| a.iter().filter_map(|m| m["id"].as_str()).collect()).unwrap_or_default();
        let last = parallelism - 1;
        for want in [
            "0.numRecordsIn".into(),
            format!("{last}.numRecordsOut"),
            "0.busyTimeMsPerSecond".into(),
            format!("{last}.idleTimeMsPerSecond"),
        ] {
            assert!(ids.contains(&want.as_str()), "vertex {vid} ({name}) lacks {want}: {ids:?}");
        }
        assert!(ids.contains(&format!("0.{name}.numRecordsIn").as_str()), "{ids:?}");
        let marks = c.get(&format!("/jobs/{id}/vertices/{vid}/watermarks")).1;
        assert_eq!(marks.as_array().map(Vec::len), Some(*parallelism as usize), "{marks}");
    }
    let (sink, _, _) = &vertices[vertices.len() - 1];
    let per = value(&format!("/jobs/{id}/vertices/{sink}/metrics?get=0.numRecordsIn,1.numRecordsIn"));
    assert!(per.len() == 2 && per.iter().all(|(_, v)| *v > 0.0), "{per:?}");
    let (_, agg) = c.get(&format!("/jobs/{id}/vertices/{sink}/subtasks/metrics?get=numRecordsIn&agg=sum,max"));
    let (sum, max) = (agg[0]["sum"].as_f64().unwrap_or(0.0), agg[0]["max"].as_f64().unwrap_or(0.0));
    assert!(sum >= max && max > 0.0 && agg[0].get("min").is_none(), "{agg}");
    let (status, bad) = c.get(&format!("/jobs/{id}/vertices/{sink}/subtasks/metrics?get=numRecordsIn&agg=median"));
    assert!(status == 400 && bad.to_string().contains("not one of min, max, avg, sum, skew"), "{bad}");
    assert_eq!(c.get(&format!("/jobs/{id}/vertices/999/metrics")).0, 404);
    let tm = c.get("/taskmanagers").1["taskmanagers"][0]["id"].as_str().unwrap_or("").to_string();
    let rss = one(&format!("/taskmanagers/{tm}/metrics?get=Status.Process.Memory.Resident"));
    assert!(rss.is_some_and(|r| r > 1e6), "{rss:?}");
    let (_, threads) = c.get("/taskmanagers/metrics?get=Status.Process.Threads.Count&agg=sum");
    assert!(threads[0]["sum"].as_f64().is_some_and(|t| t >= 2.0), "{threads}");
    let (_, restarts) = c.get(&format!("/jobs/metrics?get=numRestarts&agg=max&jobs={id}"));
    assert_eq!(restarts[0]["max"].as_f64(), Some(0.0), "{restarts}");

    let _ = c.weir(&["cancel", &id]);
    c.wait_end(&id, Duration::from_secs(30));
}
