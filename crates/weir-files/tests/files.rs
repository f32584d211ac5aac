//! The file sink on the embedded cluster: on a local directory (renames) and on two real S3
//! servers started here on loopback (s3s-fs and SeaweedFS: multipart uploads completed at
//! commit), in text, JSON lines and Parquet, checked by reading back what a reader of the bucket
//! or directory sees. Recovery through kill -9 is tested on process clusters in the `weir` crate
//! (kafka.rs: Kafka in, windows, Kafka and S3 files out).

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use weir_api::{Driver, Job, Registry, StreamEnv, WatermarkStrategy};
use weir_core::{Error, Result};
use weir_files::testing::{Kind, S3Server};
use weir_files::{Buckets, FileSink, OutputFileConfig, Parquet, RollingPolicy, Rows};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Reading {
    id: u64,
    sensor: String,
    value: f64,
    ok: bool,
    note: Option<String>,
}

impl std::fmt::Display for Reading {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&serde_json::to_string(self).map_err(|_| std::fmt::Error)?)
    }
}

fn reading(i: u64) -> Reading {
    Reading {
        id: i,
        sensor: format!("sensor-{}", i % 7),
        value: i as f64 * 0.5,
        ok: !i.is_multiple_of(3),
        note: i.is_multiple_of(5).then(|| "x".repeat((i % 17) as usize)),
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Args {
    path: String,
    options: Vec<(String, String)>,
    count: u64,
    rate: Option<f64>,
    format: String,
    buckets: String,
    part_size: Option<u64>,
    /// Bytes of padding in each record's note (to make files large).
    pad: usize,
}

impl Args {
    fn new(path: &str, format: &str, count: u64) -> Self {
        Args {
            path: path.into(),
            options: Vec::new(),
            count,
            rate: None,
            format: format.into(),
            buckets: "none".into(),
            part_size: None,
            pad: 0,
        }
    }
}

fn write_files(env: &mut StreamEnv, a: Args) -> Result<()> {
    let pad = a.pad;
    let mut records = env.datagen(Some(a.count), a.rate, move |i| {
        let mut r = reading(i);
        if pad > 0 {
            r.note = Some("p".repeat(pad));
        }
        r
    });
    let buckets = match a.buckets.as_str() {
        "event" => {
            // One record a minute of event time: an hourly bucket per 60 records.
            records = records.assign_timestamps_and_watermarks(
                WatermarkStrategy::for_monotonous_timestamps()
                    .with_timestamp_assigner(|r: &Reading, _| 1_796_688_000_000 + r.id as i64 * 60_000),
            );
            Buckets::event_time("'dt='yyyy-MM-dd/'hour='HH")?
        }
        "processing" => Buckets::default(),
        "sensor" => Buckets::custom(|r: &Reading, _| r.sensor.clone()),
        _ => Buckets::None,
    };
    let mut sink = match a.format.as_str() {
        "parquet" => FileSink::for_bulk_format(&a.path, Parquet::<Reading>::for_type()?)?
            .with_output_file_config(OutputFileConfig::new("part", ".parquet")),
        "json" => FileSink::for_row_format(&a.path, Rows::json_lines())?,
        _ => FileSink::for_row_format(&a.path, Rows::text())?,
    }
    .with_bucket_assigner(buckets);
    if let Some(size) = a.part_size {
        sink = sink.with_rolling_policy(RollingPolicy::default().with_max_part_size(size));
    }
    for (k, v) in &a.options {
        sink = sink.with_option(k, v);
    }
    records.add_sink(sink).uid("files");
    Ok(())
}
static WRITE_FILES: Job<Args> = Job::new("write-files", write_files);

fn driver(parallelism: u32, checkpoints: Option<&str>) -> Result<Driver> {
    let mut d = Driver::local(Registry::new().register(&WRITE_FILES)).with_parallelism(parallelism)?;
    if let Some(every) = checkpoints {
        d.set("execution.checkpointing.interval", every)?;
    }
    Ok(d)
}

/// The records in a part file.
fn decode(name: &str, bytes: Vec<u8>) -> Vec<Reading> {
    if name.ends_with(".parquet") {
        return weir_files::testing::read_parquet(name, bytes);
    }
    let text = String::from_utf8(bytes).unwrap_or_else(|e| panic!("{name} is not UTF-8: {e}"));
    assert!(text.is_empty() || text.ends_with('\n'), "{name} ends in the middle of a line");
    text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{name}: bad line {l:?}: {e}"))).collect()
}

/// Every visible file under `dir` (relative paths, sorted), skipping hidden ones.
fn local_files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    fn walk(dir: &Path, base: &Path, out: &mut Vec<(String, Vec<u8>)>) {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, base, out);
            } else if let Ok(rel) = p.strip_prefix(base) {
                let bytes = std::fs::read(&p).unwrap_or_default();
                out.push((rel.display().to_string(), bytes));
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

fn hidden(files: &[(String, Vec<u8>)]) -> Vec<String> {
    files.iter().filter(|(n, _)| n.split('/').any(|c| c.starts_with('.'))).map(|(n, _)| n.clone()).collect()
}

fn s3_files(s3: &S3Server, prefix: &str) -> Vec<(String, Vec<u8>)> {
    let listed = s3.list(prefix).unwrap_or_else(|e| panic!("cannot list the bucket: {e}"));
    listed.into_iter().map(|(k, _)| (k.clone(), s3.get(&k))).collect()
}

/// Every record of `files`, sorted by id, and a check of the part files' names.
fn records_of(files: &[(String, Vec<u8>)]) -> Vec<Reading> {
    let mut all = Vec::new();
    for (name, bytes) in files {
        let base = name.rsplit('/').next().unwrap_or_default();
        let parts: Vec<&str> = base.trim_end_matches(".parquet").split('-').collect();
        // part-<uuid (5 groups)>-<subtask>-<counter>
        assert!(parts.len() == 8 && parts[0] == "part", "a part file's name: {name}");
        assert!(parts[6].parse::<u32>().is_ok() && parts[7].parse::<u64>().is_ok(), "a part file's name: {name}");
        all.extend(decode(name, bytes.clone()));
    }
    all.sort_by_key(|r| r.id);
    all
}

fn expected(count: u64) -> Vec<Reading> {
    (0..count).map(reading).collect()
}

#[test]
fn rows_and_parquet_on_a_local_directory_every_record_once_in_its_bucket() -> Result<()> {
    let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", "/tmp", e))?;
    for (format, buckets) in [("json", "event"), ("text", "sensor"), ("parquet", "none"), ("parquet", "event")] {
        let out = dir.path().join(format!("{format}-{buckets}"));
        let mut a = Args::new(&out.display().to_string(), format, 3000);
        a.buckets = buckets.into();
        a.rate = Some(20_000.0);
        driver(2, Some("50ms"))?.execute(&WRITE_FILES, a)?;
        let files = local_files(&out);
        assert!(hidden(&files).is_empty(), "{format}: hidden files left: {:?}", hidden(&files));
        assert_eq!(records_of(&files), expected(3000), "{format}/{buckets}: every record once");
        // Checkpoints every 50 ms over ~150 ms of input roll files at each one.
        assert!(files.len() > 2, "{format}: {} files", files.len());
        for (name, bytes) in &files {
            let dirname = name.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
            for r in decode(name, bytes.clone()) {
                let want = match buckets {
                    "event" => {
                        let t = 1_796_688_000_000 + r.id as i64 * 60_000;
                        weir_files::DatePattern::parse("'dt='yyyy-MM-dd/'hour='HH")?.format(t)
                    }
                    "sensor" => r.sensor.clone(),
                    _ => String::new(),
                };
                assert_eq!(dirname, want, "record {} in {name}", r.id);
            }
        }
    }
    Ok(())
}

#[test]
fn part_files_roll_on_size_and_without_checkpoints_commit_as_they_close() -> Result<()> {
    let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", "/tmp", e))?;
    let out = dir.path().join("sized");
    let mut a = Args::new(&out.display().to_string(), "json", 5000);
    a.part_size = Some(16 << 10);
    driver(1, None)?.execute(&WRITE_FILES, a)?;
    let files = local_files(&out);
    assert!(hidden(&files).is_empty(), "{:?}", hidden(&files));
    assert_eq!(records_of(&files), expected(5000));
    let sizes: Vec<usize> = files.iter().map(|(_, b)| b.len()).collect();
    // ~80 bytes a record: about 25 files, each closed at the first record past 16 KiB.
    assert!(files.len() >= 15, "{} files: {sizes:?}", files.len());
    assert!(sizes.iter().all(|s| *s < (16 << 10) + 200), "{sizes:?}");
    Ok(())
}

/// Runs an endless job with checkpoints, watches what a reader sees while it runs (only whole,
/// committed files, never fewer records than before), cancels it, then restores the last
/// checkpoint and lets it finish: every record exactly once.
fn cancel_and_restore(
    path: &str,
    options: Vec<(String, String)>,
    format: &str,
    seen: impl Fn() -> Vec<(String, Vec<u8>)>,
) -> Result<()> {
    let cp = tempfile::tempdir().map_err(|e| Error::io("tempdir", "/tmp", e))?;
    let count = 40_000;
    let mut a = Args::new(path, format, count);
    a.options = options;
    a.rate = Some(8_000.0);
    let settings = |d: &mut Driver| -> Result<()> {
        d.set("execution.checkpointing.dir", &cp.path().display().to_string())?;
        d.set("execution.checkpointing.num-retained", "100")?;
        Ok(())
    };
    let mut d = driver(2, Some("200ms"))?;
    settings(&mut d)?;
    let job = d.execute_async(&WRITE_FILES, a.clone())?;
    let mut last = 0;
    let start = std::time::Instant::now();
    while start.elapsed() < Duration::from_millis(2500) {
        let files = seen();
        assert!(hidden(&files).is_empty(), "in-progress files visible: {:?}", hidden(&files));
        let n = records_of(&files).len();
        assert!(n >= last, "visible records went from {last} to {n}");
        last = n;
        std::thread::sleep(Duration::from_millis(150));
    }
    assert!(last > 0 && last < count as usize, "a reader saw {last} records while the job ran");
    let stats = job.checkpoint_stats().ok_or_else(|| Error::internal("no checkpoint statistics"))?;
    assert!(stats.completed >= 2, "{stats:?}");
    job.cancel()?;
    let _ = job.wait();
    let job_dir = cp.path().join(job.job_id().to_string());
    let latest = std::fs::read_dir(&job_dir)
        .map_err(|e| Error::io("list", &job_dir, e))?
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().strip_prefix("chk-").and_then(|n| n.parse::<u64>().ok()))
        .max()
        .ok_or_else(|| Error::internal("no retained checkpoint"))?;
    let mut d = driver(2, Some("200ms"))?;
    settings(&mut d)?;
    d.set("execution.savepoint.path", &job_dir.join(format!("chk-{latest}")).display().to_string())?;
    d.execute(&WRITE_FILES, a)?;
    let files = seen();
    assert!(hidden(&files).is_empty(), "{:?}", hidden(&files));
    let got = records_of(&files);
    assert_eq!(got.len(), count as usize, "every record once after the restore");
    assert_eq!(got, expected(count));
    Ok(())
}

#[test]
fn a_local_directory_shows_only_committed_files_and_a_restore_commits_the_rest() -> Result<()> {
    let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", "/tmp", e))?;
    let out = dir.path().join("out");
    let path = out.display().to_string();
    // Hidden in-progress files are what a reader must not see: filter them out of the listing.
    let seen = || local_files(&out).into_iter().filter(|(n, _)| !n.split('/').any(|c| c.starts_with('.'))).collect();
    cancel_and_restore(&path, Vec::new(), "json", seen)?;
    Ok(())
}

fn s3_roundtrip(kind: Kind) -> Result<()> {
    let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", "/tmp", e))?;
    let s3 = S3Server::start(kind, &dir.path().join("s3"), "lake");
    // Row and Parquet files, bucketed, with checkpoints.
    for format in ["json", "parquet"] {
        let mut a = Args::new(&format!("s3://lake/{format}"), format, 4000);
        a.options = s3.options();
        a.buckets = "event".into();
        a.rate = Some(20_000.0);
        driver(2, Some("50ms"))?.execute(&WRITE_FILES, a)?;
        let files = s3_files(&s3, format);
        assert_eq!(records_of(&files), expected(4000), "{kind:?} {format}");
        assert!(files.iter().all(|(k, _)| k.starts_with(&format!("{format}/dt=2026-12-"))), "{kind:?} {format}");
    }
    // A part file larger than a part: uploaded in 5 MiB parts while records come.
    let mut a = Args::new("s3://lake/big", "text", 1200);
    a.options = s3.options();
    a.pad = 10_000;
    driver(1, Some("10s"))?.execute(&WRITE_FILES, a)?;
    let files = s3_files(&s3, "big");
    assert_eq!(files.len(), 1, "{kind:?}: one part file");
    assert!(files[0].1.len() > 11 << 20, "{kind:?}: {} bytes", files[0].1.len());
    let mut want = expected(1200);
    for r in &mut want {
        r.note = Some("p".repeat(10_000));
    }
    assert_eq!(records_of(&files), want, "{kind:?}: the multipart file");
    // Only committed objects are ever listed; a restore commits the checkpoint's uploads.
    let seen = || s3_files(&s3, "restored");
    cancel_and_restore("s3://lake/restored", s3.options(), "parquet", seen)?;
    Ok(())
}

#[test]
fn s3_on_s3s_fs_multipart_uploads_completed_at_commit() -> Result<()> {
    s3_roundtrip(Kind::S3sFs)
}

#[test]
fn s3_on_seaweedfs_multipart_uploads_completed_at_commit() -> Result<()> {
    s3_roundtrip(Kind::SeaweedFs)
}

#[test]
fn bad_paths_buckets_and_credentials_are_clear_errors() -> Result<()> {
    let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", "/tmp", e))?;
    let s3 = S3Server::start(Kind::S3sFs, &dir.path().join("s3"), "lake");
    let run = |a: Args| driver(1, None).and_then(|d| d.execute(&WRITE_FILES, a)).err().map(|e| e.to_string());
    let e = run(Args::new("hdfs://nn/out", "json", 10)).unwrap_or_default();
    assert!(e.contains("'hdfs' is not supported"), "{e}");
    let mut a = Args::new("s3://nosuchbucket/out", "json", 10);
    a.options = s3.options();
    let e = run(a).unwrap_or_default();
    assert!(e.contains("s3://nosuchbucket/out") && e.contains("cannot list"), "{e}");
    let mut a = Args::new("s3://lake/out", "json", 10);
    a.options = s3
        .options()
        .into_iter()
        .map(|(k, v)| if k == "s3.secret-key" { (k, "wrong".into()) } else { (k, v) })
        .collect();
    let e = run(a).unwrap_or_default();
    assert!(e.contains("s3://lake/out"), "{e}");
    let mut a = Args::new("s3://lake/out", "json", 10);
    a.options = vec![("s3.upload.min.part.size".into(), "1000".into())];
    let e = run(a).unwrap_or_default();
    assert!(e.contains("at least 5242880"), "{e}");
    let mut a = Args::new("s3://lake/out", "json", 10);
    a.options = vec![("s3.acess-key".into(), "x".into())];
    let e = run(a).unwrap_or_default();
    assert!(e.contains("'s3.acess-key'"), "{e}");
    let file = dir.path().join("a-file");
    std::fs::write(&file, "x").map_err(|e| Error::io("write", &file, e))?;
    let e = run(Args::new(&file.display().to_string(), "json", 10)).unwrap_or_default();
    assert!(e.contains("give a directory"), "{e}");
    assert!(s3.list("").map(|l| l.is_empty()).unwrap_or(false), "nothing was written");
    Ok(())
}
