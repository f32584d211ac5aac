//! A program whose `main` runs its own tokio runtime and calls `execute` from inside it, as a
//! service embedding weir would: the job goes to the target its settings name (`-D key=value`
//! arguments; for a remote cluster with high availability, its leader is looked up in the
//! coordination service from inside that runtime).
//!
//!     cargo run --example in_tokio -- -D execution.target=remote -D rest.port=8081

use std::process::ExitCode;

use weir::{App, Error, Job, Result, StreamEnv};

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
struct Args {
    n: i64,
}

fn count(env: &mut StreamEnv, args: Args) -> Result<()> {
    env.from_sequence(0, args.n - 1)
        .map(|x| (x % 7, 1u64))
        .key_by(|t: &(i64, u64)| t.0)
        .sum(|t| &mut t.1)
        .collect("counts");
    Ok(())
}

static COUNT: Job<Args> = Job::new("count", count);

fn main() -> ExitCode {
    App::new("in-tokio").job(&COUNT).run(|driver, args| {
        let mut rest = args.iter();
        while let Some(a) = rest.next() {
            let setting = match a.as_str() {
                "-D" => rest.next().ok_or_else(|| Error::Config("-D needs key=value".into()))?,
                other => {
                    return Err(Error::Config(format!(
                        "unknown argument '{other}'; usage: in_tokio [-D key=value]..."
                    )));
                }
            };
            let (k, v) =
                setting.split_once('=').ok_or_else(|| Error::Config(format!("'{setting}' is not key=value")))?;
            driver.set(k, v)?;
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::internal(format!("cannot start a runtime: {e}")))?;
        let result = runtime.block_on(async { driver.execute(&COUNT, Args { n: 7_000 }) })?;
        let counts: Vec<(i64, u64)> = result.collected("counts")?;
        let total: u64 = counts.iter().filter(|(_, c)| *c == 1_000).count() as u64;
        println!("in-tokio: job {} FINISHED, {total} keys reached 1000", result.job_id());
        Ok(())
    })
}
