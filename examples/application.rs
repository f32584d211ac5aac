//! An application of several jobs: what application mode (`weir run-application`) runs.
//!
//! ```text
//! cargo build --release --example application
//! weir run-application -t process target/release/examples/application -- sequential 3
//! ```
//!
//! `main` takes a mode:
//! - `sequential N`: N jobs one after the other (`execute`);
//! - `concurrent N`: N jobs side by side (`execute_async`), checked to run at once;
//! - `endless`: two jobs without end, side by side (cancel one and the application ends);
//! - `fail`: fails in `main` before any job;
//! - `cached PATH`: registers PATH as a cached file and counts its lines in a job.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use weir::{App, Error, Job, JobStatus, Result, StreamEnv};

/// Arguments of [`COUNT`].
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
struct CountArgs {
    /// Records to generate.
    n: u64,
    /// Records per second (absent: as fast as possible).
    rate: Option<f64>,
}

fn count(env: &mut StreamEnv, args: CountArgs) -> Result<()> {
    env.datagen(Some(args.n), args.rate, |i| i).map(|i| (0u8, i)).key_by(|t| t.0).sum(|t| &mut t.1).collect("sums");
    Ok(())
}

static COUNT: Job<CountArgs> = Job::new("count", count);

/// Arguments of [`LINES`].
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
struct LinesArgs {
    /// The file to register as the cached file `input`.
    file: PathBuf,
}

/// Counts the lines of the cached file `input` in every subtask of a task: the file is shipped
/// to wherever the task runs.
fn lines(env: &mut StreamEnv, args: LinesArgs) -> Result<()> {
    env.register_cached_file(&args.file, "input");
    env.from_sequence(1, 1)
        .map(|_| {
            let path = weir::cached_file("input").unwrap_or_default();
            std::fs::read_to_string(&path).map(|t| t.lines().count() as u64).unwrap_or(u64::MAX)
        })
        .collect("lines");
    Ok(())
}

static LINES: Job<LinesArgs> = Job::new("lines", lines);

fn number(args: &[String], i: usize) -> Result<u64> {
    args.get(i).and_then(|a| a.parse().ok()).ok_or_else(|| Error::Config("give a number of jobs".into()))
}

fn main() -> ExitCode {
    App::new("application").job(&COUNT).job(&LINES).run(|driver, args| {
        match args.first().map(String::as_str) {
            Some("sequential") => {
                for i in 0..number(args, 1)? {
                    let r = driver.execute(&COUNT, CountArgs { n: 1000 * (i + 1), rate: None })?;
                    let sums: Vec<(u8, u64)> = r.collected("sums")?;
                    let total = sums.iter().map(|s| s.1).max().unwrap_or(0);
                    println!("job {i} finished: sum {total}");
                }
            }
            Some("concurrent") => {
                let n = number(args, 1)?;
                let clients = (0..n)
                    .map(|_| driver.execute_async(&COUNT, CountArgs { n: 2000, rate: Some(2000.0) }))
                    .collect::<Result<Vec<_>>>()?;
                // They share the cluster and run at the same time.
                let start = Instant::now();
                loop {
                    let running = clients.iter().filter(|c| c.status().ok() == Some(JobStatus::Running)).count();
                    if running as u64 == n {
                        println!("{n} jobs running at once");
                        break;
                    }
                    if start.elapsed() > Duration::from_secs(20) {
                        return Err(Error::internal(format!("only {running} of {n} jobs ran at once")));
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                for c in clients {
                    c.wait()?;
                }
                println!("{n} jobs finished");
            }
            Some("endless") => {
                let a = driver.execute_async(&COUNT, CountArgs { n: u64::MAX, rate: Some(1000.0) })?;
                let b = driver.execute_async(&COUNT, CountArgs { n: u64::MAX, rate: Some(1000.0) })?;
                println!("started {} and {}", a.job_id(), b.job_id());
                a.wait()?;
                b.wait()?;
            }
            Some("fail") => return Err(Error::Config("the application refuses to start: no input given".into())),
            Some("cached") => {
                let file = args.get(1).ok_or_else(|| Error::Config("cached needs a file".into()))?;
                let r = driver.execute(&LINES, LinesArgs { file: PathBuf::from(file) })?;
                let lines: Vec<u64> = r.collected("lines")?;
                println!("lines: {lines:?}");
            }
            other => {
                return Err(Error::Config(format!(
                    "unknown mode {other:?}; use sequential N, concurrent N, endless, fail or cached PATH"
                )));
            }
        }
        Ok(())
    })
}
