//! Command-line pieces shared by the `weir` executable and every user binary.

use std::process::ExitCode;

use clap::{Args, ValueEnum};
use weir_api::{Driver, Registry};
use weir_core::{Blame, Error, Result};

/// How to print a plan.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum PlanFormat {
    /// Flink-style plan JSON.
    #[default]
    Json,
    /// Graphviz DOT.
    Dot,
}

/// Arguments of `info`.
#[derive(Args, Debug, Clone)]
pub struct InfoArgs {
    /// The registered job to describe; without it, the registered jobs are listed.
    pub job: Option<String>,
    /// The job's arguments, as JSON.
    #[arg(long, default_value = "null")]
    pub args: String,
    /// Output format.
    #[arg(long, value_enum, default_value_t = PlanFormat::Json)]
    pub format: PlanFormat,
    /// Default parallelism.
    #[arg(short = 'p', long)]
    pub parallelism: Option<u32>,
    /// Configuration overrides, `key=value`.
    #[arg(short = 'D', value_name = "KEY=VALUE")]
    pub define: Vec<String>,
    /// A configuration file (YAML, Flink's key names); default `$WEIR_CONF_DIR/config.yaml`.
    #[arg(long, value_name = "FILE")]
    pub config: Option<std::path::PathBuf>,
}

/// Parses `--args` JSON.
pub fn parse_json_args(text: &str) -> Result<serde_json::Value> {
    serde_json::from_str(text).map_err(|e| {
        Error::Config(format!("--args is not valid JSON ({e}); pass the job's arguments as a JSON value, e.g. --args '{{\"input\": \"file.txt\"}}'"))
    })
}

/// Applies, in order, the configuration file (`--config`, else `$WEIR_CONF_DIR/config.yaml`),
/// `-D key=value` and `-p` to a driver.
pub fn configure(
    driver: &mut Driver,
    config: Option<&std::path::Path>,
    parallelism: Option<u32>,
    define: &[String],
) -> Result<()> {
    crate::remote::Settings::gather(config, parallelism, define)?.configure(driver)
}

/// `info`: the registered jobs, or one job's plan.
pub fn print_info(registry: &Registry, info: &InfoArgs) -> Result<()> {
    let Some(job) = &info.job else {
        println!("registered jobs:");
        for name in registry.names() {
            println!("  {name}");
        }
        return Ok(());
    };
    let mut driver = Driver::local(registry.clone());
    configure(&mut driver, info.config.as_deref(), info.parallelism, &info.define)?;
    let graph = driver.job_graph(job, &parse_json_args(&info.args)?)?;
    match info.format {
        PlanFormat::Json => {
            let mut json = graph.plan.to_json(job);
            json["args"] = graph.args.clone();
            println!("{}", serde_json::to_string_pretty(&json).map_err(|e| Error::internal(e.to_string()))?);
        }
        PlanFormat::Dot => print!("{}", graph.plan.to_dot(job)),
    }
    Ok(())
}

/// The exit code for an error: 2 for what the user must fix (input, arguments, configuration,
/// the job itself), 1 for everything else.
pub fn exit_code(e: &Error) -> ExitCode {
    match e.blame() {
        Blame::User => ExitCode::from(2),
        Blame::External | Blame::Internal => ExitCode::from(1),
    }
}

/// Installs the log subscriber: `WEIR_LOG` (e.g. `info`, `weir_runtime=debug`), default `warn`.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("WEIR_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

/// Progress lines for an attached run: at most one a second, only when the count moved.
#[derive(Debug)]
pub struct Progress {
    last_shown: std::time::Instant,
    last_read: u64,
}

impl Progress {
    /// Nothing shown yet.
    pub fn new() -> Progress {
        Progress { last_shown: std::time::Instant::now(), last_read: 0 }
    }

    /// Shows `read` (records the job's sources have read so far) if a second has passed since the
    /// last line and it changed.
    pub fn show(&mut self, job: &str, read: u64) {
        if self.last_shown.elapsed() >= std::time::Duration::from_secs(1) && read != self.last_read {
            eprintln!("Job {job} is RUNNING: {} records read", thousands(read));
            self.last_shown = std::time::Instant::now();
            self.last_read = read;
        }
    }
}

impl Default for Progress {
    fn default() -> Self {
        Progress::new()
    }
}

/// `1234567` as `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn thousands_are_grouped() {
        assert_eq!(super::thousands(0), "0");
        assert_eq!(super::thousands(999), "999");
        assert_eq!(super::thousands(1000), "1,000");
        assert_eq!(super::thousands(1234567), "1,234,567");
    }
}
