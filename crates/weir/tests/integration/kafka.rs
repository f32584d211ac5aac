//! Kafka end to end on process clusters: the built-in `kafka-wordcount` job reading lines from a
//! topic and writing running counts to another, exactly-once, through kill -9 of TaskManagers, a
//! broker that goes away and comes back, and a restore from a savepoint at another parallelism.
//!
//! The broker is noida-db (a Kafka-protocol reimplementation with transactions; Apache Kafka
//! cannot be installed here) and the output is read by an independent `read_committed` consumer
//! (confluent-kafka): see `weir_kafka::testing`.
//!
//! The kill test also counts words per 1 s event-time window (the lines' Kafka timestamps) and
//! writes them as files to S3 (s3s-fs on loopback): the committed files hold every window once.
//!
//! What a failure-free run writes is known from the input alone: for every word seen `n` times,
//! the records `word 1` ... `word n`, once each. Exactly-once output is exactly that multiset: a
//! lost record leaves a count out, a repeated one shows a count twice.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use weir_kafka::testing::Broker;

use crate::cluster::{Cluster, RESTART, job_id, text};

/// `n` lines of words from a vocabulary of 40, starting at line `from`.
fn lines(from: usize, n: usize) -> Vec<String> {
    (from..from + n).map(|i| format!("w{} w{} w{}", i % 40, (i * 7 + 3) % 40, (i * 13 + 5) % 40)).collect()
}

/// What a failure-free run writes for `input`, as a sorted multiset of `word count` records.
fn expected(input: &[String]) -> Vec<String> {
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    let mut out = Vec::new();
    for line in input {
        for w in weir::builtin::words(line) {
            let c = counts.entry(w.clone()).or_default();
            *c += 1;
            out.push(format!("{w} {c}"));
        }
    }
    out.sort();
    out
}

/// The committed output, sorted, once it holds `want` records (or after `limit`).
fn output(b: &Broker, topic: &str, want: usize, limit: Duration) -> Vec<String> {
    let start = Instant::now();
    loop {
        let mut got: Vec<String> =
            b.consume(topic, None, Duration::from_millis(800)).into_iter().filter_map(|s| s.value).collect();
        got.sort();
        if got.len() >= want || start.elapsed() > limit {
            return got;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn args(b: &Broker, input: &str, out: &str, bounded: bool) -> String {
    serde_json::json!({
        "brokers": b.address(), "input_topic": input, "output_topic": out, "exactly_once": true,
        "bounded": bounded, "transactional_id_prefix": format!("it-{out}"),
    })
    .to_string()
}

/// Submits `kafka-wordcount` detached with JSON `args` at parallelism `p`, checkpointing every
/// 300 ms, with `extra` settings; the job's id.
fn submit(c: &Cluster, args: &str, p: &str, extra: &[&str]) -> String {
    let mut cmd = vec!["run", "-t", "remote", "-d", "kafka-wordcount", "--args", args, "-p", p];
    cmd.extend(["-D", "execution.checkpointing.interval=300ms"]);
    cmd.extend(extra);
    let out = c.weir(&cmd);
    let id = job_id(&out);
    assert!(!id.is_empty(), "{}", text(&out.stderr));
    id
}

/// Asserts that `topic` comes to hold exactly `want` (within `limit`), and still does a second
/// later: every transaction committed, none twice.
fn assert_exactly(b: &Broker, topic: &str, want: &[String], limit: Duration, job: (&Cluster, &str)) {
    let got = output(b, topic, want.len(), limit);
    assert!(got == want, "{}; {}", diff(&got, want), job_report(job.0, job.1));
    std::thread::sleep(Duration::from_secs(1));
    let later = output(b, topic, want.len(), Duration::ZERO);
    assert!(later == want, "a second later: {}", diff(&later, want));
}

/// What the cluster says of job `id`: its state, checkpoint counts and exceptions (for failures).
fn job_report(c: &Cluster, id: &str) -> String {
    let (_, job) = c.get(&format!("/jobs/{id}"));
    let (_, cps) = c.get(&format!("/jobs/{id}/checkpoints"));
    let (_, ex) = c.get(&format!("/jobs/{id}/exceptions"));
    format!("job {}: {}; checkpoints {}; exceptions {}", id, job["state"], cps["counts"], ex["all-exceptions"])
}

/// The TaskManagers running job `id`.
fn placed(c: &Cluster, id: &str) -> Vec<String> {
    let (_, job) = c.get(&format!("/jobs/{id}"));
    job["weir-taskmanagers"]
        .as_array()
        .map(|a| a.iter().filter_map(|t| t.as_str().map(String::from)).collect())
        .unwrap_or_default()
}

fn wait_running(c: &Cluster, id: &str) {
    c.wait_for(|j| j["state"] == "RUNNING" && j["tasks"]["running"] == j["tasks"]["total"], &format!("/jobs/{id}"));
}

fn diff(got: &[String], want: &[String]) -> String {
    let (mut g, mut w) = (got.to_vec(), want.to_vec());
    g.retain(|x| !want.contains(x));
    w.retain(|x| !got.contains(x));
    let dup = got.windows(2).filter(|p| p[0] == p[1]).count();
    format!(
        "{} records, {} expected; unexpected {:?}; missing {:?}; {dup} repeated",
        got.len(),
        want.len(),
        &g[..g.len().min(10)],
        &w[..w.len().min(10)]
    )
}

/// Event time of input line `i` in the kill test: 2 ms apart from `base`.
fn event_time(base: i64, i: usize) -> i64 {
    base + 2 * i as i64
}

/// The `word window_start count` lines that 1 s event-time windows over `input` (line `i` at
/// [`event_time`]) hold, sorted.
fn expected_windows(input: &[String], base: i64) -> Vec<String> {
    let mut counts: BTreeMap<(String, i64), u64> = BTreeMap::new();
    for (i, line) in input.iter().enumerate() {
        let t = event_time(base, i);
        for w in weir::builtin::words(line) {
            *counts.entry((w, t - t.rem_euclid(1000))).or_default() += 1;
        }
    }
    let mut out: Vec<String> = counts.into_iter().map(|((w, start), c)| format!("{w} {start} {c}")).collect();
    out.sort();
    out
}

/// The lines of every part file a reader of `prefix` sees, sorted; hidden or partial files would
/// show as lines that are not counts.
fn committed_lines(s3: &weir_files::testing::S3Server, prefix: &str) -> Vec<String> {
    let listed = s3.list(prefix).unwrap_or_else(|e| panic!("cannot list the bucket: {e}"));
    let mut out = Vec::new();
    for (key, _) in listed {
        let name = key.rsplit('/').next().unwrap_or_default();
        assert!(name.starts_with("part-"), "not a part file: {key}");
        let text = String::from_utf8(s3.get(&key)).unwrap_or_else(|e| panic!("{key}: {e}"));
        assert!(text.ends_with('\n'), "{key} ends in the middle of a line");
        out.extend(text.lines().map(String::from));
    }
    out.sort();
    out
}

#[test]
fn kafka_in_keyed_counts_and_windows_kafka_and_s3_files_out_exactly_once_through_two_kill_9s() {
    let b = Broker::start();
    b.create_topic("lines", 3);
    b.create_topic("counts", 2);
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let s3 = weir_files::testing::S3Server::start(weir_files::testing::Kind::S3sFs, &dir.path().join("s3"), "lake");
    let mut c = Cluster::with_env(s3.env(), &RESTART, 4, 1);
    let mut a: serde_json::Value = serde_json::from_str(&args(&b, "lines", "counts", false)).unwrap_or_default();
    a["files"] = "s3://lake/windows".into();
    a["window_ms"] = 1000.into();
    let id = submit(&c, &a.to_string(), "2", &[]);
    wait_running(&c, &id);
    // Lines go in all along (about 1500 a second, for about 5 s), so that each kill lands while
    // records flow: what came after the last checkpoint is replayed, and must not show twice.
    // Their event times are fixed (2 ms apart), so the windows' contents are known; three last
    // lines an hour later, one per partition, move every partition's watermark past them all.
    let base = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default();
    let windowed = lines(0, 7500);
    let mut input = windowed.clone();
    input.extend(["end"; 3].map(String::from));
    let feed = windowed.clone();
    let mut feeder = b.feeder("lines", 3);
    let fed = std::thread::spawn(move || {
        for (n, chunk) in feed.chunks(15).enumerate() {
            for (k, line) in chunk.iter().enumerate() {
                let i = n * 15 + k;
                feeder.send_at(line, (i % 3) as i32, event_time(base, i));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        for p in 0..3 {
            feeder.send_at("end", p, base + 3_600_000);
        }
        feeder.flush();
    });
    for _ in 0..2 {
        std::thread::sleep(Duration::from_millis(1500));
        wait_running(&c, &id);
        let victim = placed(&c, &id).into_iter().next().unwrap_or_else(|| panic!("job {id} runs nowhere"));
        c.kill_taskmanager(&victim);
    }
    assert!(fed.join().is_ok(), "the feeder failed");
    assert_exactly(&b, "counts", &expected(&input), Duration::from_secs(90), (&c, &id));
    // The windows' files: committed with the checkpoints after the watermark passed them.
    let want = expected_windows(&windowed, base);
    let start = Instant::now();
    let mut got = committed_lines(&s3, "windows");
    while got != want && start.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(300));
        got = committed_lines(&s3, "windows");
    }
    assert!(got == want, "window files: {}; {}", diff(&got, &want), job_report(&c, &id));
    std::thread::sleep(Duration::from_secs(1));
    let later = committed_lines(&s3, "windows");
    assert!(later == want, "window files a second later: {}", diff(&later, &want));
    let (_, ex) = c.get(&format!("/jobs/{id}/exceptions"));
    let losses = ex["exceptionHistory"]["entries"].as_array().map(|a| a.len()).unwrap_or(0);
    assert!(losses >= 2, "two failures were recovered from: {ex}");
    let _ = c.weir(&["cancel", &id]);
}

#[test]
fn the_kafka_source_rescales_from_a_savepoint() {
    let b = Broker::start();
    b.create_topic("rs-lines", 4);
    b.create_topic("rs-counts", 2);
    let c = Cluster::with(&RESTART, 2, 3);
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let first = lines(0, 500);
    b.produce("rs-lines", 4, &first);
    let id = submit(&c, &args(&b, "rs-lines", "rs-counts", false), "3", &[]);
    let want = expected(&first);
    let got = output(&b, "rs-counts", want.len(), Duration::from_secs(60));
    assert!(got == want, "{}; {}", diff(&got, &want), job_report(&c, &id));
    let sp = dir.path().display().to_string();
    let stop = c.weir(&["stop", "-p", &sp, &id]);
    assert!(stop.status.success(), "{}", text(&stop.stderr));
    let savepoint = text(&stop.stdout)
        .lines()
        .find_map(|l| l.split_whitespace().find(|w| w.contains(&sp)).map(String::from))
        .unwrap_or_else(|| panic!("no savepoint path in {}", text(&stop.stdout)));
    let savepoint = savepoint.trim_end_matches('.').to_string();
    // More input while the job is stopped; the job comes back at parallelism 2, bounded: it
    // reads the rest of the topic from where the savepoint was, and ends.
    let second = lines(500, 300);
    b.produce("rs-lines", 4, &second);
    let out = c.weir(&[
        "run",
        "-t",
        "remote",
        "-s",
        &savepoint,
        "kafka-wordcount",
        "--args",
        &args(&b, "rs-lines", "rs-counts", true),
        "-p",
        "2",
        "-D",
        "execution.checkpointing.interval=300ms",
    ]);
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    let all: Vec<String> = first.into_iter().chain(second).collect();
    let want = expected(&all);
    let got = output(&b, "rs-counts", want.len(), Duration::from_secs(30));
    assert!(got == want, "{}; {}", diff(&got, &want), text(&out.stderr));
}

#[test]
fn a_broker_that_goes_away_and_comes_back_loses_nothing() {
    let mut b = Broker::start();
    b.create_topic("bb-lines", 2);
    b.create_topic("bb-counts", 1);
    let restart = [
        "-D",
        "restart-strategy.type=fixed-delay",
        "-D",
        "restart-strategy.fixed-delay.attempts=100",
        "-D",
        "restart-strategy.fixed-delay.delay=300ms",
    ];
    let c = Cluster::with(&restart, 1, 2);
    let id = submit(&c, &args(&b, "bb-lines", "bb-counts", false), "1", &["-D", "execution.checkpointing.timeout=5s"]);
    let first = lines(0, 300);
    b.produce("bb-lines", 2, &first);
    let want = expected(&first);
    let got = output(&b, "bb-counts", want.len(), Duration::from_secs(60));
    assert!(got == want, "{}; {}", diff(&got, &want), job_report(&c, &id));
    b.kill();
    std::thread::sleep(Duration::from_secs(3));
    b.restart();
    let second = lines(300, 300);
    b.produce("bb-lines", 2, &second);
    let all: Vec<String> = first.into_iter().chain(second).collect();
    assert_exactly(&b, "bb-counts", &expected(&all), Duration::from_secs(120), (&c, &id));
    assert_eq!(c.job_state(&id), "RUNNING");
    let _ = c.weir(&["cancel", &id]);
}

#[test]
fn kafka_to_parquet_archives_a_topic_on_s3_in_hourly_buckets() {
    let b = Broker::start();
    b.create_topic("events", 2);
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let s3 = weir_files::testing::S3Server::start(weir_files::testing::Kind::S3sFs, &dir.path().join("s3"), "lake");
    let c = Cluster::with_env(s3.env(), &RESTART, 1, 2);
    // Three hours of events, 30 s apart, alternating partitions, without keys.
    let base = 1_796_688_000_000; // 2026-12-08T00:00:00Z
    let mut feeder = b.feeder("events", 2);
    let mut want = Vec::new();
    for i in 0..360usize {
        let (p, ts) = ((i % 2) as i32, base + 30_000 * i as i64);
        let value = format!("{{\"n\": {i}, \"text\": \"é{i}\"}}");
        feeder.send_at(&value, p, ts);
        want.push((p, ts, value));
    }
    feeder.flush();
    let args = serde_json::json!({
        "brokers": b.address(), "topic": "events", "path": "s3://lake/archive", "bounded": true,
    });
    let out = c.weir(&[
        "run",
        "-t",
        "remote",
        "kafka-to-parquet",
        "--args",
        &args.to_string(),
        "-p",
        "2",
        "-D",
        "execution.checkpointing.interval=200ms",
    ]);
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    let listed = s3.list("archive").unwrap_or_else(|e| panic!("cannot list the bucket: {e}"));
    let mut got = Vec::new();
    for (key, _) in &listed {
        assert!(key.ends_with(".parquet"), "{key}");
        let rows: Vec<weir::builtin::ArchivedRecord> = weir_files::testing::read_parquet(key, s3.get(key));
        for r in rows {
            let ts = r.timestamp.unwrap_or_else(|| panic!("{key}: a row without its timestamp"));
            let hour = (ts - base) / 3_600_000;
            assert!(
                key.starts_with(&format!("archive/2026-12-08--0{hour}/part-")),
                "{key} holds a record of hour {hour}"
            );
            assert_eq!(r.topic, "events");
            assert_eq!(r.key, None);
            got.push((r.partition, r.offset, ts, r.value.unwrap_or_default()));
        }
    }
    got.sort();
    let mut offsets = [0i64; 2];
    let mut want: Vec<(i32, i64, i64, String)> = want
        .into_iter()
        .map(|(p, ts, v)| {
            let o = offsets[p as usize];
            offsets[p as usize] += 1;
            (p, o, ts, v)
        })
        .collect();
    want.sort();
    assert_eq!(got, want, "every record once, with its partition, offset, timestamp and value");
    assert!(listed.iter().map(|(k, _)| k.split('/').nth(1)).collect::<std::collections::BTreeSet<_>>().len() == 3);
}
