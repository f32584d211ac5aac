//! The `weir` executable.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use weir::{Driver, InfoArgs, Result, builtin, exit_code, print_info};

/// weir: Flink's architecture in a native binary.
#[derive(Parser)]
#[command(name = "weir", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs a built-in job on the embedded local cluster and waits for it.
    Run {
        /// The job to run (see `weir info`).
        job: String,
        /// The job's arguments, as JSON.
        #[arg(long, default_value = "null")]
        args: String,
        /// Default parallelism.
        #[arg(short = 'p', long)]
        parallelism: Option<u32>,
        /// Configuration overrides, `key=value`.
        #[arg(short = 'D', value_name = "KEY=VALUE")]
        define: Vec<String>,
        /// A configuration file (YAML, Flink's key names); default `$WEIR_CONF_DIR/config.yaml`.
        #[arg(long, value_name = "FILE")]
        config: Option<std::path::PathBuf>,
    },
    /// Prints a job's plan as JSON or Graphviz DOT, or lists the registered jobs.
    Info(InfoArgs),
}

fn run(
    job: &str,
    args: &str,
    config: Option<&std::path::Path>,
    parallelism: Option<u32>,
    define: &[String],
) -> Result<()> {
    let mut driver = Driver::local(builtin::registry());
    weir::cli_configure(&mut driver, config, parallelism, define)?;
    let client = driver.execute_named(job, &weir::parse_json_args(args)?)?;
    eprintln!("Job {} ({job}) submitted to the local cluster", client.job_id());
    let result = client.wait()?;
    eprintln!("Job {} FINISHED in {:.3} s", result.job_id(), result.net_runtime().as_secs_f64());
    for c in result.counts() {
        eprintln!("  {:<40} records in {:>12}", c.name, c.records_in.max(c.records_out));
    }
    Ok(())
}

fn main() -> ExitCode {
    weir::init_tracing();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { ExitCode::from(2) } else { ExitCode::SUCCESS };
        }
    };
    let result = match &cli.command {
        Command::Run { job, args, parallelism, define, config } => {
            run(job, args, config.as_deref(), *parallelism, define)
        }
        Command::Info(info) => print_info(&builtin::registry(), info),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("weir: error: {e}");
            exit_code(&e)
        }
    }
}
