//! Job lifecycle on the local cluster: backpressure, cancellation, failures, status.

use std::time::{Duration, Instant};

use weir::connectors::{Output, Sink};
use weir::{Error, Job, JobStatus, Registry, Result, StreamEnv};
use weir_runtime::context::TaskEnv;

use crate::driver;

/// A sink that takes `delay` for every batch.
struct SlowSink {
    delay: Duration,
}

struct SlowWriter {
    delay: Duration,
}

impl Sink<u64> for SlowSink {
    fn name(&self) -> String {
        "Slow".into()
    }
    fn create_writer(&self, _env: &TaskEnv) -> Result<Box<dyn Output<u64>>> {
        Ok(Box::new(SlowWriter { delay: self.delay }))
    }
}

impl Output<u64> for SlowWriter {
    fn push(&mut self, batch: &mut weir_runtime::output::Batch<u64>) -> Result<()> {
        batch.clear();
        std::thread::sleep(self.delay);
        Ok(())
    }
    fn finish(&mut self) -> Result<()> {
        Ok(())
    }
}

fn unbounded_into_slow_sink(env: &mut StreamEnv, _: ()) -> Result<()> {
    env.datagen(None, None, |i| i)
        .set_parallelism(2)
        .map(|x| x + 1)
        .set_parallelism(2)
        .add_sink(SlowSink { delay: Duration::from_millis(2) })
        .set_parallelism(1);
    Ok(())
}
static SLOW: Job<()> = Job::new("slow", unbounded_into_slow_sink);

fn counts_of(client: &weir::JobClient) -> (u64, u64) {
    let c = client.counts();
    let produced = c.iter().find(|c| c.name.starts_with("Source")).map(|c| c.records_out).unwrap_or(0);
    let consumed = c.iter().find(|c| c.name.starts_with("Sink")).map(|c| c.records_in).unwrap_or(0);
    (produced, consumed)
}

#[test]
fn a_slow_sink_backpressures_an_unbounded_source_and_cancel_stops_it() -> Result<()> {
    let d = driver(Registry::new().register(&SLOW), 2);
    let (batch, capacity) = (d.config().batch_size as u64, d.config().channel_capacity as u64);
    let client = d.execute_async(&SLOW, ())?;
    // In flight at most: every channel full, plus one batch being sent per source and one being
    // written by the sink.
    let bound = 2 * (capacity + 1) * batch + batch;
    let start = Instant::now();
    let mut samples = 0;
    while start.elapsed() < Duration::from_millis(1500) {
        std::thread::sleep(Duration::from_millis(50));
        let (produced, consumed) = counts_of(&client);
        assert!(produced >= consumed, "{produced} < {consumed}");
        assert!(
            produced - consumed <= bound,
            "{} records in flight, more than the {bound} the channels can hold",
            produced - consumed
        );
        samples += 1;
    }
    let (produced, consumed) = counts_of(&client);
    assert!(samples >= 5 && consumed > 0, "the sink must make progress: {consumed}");
    // An unchecked source makes hundreds of millions of records a second; held back it made a few
    // thousand batches at most.
    assert!(produced < 10_000 * batch, "{produced} records produced");
    assert_eq!(client.status().ok(), Some(JobStatus::Running));
    client.cancel().expect("cancel");
    match client.wait_timeout(Duration::from_secs(20)) {
        Err(Error::Cancelled(_)) => {}
        Ok(None) => panic!("cancel did not stop the job within 20 s"),
        other => panic!("a cancelled job must end cancelled: {other:?}"),
    }
    assert_eq!(client.status().ok(), Some(JobStatus::Canceled));
    assert_eq!(client.live_tasks(), 0, "task threads left behind");
    Ok(())
}

#[test]
fn cancelling_a_running_unbounded_job_ends_every_task() -> Result<()> {
    fn generate(env: &mut StreamEnv, _: ()) -> Result<()> {
        env.datagen(None, Some(5000.0), |i| i).rebalance().map(|x| x * 2).discard();
        Ok(())
    }
    static GEN: Job<()> = Job::new("gen", generate);
    let client = driver(Registry::new().register(&GEN), 2).execute_async(&GEN, ())?;
    let start = Instant::now();
    while counts_of(&client).0 == 0 && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(client.status().ok(), Some(JobStatus::Running));
    assert!(client.live_tasks() > 0);
    client.cancel().expect("cancel");
    let waited = client.wait_timeout(Duration::from_secs(20));
    assert!(matches!(waited, Err(Error::Cancelled(_))), "{waited:?}");
    assert_eq!(client.status().ok(), Some(JobStatus::Canceled));
    assert_eq!(client.live_tasks(), 0, "task threads left behind");
    Ok(())
}

#[test]
fn a_bounded_job_goes_from_running_to_finished() -> Result<()> {
    fn slow_bounded(env: &mut StreamEnv, _: ()) -> Result<()> {
        env.datagen(Some(200), Some(1000.0), |i| i).collect("out");
        Ok(())
    }
    static SB: Job<()> = Job::new("slow-bounded", slow_bounded);
    let client = driver(Registry::new().register(&SB), 1).execute_async(&SB, ())?;
    assert_eq!(client.status().ok(), Some(JobStatus::Running));
    let result = client.wait()?;
    assert_eq!(client.status().ok(), Some(JobStatus::Finished));
    assert_eq!(result.0.status, JobStatus::Finished);
    assert_eq!(result.collected::<u64>("out")?, (0..200).collect::<Vec<_>>());
    assert_eq!(client.live_tasks(), 0);
    Ok(())
}

fn exploding(env: &mut StreamEnv, at: i64) -> Result<()> {
    env.from_sequence(0, 100_000)
        .rebalance()
        .map(move |x| {
            if x == at {
                panic!("cannot handle {x}");
            }
            x
        })
        .name("Exploder")
        .discard();
    Ok(())
}
static EXPLODING: Job<i64> = Job::new("exploding", exploding);

#[test]
fn a_panicking_function_fails_the_job_naming_operator_and_subtask() -> Result<()> {
    let d = driver(Registry::new().register(&EXPLODING), 4);
    let client = d.execute_async(&EXPLODING, 77_777)?;
    let err = client.wait().err().map(|e| e.to_string()).unwrap_or_default();
    assert!(err.contains("operator 'Exploder' (subtask "), "{err}");
    assert!(err.contains("/4) failed: user function panicked: cannot handle 77777"), "{err}");
    assert_eq!(client.status().ok(), Some(JobStatus::Failed));
    assert_eq!(client.live_tasks(), 0, "task threads left behind");
    // The process is fine: the next job runs.
    let ok = d.execute(&EXPLODING, -1)?;
    assert_eq!(ok.counts().iter().find(|c| c.name == "Exploder").map(|c| c.records_in), Some(100_001));
    Ok(())
}

fn failing_source(env: &mut StreamEnv, dir: String) -> Result<()> {
    // The input is checked before the job starts; deleting it afterwards makes a reader fail.
    env.read_text_file(dir).map(|l: String| l.len()).discard();
    Ok(())
}
static FAILING_SOURCE: Job<String> = Job::new("failing-source", failing_source);

#[test]
fn a_failing_source_fails_the_job_with_its_own_error() -> Result<()> {
    let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", "/tmp", e))?;
    let file = dir.path().join("in.txt");
    // Invalid UTF-8 halfway through: the reader fails mid-stream.
    let mut bytes = b"good line\n".repeat(1000);
    bytes.extend_from_slice(&[0xff, 0xfe, b'\n']);
    std::fs::write(&file, bytes).map_err(|e| Error::io("write", &file, e))?;
    let err = driver(Registry::new().register(&FAILING_SOURCE), 1)
        .execute(&FAILING_SOURCE, file.to_string_lossy().to_string())
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("Source: TextFiles") && err.contains("not UTF-8"), "{err}");
    Ok(())
}

/// A source whose readers open only once `gate` exists (as a reader that waits for its broker),
/// then produce 100 numbers each, one every 2 ms.
#[derive(Clone)]
struct Gated(std::path::PathBuf);

struct GatedReader {
    next: u64,
    end: u64,
}

impl weir::connectors::Source<u64> for Gated {
    fn name(&self) -> String {
        "Gated".into()
    }
    fn create_reader(
        &self,
        ctx: &weir::connectors::OperatorContext,
    ) -> Result<Box<dyn weir::connectors::SourceReader<u64>>> {
        let start = Instant::now();
        while !self.0.exists() {
            if start.elapsed() > Duration::from_secs(60) {
                return Err(Error::external(
                    format!("the test's gate file {}", self.0.display()),
                    "it did not appear within a minute",
                    false,
                ));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let first = u64::from(ctx.subtask) * 100;
        Ok(Box::new(GatedReader { next: first, end: first + 100 }))
    }
}

impl weir::connectors::SourceReader<u64> for GatedReader {
    fn poll(&mut self, out: &mut Vec<u64>, _: usize) -> Result<weir::connectors::SourceStatus> {
        if self.next == self.end {
            return Ok(weir::connectors::SourceStatus::Finished);
        }
        out.push(self.next);
        self.next += 1;
        Ok(weir::connectors::SourceStatus::Wait(Duration::from_millis(2)))
    }
}

fn gated(env: &mut StreamEnv, gate: String) -> Result<()> {
    env.add_source(Gated(gate.into())).map(|x| x * 2).collect("out");
    Ok(())
}
static GATED: Job<String> = Job::new("gated", gated);

#[test]
fn tasks_initialize_before_they_run_and_checkpoints_wait_for_them() -> Result<()> {
    let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", "/tmp", e))?;
    let gate = dir.path().join("gate");
    let mut d = driver(Registry::new().register(&GATED), 2);
    d.set("execution.checkpointing.interval", "10ms")?;
    d.set("execution.checkpointing.dir", &dir.path().join("cp").display().to_string())?;
    let client = d.execute_async(&GATED, gate.display().to_string())?;
    // The job runs, its two source tasks are initializing; at 10 ms intervals, 30 checkpoints
    // would have been due by now, and none was triggered.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(client.status().ok(), Some(JobStatus::Running));
    assert_eq!(client.initializing_tasks(), Some(2));
    let stats = client.checkpoint_stats().ok_or_else(|| Error::internal("no checkpoint statistics"))?;
    assert_eq!(stats.triggered, 0, "{stats:?}");
    std::fs::write(&gate, b"").map_err(|e| Error::io("cannot write", &gate, e))?;
    let result = client.wait_timeout(Duration::from_secs(60))?.ok_or_else(|| Error::internal("no end in 60 s"))?;
    assert_eq!(client.initializing_tasks(), Some(0));
    let stats = client.checkpoint_stats().ok_or_else(|| Error::internal("no checkpoint statistics"))?;
    assert!(stats.completed >= 1, "checkpoints are taken once every task runs: {stats:?}");
    let mut out = result.collected::<u64>("out")?;
    out.sort_unstable();
    assert_eq!(out, (0..200).map(|x| x * 2).collect::<Vec<_>>());
    Ok(())
}
